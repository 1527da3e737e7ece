"""A text multiple-choice fixture in both accepted line styles (MMLU and HellaSwag)."""

import json
import pathlib

ROWS = [
    {
        "question": "What colour is the sky on a clear day?",
        "choices": ["Green", "Blue", "Red", "Black"],
        "answer": "B",
        "subject": "nature",
    },  # the first line: the one-shot example
    {
        "question": "How many legs does a cat have?",
        "choices": ["Two", "Three", "Four", "Six"],
        "answer": 2,
        "subject": "animals",
    },
    {
        "ctx": "She opened the umbrella because",
        "endings": ["it was raining.", "it was a cat.", "the moon is cheese.", "seven."],
        "label": "0",
        "activity_label": "weather",
    },
    {
        "question": "Which is a fruit?",
        "choices": ["Carrot", "Apple", "Potato", "Onion"],
        "answer": "B",
        "subject": "food",
    },
]


def build(root: pathlib.Path) -> pathlib.Path:
  root.mkdir(parents=True, exist_ok=True)
  path = root / "text_mc.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
  return path

"""Text multiple choice scored by likelihood (MMLU, HellaSwag style), few-shot.

Scored like the item-jsonl sets (eval/scoring.py): every option's log-likelihood as the
assistant's answer, length-normalised by `eval.normalize`; the most likely option wins
("lowest perplexity"). No generation, so nothing is ever unparsed.

Accepted jsonl lines (one question each):
  MMLU style       {"question", "choices": [...], "answer": int | "A".."D", "subject"?}
  HellaSwag style  {"ctx", "endings": [...], "label": int | "0".."3", "activity_label"?}

Prompt: `shots` solved examples (the first `shots` lines of the file, which are then
not scored) then the question, each as "Question: ...\\nAnswer: <option>"; the scored
continuation is the option text. The category is `subject` / `activity_label`.
"""

from __future__ import annotations

import json
import pathlib

from dsvl_jax.eval.benchmarks.base import LETTERS, BenchmarkFormatError
from dsvl_jax.eval.items import EvalItem

NAME = "textmc"


def _fields(d: dict, where: str) -> tuple[str, list[str], int, str]:
  if "question" in d and "choices" in d:
    question, options, answer = d["question"], d["choices"], d.get("answer")
    category = d.get("subject", "")
  elif "ctx" in d and "endings" in d:
    question, options, answer = d["ctx"], d["endings"], d.get("label")
    category = d.get("activity_label", "")
  else:
    raise BenchmarkFormatError(
        f"{where}: expected 'question' + 'choices' (MMLU) or "
        f"'ctx' + 'endings' (HellaSwag), got {sorted(d)}"
    )
  if isinstance(answer, str):
    answer = (
        LETTERS.index(answer)
        if answer in LETTERS[: len(options)]
        else (int(answer) if answer.isdigit() else -1)
    )
  if not isinstance(answer, int) or not 0 <= answer < len(options):
    raise BenchmarkFormatError(
        f"{where}: answer {answer!r} is not one of the {len(options)} options"
    )
  return str(question), [str(o) for o in options], answer, str(category)


def load(path: str | pathlib.Path, shots: int = 0) -> list[EvalItem]:
  """EvalItems for the likelihood scorer; the first `shots` lines become the prompt."""
  path = pathlib.Path(path)
  rows = []
  for n, line in enumerate(path.read_text().splitlines(), 1):
    if line.strip():
      try:
        rows.append((_fields(json.loads(line), f"{path}:{n}"), n))
      except json.JSONDecodeError as e:
        raise BenchmarkFormatError(f"{path}:{n}: not JSON ({e})") from e
  if shots >= len(rows):
    raise BenchmarkFormatError(f"{path}: {shots} few-shot examples leave no question")
  prefix = "".join(f"Question: {q}\nAnswer: {opts[a]}\n\n" for (q, opts, a, _), _ in rows[:shots])
  return [
      EvalItem(
          id=f"{path.stem}:{n}",
          question=f"{prefix}Question: {q}\nAnswer:",
          images=(),
          options=tuple(o.strip() for o in opts),
          answer=a,
          type=cat,
          source=f"{path}:{n}",
      )
      for (q, opts, a, cat), n in rows[shots:]
  ]

"""Multiple-choice helpers shared by MMBench and SEED-Bench: the prompt and the rule
that extracts an option letter from a generated answer.

Prompt (the VLMEvalKit multiple-choice layout, with the LLaVA/DeepSeek-VL letter
instruction; DeepSeek-VL's VLMEvalKit wrapper puts each image's placeholder before
the text with no separator):

  <image_placeholder>Hint: {hint}\\n          (only when the item has a hint)
  Question: {question}\\n
  Options:\\nA. {A}\\nB. {B}\\n...
  Answer with the option's letter from the given choices directly.

The Chinese MMBench set gets the same English instruction (as the reference harnesses
give it; the question, hint and options stay Chinese).

Extraction rule (`extract_choice`). The output is NFKC-normalised first, so full-width
letters and punctuation ('Ｂ', '：', '（') count as ASCII. Each of these proposes a
letter among the item's option letters (upper case only, so the article "a" is never
a letter):
  1. the output starts with a letter that is alone or followed by '.', ')' or ':',
     optionally opened by '(':  "B", "B.", "B)", "(B) red", "C: blue";
  2. an answer phrase: "Answer: X", "answer is X", "The answer is (X)", and the
     Chinese "答案：X" / "答案是X" / "答案为X";
  3. the whole output equals exactly one option's text, compared case-folded with
     whitespace collapsed and surrounding quotes, markdown marks and a final period
     removed.
The answer is the letter when all proposals agree on one; when they name two
different letters ("B. The answer is C"), or nothing is proposed ("A or B", "", free
text), it is None: unparsed, scored wrong.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

from dsvl_jax.eval.benchmarks.base import LETTERS, option_lines
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

INSTRUCTION = "Answer with the option's letter from the given choices directly."

# Marks a model puts around an answer that carry no content: whitespace, markdown
# emphasis/code, straight and curly quotes.
_EDGE = " \t\r\n*_`\"'\u201c\u201d\u2018\u2019"

# Rule 1: a leading letter, alone or closed by '.', ')' or ':'.
_LEADING = re.compile(r"\(?([A-Z])(?:[.):]|$)")
# Rule 2: an answer phrase; the letter must not run on into a word ("Answer: Cat").
_PHRASE = re.compile(
    r"(?:(?i:\banswer\b)\s*(?:(?i:is)\b)?\s*:?|答案\s*(?:是|为|:)?)" r"\s*\(?([A-Z])(?![A-Za-z0-9])"
)


def mcq_prompt(question: str, options: Sequence[str], hint: str = "", num_images: int = 1) -> str:
  """The user turn for a multiple-choice item (layout in the module docstring)."""
  hint_line = f"Hint: {hint}\n" if hint else ""
  return (
      IMAGE_TOKEN * num_images
      + hint_line
      + f"Question: {question}\n"
      + "Options:\n"
      + option_lines(options)
      + "\n"
      + INSTRUCTION
  )


def normalise(text: str) -> str:
  """Text compared for rule 3: NFKC, case-folded, whitespace collapsed, edge marks and
  a final period (ASCII or '。') removed."""
  text = " ".join(unicodedata.normalize("NFKC", text).split()).strip(_EDGE)
  return text.rstrip(".\u3002").strip(_EDGE).casefold()


def candidate_letters(output: str, options: Sequence[str]) -> set[str]:
  """Every letter some rule proposes for `output` (a set: more than one = ambiguous)."""
  valid = set(LETTERS[: len(options)])
  text = unicodedata.normalize("NFKC", output).strip(_EDGE)
  found: set[str] = set()
  leading = _LEADING.match(text)
  if leading:
    found.add(leading.group(1))
  found.update(m.group(1) for m in _PHRASE.finditer(text))
  found &= valid  # a letter past the last option ("E" of four) proposes nothing
  said = normalise(output)
  if said:
    found.update(LETTERS[i] for i, o in enumerate(options) if normalise(o) == said)
  return found


def extract_choice(output: str, options: Sequence[str]) -> str | None:
  """The option letter `output` answers, or None when none or several are plausible."""
  found = candidate_letters(output, options)
  return found.pop() if len(found) == 1 else None


def rotate(options: Sequence[str], answer: str, k: int) -> tuple[tuple[str, ...], str]:
  """Options shifted left by k (option k becomes A) and the answer letter that still
  names the same text: a CircularEval rotation."""
  n = len(options)
  rotated = tuple(options[(j + k) % n] for j in range(n))
  return rotated, LETTERS[(LETTERS.index(answer) - k) % n]


def item_prompt(item) -> str:
  """A BenchItem's multiple-choice prompt (a benchmark module's `prompt`)."""
  return mcq_prompt(item.question, item.options, item.hint, item.num_images)


def item_answer(item, output: str) -> str | None:
  """The letter of a BenchItem's answer (a benchmark module's `parse`)."""
  return extract_choice(output, item.options)

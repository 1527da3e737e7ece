"""Answer normalisation and accuracies (plain floats, JSON-serialisable).

Exact match compares `normalize_answer` of the generated text and of the answer:
Unicode NFKC, casefold, whitespace runs collapsed to one space, surrounding whitespace
stripped, then trailing punctuation (. , ; : ! ? and the CJK full stop) stripped, so
"Red." == " red " but "Red car" != "Red" and "A." != "A) Red".
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

TRAILING_PUNCTUATION = ".,;:!?。"


def normalize_answer(text: str) -> str:
  text = unicodedata.normalize("NFKC", text).casefold()
  text = re.sub(r"\s+", " ", text).strip()
  return text.rstrip(TRAILING_PUNCTUATION).rstrip()


def exact_match(prediction: str, answer: str) -> bool:
  return normalize_answer(prediction) == normalize_answer(answer)


def accuracy(correct: Sequence[bool]) -> float:
  return float(sum(map(bool, correct)) / len(correct)) if len(correct) else 0.0


def by_type(values: Sequence[bool], types: Sequence[str]) -> dict[str, float]:
  """Accuracy per non-empty type (items without a type count only in the total)."""
  groups: dict[str, list[bool]] = {}
  for v, t in zip(values, types):
    if t:
      groups.setdefault(t, []).append(v)
  return {t: accuracy(v) for t, v in sorted(groups.items())}


def chance_accuracy(num_options: Sequence[int]) -> float:
  """Expected accuracy of a uniform random choice: mean of 1 / options."""
  return float(sum(1.0 / n for n in num_options) / len(num_options)) if num_options else 0.0

"""What the text multiple-choice releases share (mmlu.py, hellaswag.py, textmc.py): how
their official rules score options (SCORING), the official metrics from summed option
log-likelihoods (`score`), and reading jsonl rows and their solved examples."""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np

from dsvl_jax.eval.benchmarks.base import BenchmarkFormatError, accuracy, read_jsonl
from dsvl_jax.eval.items import EvalItem

# How the official rules score options; replaces eval.normalize / score_eos for these
# sets. template "none": the prompt is BOS + plain text, no chat turn (hendrycks' and
# lm-eval's language-model scoring).
SCORING = {"normalize": "sum", "score_eos": False, "template": "none"}


def dev_rows(path: pathlib.Path, dev: str, shots: int) -> list[tuple[dict[str, Any], str]]:
  """The solved examples a jsonl set's prompts draw from: none for 0 shots, else the rows
  of `dev` (relative to the scored file's folder), which must not be the scored file."""
  if shots < 0:
    raise BenchmarkFormatError(f"{path}: shots must be >= 0, got {shots}")
  if shots == 0:
    return []
  if not dev:
    raise BenchmarkFormatError(
        f"{path}: shots={shots} needs solved examples from another file (every line of "
        f"this one is scored): pass dev=<jsonl of solved examples>"
    )
  dev_path = path.parent / dev  # an absolute `dev` replaces the folder
  if dev_path.resolve() == path.resolve():
    raise BenchmarkFormatError(f"{path}: dev is the scored file; its items cannot be shots")
  return read_jsonl(dev_path)


def score(
    items: Sequence[EvalItem], log_likelihoods: Sequence[Sequence[float]]
) -> dict[str, float]:
  """The official metrics from summed option log-likelihoods (no EOS); row i answers items[i].

  accuracy: argmax of the sums (first on ties, as np.argmax) is the answer, averaged over
  all items (MMLU's printed "Average accuracy" is this micro average; lm-eval's acc);
  accuracy_norm: argmax of sum / len(option) in characters (lm-eval's acc_norm, the
  option as the continuation is built from it, without the delimiter space);
  category/<name>: accuracy per item type (MMLU subject, HellaSwag activity_label).
  """
  if len(items) != len(log_likelihoods):
    raise ValueError(f"{len(items)} items but {len(log_likelihoods)} rows of log-likelihoods")
  right, right_norm = [], []
  for item, lls in zip(items, log_likelihoods):
    lls = np.asarray(lls, np.float64)
    if lls.shape != (len(item.options),):
      raise ValueError(f"{item.id}: {len(item.options)} options but log-likelihoods {lls.shape}")
    lengths = np.array([float(len(o)) for o in item.options])
    right.append(int(np.argmax(lls)) == item.answer)
    right_norm.append(int(np.argmax(lls / lengths)) == item.answer)
  out = {"accuracy": accuracy(right), "accuracy_norm": accuracy(right_norm)}
  for name in sorted({it.type for it in items if it.type}):
    out[f"category/{name}"] = accuracy([r for r, it in zip(right, items) if it.type == name])
  return out

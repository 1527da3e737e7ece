"""Text multiple choice scored by option likelihood: MMLU and HellaSwag, one name for both.

`load(path, shots=0, split="test", dev="", cells="text", crop_tokenizer="", crop_tokens=2048)`
reads either release and returns `EvalItem`s for the likelihood scorer (eval/likelihood.py):

  a folder       MMLU's CSV release (hendrycks/test data.tar: data/{dev,val,test}/
                 <subject>_<split>.csv): `mmlu.load`, every item of `split` scored, the
                 shots from each subject's dev CSV
  a jsonl file   one style per file, told by its first line: MMLU rows ("question",
                 "choices", "answer", "subject"; Hugging Face cais/mmlu) -> `mmlu.load`;
                 HellaSwag rows ("activity_label", "ctx_a", "ctx_b", "endings", "label";
                 Rowan/hellaswag) -> `hellaswag.load`

Prompts, options and the official rules: mmlu.py (hendrycks/test evaluate.py @4450500)
and hellaswag.py (lm-evaluation-harness hellaswag @4e7e0d47).

Few-shot examples never come from the scored file: every line / row of it is an item.
(This module used to take the file's first `shots` lines as the examples and leave them
unscored; official MMLU takes per-subject dev examples and scores every test question.)
For a jsonl file, `shots > 0` needs `dev`, a jsonl of solved examples in the same style
(a path relative to the scored file's folder, or absolute; the scored file itself is
refused): MMLU rows take the first `shots` dev rows of their own subject (file order, as
the CSV release's dev/ files), HellaSwag rows the first `shots` dev rows.

Scoring. Both official rules compare per-option *summed* log-likelihoods with no end of
sequence after a plain-text prompt: the likelihood sets apply SCORING (normalize "sum",
no EOS, no chat template) to these sets whatever eval.normalize / score_eos say, so
`mc_accuracy` is MMLU's accuracy (micro average over all test items,
as evaluate.py prints; `mc_accuracy_by_type` per subject) and HellaSwag's `acc`.
`score(items, log_likelihoods)` computes the official metrics from those sums: accuracy,
accuracy_norm (HellaSwag's acc_norm: sum / len(option) in characters; equals accuracy on
MMLU, whose options are one letter each), per category.
"""

from __future__ import annotations

import pathlib

from dsvl_jax.eval.benchmarks import base, hellaswag, mmlu, text_choice
from dsvl_jax.eval.benchmarks.base import BenchmarkFormatError
from dsvl_jax.eval.items import EvalItem

NAME = "textmc"
MAX_NEW_TOKENS = 1  # only for the optional greedy exact match (eval.generate); hendrycks'
# evaluate.py asks for max_tokens=1 (one letter) and lm-eval generates nothing for HellaSwag
SETUP = (
    "MMLU: prompt hendrycks/test evaluate.py gen_prompt/format_example @4450500, options ' A'..' D' "
    "by likelihood; HellaSwag: lm-evaluation-harness hellaswag utils.preprocess/process_docs "
    "@4e7e0d47, acc / acc_norm (lm_eval/api/task.py process_results)"
)
SCORING = text_choice.SCORING
score = text_choice.score  # the official metrics from the summed log-likelihoods


def load(
    path: str | pathlib.Path,
    shots: int = 0,
    split: str = "test",
    dev: str = "",
    cells: str = "text",
    crop_tokenizer: str = "",
    crop_tokens: int = 2048,
) -> list[EvalItem]:
  """Every item of an MMLU CSV folder or an MMLU / HellaSwag jsonl (module docstring)."""
  path = pathlib.Path(path)
  if path.is_dir():
    return mmlu.load(path, shots, split, dev, cells, crop_tokenizer, crop_tokens)
  first, where = base.read_jsonl(path)[0]
  if "endings" in first:
    if split != "test" or cells != "text" or crop_tokenizer:
      raise BenchmarkFormatError(
          f"{path}: split, cells and crop_tokenizer apply to MMLU; a HellaSwag file is "
          f"scored whole (split={split!r}, cells={cells!r}, crop_tokenizer={crop_tokenizer!r})"
      )
    return hellaswag.load(path, shots, dev)
  if "question" in first and "choices" in first:
    return mmlu.load(path, shots, split, dev, cells, crop_tokenizer, crop_tokens)
  raise BenchmarkFormatError(
      f"{where}: expected an MMLU row ('question', 'choices', 'answer') or a HellaSwag row "
      f"('activity_label', 'ctx_a', 'ctx_b', 'endings', 'label'), got {sorted(first)}"
  )

"""HellaSwag (Zellers et al. 2019) by option likelihood, as lm-evaluation-harness's
`hellaswag` task scores it (EleutherAI/lm-evaluation-harness @4e7e0d47; the task folder
last changed 314f7176): lm_eval/tasks/hellaswag/{utils.py, hellaswag.yaml} and the
multiple_choice branches of lm_eval/api/task.py.

Release layout: jsonl, one row of the Hugging Face dataset Rowan/hellaswag (the one
hellaswag.yaml reads; github.com/rowanz/hellaswag data/hellaswag_{train,val}.jsonl has the
same fields) a line: ind, activity_label, ctx_a, ctx_b, ctx, endings (4 strings),
source_id, split, split_type, label ("0".."3"; an int in rowanz's files; empty in the
unlabelled test split, which cannot be scored). lm-eval scores the validation split
(10,042 rows), 0-shot by default.
`load(path, shots=0, dev="")`: every row of `path`; shots from the jsonl `dev` (textmc.py).

Preprocessing (utils.py process_docs, reimplemented):
  query   = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
  choices = [preprocess(ending) for ending in endings]; gold = int(label)
  preprocess(text): strip; " [title]" -> ". "; delete every "[...]" (non-greedy); then
  "  " -> " " once (a triple space keeps a double). str.capitalize lower-cases the rest of
  ctx_b. A choice can begin or end with a space (an ending that starts with "[substeps]").
Prompt: the query (doc_to_text "{{query}}"); with shots, each solved example first as
  query + " " + its gold choice + "\\n\\n" (build_qa_turn with target_delimiter " ",
  fewshot_delimiter "\\n\\n"). The shots are the first `shots` dev rows; lm-eval draws
  them at random from the train split (seed 1234), which is not reproduced.
Options: the choices as preprocessed (not stripped: len(choice) is acc_norm's divisor);
  lm-eval scores the continuation " " + choice.
Metrics (task.py process_results): acc = argmax of the summed log-likelihoods == gold;
  acc_norm = argmax of log-likelihood / len(choice) in characters == gold; each the mean
  over rows (text_choice.score: accuracy, accuracy_norm). Category = activity_label.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any, Sequence

from dsvl_jax.eval.benchmarks import base, text_choice
from dsvl_jax.eval.benchmarks.base import BenchmarkFormatError
from dsvl_jax.eval.items import EvalItem

NAME = "hellaswag"
MAX_NEW_TOKENS = 32  # lm-eval generates nothing here; only eval.generate's exact match uses it
SETUP = (
    "prompt: lm-evaluation-harness hellaswag utils.preprocess/process_docs @4e7e0d47; "
    "metrics: acc (summed log-likelihood), acc_norm (/ len(choice)), lm_eval/api/task.py"
)
SCORING = text_choice.SCORING
score = text_choice.score  # the official metrics from the summed log-likelihoods
REQUIRED = ("activity_label", "ctx_a", "ctx_b", "endings", "label")


@dataclasses.dataclass(frozen=True)
class Doc:
  """A processed row: the query, the preprocessed choices, the gold index, the activity."""

  query: str
  choices: tuple[str, ...]
  gold: int
  activity: str


def preprocess(text: str) -> str:
  """utils.py preprocess: the WikiHow bracket artifacts out, as lm-eval does it."""
  text = text.strip().replace(" [title]", ". ")
  text = re.sub(r"\[.*?\]", "", text)
  return text.replace("  ", " ")


def query(row: dict[str, Any]) -> str:
  return preprocess(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())


def from_json(d: dict[str, Any], where: str) -> Doc:
  """A Rowan/hellaswag row -> Doc (BenchmarkFormatError naming `where` if malformed)."""
  missing = [k for k in REQUIRED if k not in d]
  if missing:
    raise BenchmarkFormatError(f"{where}: missing field(s) {missing} of a HellaSwag row")
  text = ("activity_label", "ctx_a", "ctx_b")
  if not all(isinstance(d[k], str) for k in text):
    raise BenchmarkFormatError(f"{where}: {list(text)} must be strings")
  endings = d["endings"]
  if (
      not isinstance(endings, list)
      or len(endings) < 2
      or not all(isinstance(e, str) for e in endings)
  ):
    raise BenchmarkFormatError(f"{where}: 'endings' must be a list of strings")
  label = d["label"]
  if isinstance(label, str) and label.isdigit():
    label = int(label)
  if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
    raise BenchmarkFormatError(
        f"{where}: label {d['label']!r} is not an index into the {len(endings)} endings "
        "(the test split is unlabelled)"
    )
  return Doc(query(d), tuple(preprocess(e) for e in endings), label, d["activity_label"])


def prompt(shots: Sequence[Doc], doc: Doc) -> str:
  """The solved shots ("query gold-choice\\n\\n" each), then the query."""
  return "".join(f"{s.query} {s.choices[s.gold]}\n\n" for s in shots) + doc.query


def load(path: str | pathlib.Path, shots: int = 0, dev: str = "") -> list[EvalItem]:
  """Every row of a HellaSwag jsonl as an EvalItem (module docstring)."""
  path = pathlib.Path(path)
  docs = [(from_json(d, where), where) for d, where in base.read_jsonl(path)]
  pool = [from_json(d, where) for d, where in text_choice.dev_rows(path, dev, shots)]
  if len(pool) < shots:
    raise BenchmarkFormatError(f"{path}: {shots} shots but dev has {len(pool)} rows")
  return [
      EvalItem(
          id=f"{path.stem}:{where.rsplit(':', 1)[1]}",
          question=prompt(pool[:shots], doc),
          images=(),
          options=doc.choices,
          answer=doc.gold,
          type=doc.activity,
          source=where,
      )
      for doc, where in docs
  ]

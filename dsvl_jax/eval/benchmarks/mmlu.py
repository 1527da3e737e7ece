"""MMLU (Hendrycks et al. 2021) by option likelihood, as hendrycks/test's evaluate.py
(@4450500, last changed 59834727) scores it: every test question of every subject,
5-shot from the subject's dev examples.

Release layout (data.tar, README.md of hendrycks/test): a `data` folder holding
`dev/<subject>_dev.csv` (5 rows per subject: the few-shot pool), `val/<subject>_val.csv`
and `test/<subject>_test.csv` (57 subjects); no header row; six columns: question, A, B,
C, D, answer letter. Subjects are the sorted names of `<split>/*_<split>.csv`.
`load(path, shots=0, split="test", ...)`: `path` is the data folder (or the folder above
it); `split` is "test" or "val"; the shots always come from dev/.

Also read: a jsonl of MMLU rows, {"question", "choices": [4], "answer": 0-3 or "A".."D",
"subject"} (Hugging Face cais/mmlu), with shots from the jsonl `dev` (textmc.py).

Prompt (evaluate.py gen_prompt, format_example; the protocol's strings, reproduced):
  "The following are multiple choice questions (with answers) about {format_subject}.\\n\\n"
  where format_subject(s) puts " " before every "_"-separated word, hence the double space
  ("... about  abstract algebra.\\n\\n"); then `shots` solved dev examples, each
  "{question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer: {letter}\\n\\n", the first
  `shots` rows of the subject's dev file in file order, the same for every question of
  the subject; then the question, ending "\\nAnswer:". A jsonl row without a subject has
  no header line (the CSV release always has one).
  Cropping: evaluate.py drops shots one at a time while the prompt exceeds 2048 GPT-2 BPE
  tokens (crop.py: decode(encode(prompt)[:2048]) != prompt). Given `crop_tokenizer` (a
  GPT-2 tokenizer.json) and `crop_tokens`, the same loop runs here, per question; without
  it no shot is dropped. At 0 shots the prompt is kept even if still too long (the
  official loop would go on to k = -1, all shots again, and never end).

Cells (`cells`): "text" (default) reads every cell as the string in the file (python's
csv, which parses quoting and embedded line breaks as pandas does). evaluate.py reads
with pandas.read_csv(header=None) and prints cells with "{}".format, so there a cell in
pandas' NA list ("NA", "N/A", "NaN", "null", "", and since pandas 2.0 "None":
pandas-dev/pandas#52493) prints as "nan", and a column whose cells are all numbers is
typed per file ("12" prints "12.0" when the same column holds "0.5"). That text depends
on the pandas version and is not what the question's author wrote, so the default keeps
the file's text; cells="pandas" reads with the installed pandas exactly as evaluate.py
does (pandas is not a dependency of this package).

Scoring: the options are the letters A..D; each is scored as the continuation " A" ..
" D" (prompts.continuation_ids). evaluate.py takes the argmax of the next-token log-probs
of " A".." D" (from the API's top-100; one absent gets -100); when each letter is one
token, the argmax of the summed letter log-likelihood without EOS (text_choice.SCORING) is
that argmax. Accuracy per subject (category = subject) and the micro average over all
test items (evaluate.py's "Average accuracy", np.mean of all subjects' answers).
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Any, Callable, Sequence

from dsvl_jax.eval.benchmarks import base, text_choice
from dsvl_jax.eval.benchmarks.base import BenchmarkFormatError
from dsvl_jax.eval.items import EvalItem

NAME = "mmlu"
MAX_NEW_TOKENS = 1  # evaluate.py: max_tokens=1 (used only for eval.generate's exact match)
SETUP = (
    "prompt: hendrycks/test evaluate.py gen_prompt/format_example @4450500 (dev shots, first k); "
    "answer: argmax log-likelihood of ' A'..' D' (evaluate.py eval); micro-averaged accuracy"
)
SCORING = text_choice.SCORING
score = text_choice.score  # the official metrics from the summed log-likelihoods
CHOICES = ("A", "B", "C", "D")  # evaluate.py `choices`
HEADER = "The following are multiple choice questions (with answers) about {}.\n\n"  # gen_prompt
SPLITS = ("test", "val")
CELLS = ("text", "pandas")


@dataclasses.dataclass(frozen=True)
class Question:
  """One row: the question, its four option texts, the answer letter."""

  question: str
  options: tuple[str, ...]
  answer: str


def format_subject(subject: str) -> str:
  """ "abstract_algebra" -> " abstract algebra" (a space before every word)."""
  return "".join(" " + word for word in subject.split("_"))


def header(subject: str) -> str:
  return HEADER.format(format_subject(subject)) if subject else ""


def format_example(q: Question, include_answer: bool = True) -> str:
  text = q.question + "".join(f"\n{c}. {o}" for c, o in zip(CHOICES, q.options)) + "\nAnswer:"
  return text + f" {q.answer}\n\n" if include_answer else text


def prompt(subject: str, shots: Sequence[Question], q: Question) -> str:
  """The header, the solved shots, then the question ending "Answer:"."""
  return header(subject) + "".join(map(format_example, shots)) + format_example(q, False)


def _question(cells: Sequence[str], where: str) -> Question:
  if len(cells) != 2 + len(CHOICES):
    raise BenchmarkFormatError(
        f"{where}: expected {2 + len(CHOICES)} cells (question, A, B, C, D, answer), "
        f"got {len(cells)}"
    )
  q = Question(cells[0], tuple(cells[1:-1]), cells[-1])
  if q.answer not in CHOICES:
    raise BenchmarkFormatError(f"{where}: answer {q.answer!r} is not one of {CHOICES}")
  return q


def read_csv(path: pathlib.Path, cells: str = "text") -> list[Question]:
  """The rows of one release CSV (no header), cells as `cells` says (module docstring)."""
  if not path.is_file():
    raise FileNotFoundError(f"{path}: not found")
  if cells == "text":
    with open(path, newline="", encoding="utf-8") as f:
      rows = [(n, r) for n, r in enumerate(csv.reader(f), 1) if r]  # pandas skips blank lines
  elif cells == "pandas":
    import pandas as pd  # pylint: disable=g-import-not-at-top  # cells="pandas" only

    frame = pd.read_csv(path, header=None)
    rows = [(n + 1, ["{}".format(c) for c in frame.iloc[n]]) for n in range(len(frame))]
  else:
    raise BenchmarkFormatError(f"cells must be one of {CELLS}, got {cells!r}")
  if not rows:
    raise BenchmarkFormatError(f"{path}: no rows")
  return [_question(r, f"{path} row {n}") for n, r in rows]


def from_json(d: dict[str, Any], where: str) -> tuple[str, Question]:
  """A cais/mmlu row -> (subject, Question)."""
  for key in ("question", "choices", "answer"):
    if key not in d:
      raise BenchmarkFormatError(f"{where}: missing field {key!r} of an MMLU row")
  options = d["choices"]
  if not isinstance(options, list) or len(options) != len(CHOICES):
    raise BenchmarkFormatError(f"{where}: 'choices' must be a list of {len(CHOICES)} options")
  answer = d["answer"]
  if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(CHOICES):
    answer = CHOICES[answer]
  if answer not in CHOICES:
    raise BenchmarkFormatError(f"{where}: answer {answer!r} is not 0-3 or one of {CHOICES}")
  subject = d.get("subject", "")
  return str(subject), Question(str(d["question"]), tuple(map(str, options)), answer)


def _fits(crop_tokenizer: str, crop_tokens: int) -> Callable[[str], bool]:
  """crop.py's test, `decode(encode(p)[:crop_tokens]) == p`, with the given tokenizer."""
  if not crop_tokenizer:
    return lambda p: True
  import tokenizers  # pylint: disable=g-import-not-at-top  # only with crop_tokenizer

  tok = tokenizers.Tokenizer.from_file(str(crop_tokenizer))
  return lambda p: tok.decode(tok.encode(p, add_special_tokens=False).ids[:crop_tokens]) == p


def _items(
    scored: Sequence[tuple[str, str, Question, str]],
    pool: dict[str, list[Question]],
    shots: int,
    fits: Callable[[str], bool],
) -> list[EvalItem]:
  """EvalItems of (id, subject, question, source), shots from pool[subject]."""
  items = []
  for item_id, subject, q, source in scored:
    dev = pool.get(subject, [])
    if len(dev) < shots:
      raise BenchmarkFormatError(
          f"{source}: {shots} shots but subject {subject!r} has {len(dev)} dev examples"
      )
    k = shots
    text = prompt(subject, dev[:k], q)
    while k > 0 and not fits(text):
      k -= 1
      text = prompt(subject, dev[:k], q)
    items.append(
        EvalItem(
            id=item_id,
            question=text,
            images=(),
            options=CHOICES,
            answer=CHOICES.index(q.answer),
            type=subject,
            source=source,
        )
    )
  return items


def _data_folder(path: pathlib.Path, split: str) -> pathlib.Path:
  if not (path / split).is_dir() and (path / "data" / split).is_dir():
    return path / "data"
  if not (path / split).is_dir():
    raise BenchmarkFormatError(f"{path}: no {split}/ folder (the MMLU release's data/{split})")
  return path


def load(
    path: str | pathlib.Path,
    shots: int = 0,
    split: str = "test",
    dev: str = "",
    cells: str = "text",
    crop_tokenizer: str = "",
    crop_tokens: int = 2048,
) -> list[EvalItem]:
  """Every question of `split` (a CSV release folder) or of a cais/mmlu jsonl file."""
  path = pathlib.Path(path)
  if shots < 0:
    raise BenchmarkFormatError(f"{path}: shots must be >= 0, got {shots}")
  fits = _fits(crop_tokenizer, crop_tokens)
  if not path.is_dir():  # a jsonl of cais/mmlu rows
    if split != "test" or cells != "text":
      raise BenchmarkFormatError(
          f"{path}: split and cells apply to the CSV release; a jsonl is scored whole "
          f"(split={split!r}, cells={cells!r})"
      )
    rows = [from_json(d, where) + (where,) for d, where in base.read_jsonl(path)]
    pool: dict[str, list[Question]] = {}
    for d, where in text_choice.dev_rows(path, dev, shots):
      subject, q = from_json(d, where)
      pool.setdefault(subject, []).append(q)
    scored = [(f"{path.stem}:{w.rsplit(':', 1)[1]}", s, q, w) for s, q, w in rows]
    return _items(scored, pool, shots, fits)

  if split not in SPLITS:
    raise BenchmarkFormatError(f"split must be one of {SPLITS}, got {split!r}")
  if dev:
    raise BenchmarkFormatError(f"{path}: the CSV release's shots come from dev/, not dev={dev!r}")
  data = _data_folder(path, split)
  suffix = f"_{split}.csv"
  subjects = sorted(p.name[: -len(suffix)] for p in (data / split).glob(f"*{suffix}"))
  if not subjects:
    raise BenchmarkFormatError(f"{data / split}: no <subject>{suffix} files")
  scored, pool = [], {}
  for subject in subjects:
    if shots:
      pool[subject] = read_csv(data / "dev" / f"{subject}_dev.csv", cells)
    file = data / split / f"{subject}{suffix}"
    for n, q in enumerate(read_csv(file, cells)):
      scored.append((f"{subject}:{n}", subject, q, f"{file} row {n + 1}"))
  return _items(scored, pool, shots, fits)

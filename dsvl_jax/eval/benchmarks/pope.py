"""POPE (Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language
Models"): yes/no questions "Is there a <object> in the image?" on COCO val2014 images.

Release format (github.com/AoiDragon/POPE, output/coco/): three question files, one
per negative-sampling setting, each one JSON object per line:

  coco_pope_random.json, coco_pope_popular.json, coco_pope_adversarial.json
  {"question_id": 0, "image": "COCO_val2014_000000548882.jpg", "image_id": 548882,
   "text": "Is there a dining table in the image?", "label": "yes"}

question_id restarts at 0 in every file, so an item's id is "<split>/<question_id>"
(split: the file name between "coco_pope_" and ".json", else the file's stem).

`load(path, image_dir=None)`: `path` is one question file, or a folder holding the
question files (every coco_pope_*.json in it). Images are the COCO val2014 files named by
"image", looked up in `image_dir`, or by default in the first existing folder named
IMAGE_DIR_NAME ("val2014") beside the question files or one level up (LLaVA's layout:
pope/coco/coco_pope_*.json with pope/val2014/).

Prompt: the image, the question as released, then " Please answer yes or no.": what
VLMEvalKit gives DeepSeek-VL (no custom prompt; its POPE questions end in that
sentence, which its Bunny wrapper, vlmeval/vlm/bunnyllama3.py @e8e78f05, rewrites for
pope). LLaVA-1.5 instead appends "Answer the question using a single word or phrase.".
Answers may run to MAX_NEW_TOKENS = 512 (VLMEvalKit's DeepSeek-VL wrapper).

Answer rule: POPE's evaluate.py (github.com/AoiDragon/POPE, evaluate.py at 08d957b,
as LLaVA's eval_pope.py scores it too): only the text before the first "." (the whole
text if there is none) is read; commas are deleted; it is split on single spaces, and
the answer is "no" when one of the words is exactly "No", "not" or "no" (case-sensitive:
"NO", "Not" do not count), else "yes", whatever the text says. The output is stripped
first, as the answer files the script reads hold stripped outputs. The summary's
`fallbacks` counts the answers that became "yes" without the word "yes" (any case) in
that first sentence: the official rule's silent default, reported, not changed.

Metrics (overall and, when the items span several splits, "<split>/<metric>" for each),
positive class = "yes":
  accuracy   correct / num_items (an unparsed answer is wrong)
  precision  TP / (TP + FP), over the parsed answers (an unparsed answer predicts nothing)
  recall     TP / (items labelled yes): an unparsed answer on a "yes" item is a miss
  f1         2 * precision * recall / (precision + recall)
  yes_ratio  parsed "yes" answers / parsed answers
  num_items, unparsed
A ratio whose denominator is 0 is 0.0. The overall numbers pool the items of all splits
(as VLMEvalKit's "Overall" does); the official script scores one file at a time.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Sequence

from dsvl_jax.eval.benchmarks.base import (
    BenchItem,
    BenchmarkFormatError,
    check_answers,
    exact_match,
    existing_image,
    image_loader,
)
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

NAME = "pope"
SPLITS = ("random", "popular", "adversarial")  # the order reports list them in
FILE_PATTERN = "coco_pope_*.json"
IMAGE_DIR_NAME = "val2014"
INSTRUCTION = "Please answer yes or no."
LABELS = ("yes", "no")
MAX_NEW_TOKENS = 512  # VLMEvalKit's DeepSeek-VL wrapper (vlmeval/vlm/deepseek_vl.py @e8e78f0)
SETUP = (
    "prompt: question + ' Please answer yes or no.' (as VLMEvalKit's POPE questions carry it: "
    "vlmeval/vlm/bunnyllama3.py @e8e78f05 rewrites that suffix for pope); "
    "parser: AoiDragon/POPE evaluate.py @08d957b"
)
_NO_WORDS = ("No", "not", "no")  # evaluate.py's list, case-sensitive
_YES = re.compile(r"\byes\b", re.IGNORECASE)


def split_name(file: pathlib.Path) -> str:
  """'random' for coco_pope_random.json; the stem for any other name."""
  stem = file.stem
  return stem[len("coco_pope_") :] if stem.startswith("coco_pope_") else stem


def question_files(path: pathlib.Path) -> list[pathlib.Path]:
  """The question file, or a folder's coco_pope_*.json in SPLITS order (others after)."""
  if path.is_file():
    return [path]
  if not path.is_dir():
    raise FileNotFoundError(f"POPE: no question file or folder at {path}")
  files = list(path.glob(FILE_PATTERN))
  if not files:
    raise FileNotFoundError(f"POPE: no {FILE_PATTERN} in {path}")
  order = {s: i for i, s in enumerate(SPLITS)}
  return sorted(files, key=lambda f: (order.get(split_name(f), len(SPLITS)), f.name))


def default_image_dir(question_dir: pathlib.Path) -> pathlib.Path:
  """val2014/ beside the question files, else one level up; the first if neither."""
  candidates = [question_dir / IMAGE_DIR_NAME, question_dir.parent / IMAGE_DIR_NAME]
  return next((c for c in candidates if c.is_dir()), candidates[0])


def parse_line(line: str, where: str) -> dict[str, Any]:
  """One question line, checked; `where` ("file:line") goes into any error."""
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise BenchmarkFormatError(f"{where}: not a JSON object ({e.msg})") from None
  if not isinstance(row, dict):
    raise BenchmarkFormatError(f"{where}: not a JSON object")
  for key, kind in (("question_id", (int, str)), ("image", str), ("text", str), ("label", str)):
    if key not in row:
      raise BenchmarkFormatError(f"{where}: missing {key!r}")
    if not isinstance(row[key], kind) or isinstance(row[key], bool):
      raise BenchmarkFormatError(f"{where}: {key!r} has the wrong type ({row[key]!r})")
  if row["label"] not in LABELS:
    raise BenchmarkFormatError(f"{where}: label {row['label']!r} is not 'yes' or 'no'")
  return row


def load_file(file: pathlib.Path, image_dir: pathlib.Path) -> list[BenchItem]:
  """The items of one question file (blank lines skipped), images checked to exist."""
  split = split_name(file)
  items, seen = [], set()
  for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    where = f"{file}:{n}"
    row = parse_line(line, where)
    item_id = f"{split}/{row['question_id']}"
    if item_id in seen:
      raise BenchmarkFormatError(f"{where}: question_id {row['question_id']!r} repeats")
    seen.add(item_id)
    image = existing_image(image_dir / row["image"], where)
    items.append(
        BenchItem(
            id=item_id,
            question=row["text"],
            options=(),
            answer=row["label"],
            load_images=image_loader(image),
            num_images=1,
            category=split,
            extra={"question_id": row["question_id"], "image": row["image"]},
        )
    )
  return items


def load(path: str | pathlib.Path, image_dir: str | pathlib.Path | None = None) -> list[BenchItem]:
  """Every question of the file (or of each coco_pope_*.json in the folder)."""
  path = pathlib.Path(path)
  files = question_files(path)
  images = pathlib.Path(image_dir) if image_dir is not None else default_image_dir(files[0].parent)
  if not images.is_dir():
    raise FileNotFoundError(f"POPE: image folder {images} not found (pass image_dir)")
  return [item for f in files for item in load_file(f, images)]


def prompt(item: BenchItem) -> str:
  return f"{IMAGE_TOKEN}{item.question} {INSTRUCTION}"


def first_sentence(output: str) -> str:
  """evaluate.py's cut: the text before the first '.' (all of it without one)."""
  return output.strip().split(".", 1)[0]


def extract(output: str) -> str:
  """'no' / 'yes' for a raw output (the official rule, module docstring)."""
  words = first_sentence(output).replace(",", "").split(" ")
  return "no" if any(w in _NO_WORDS for w in words) else "yes"


def fallback(item: BenchItem, output: str) -> bool:
  """Whether the official rule said "yes" to an output that does not say yes (the
  harness reports the count as `fallbacks`)."""
  del item
  return extract(output) == "yes" and not _YES.search(first_sentence(output))


def parse(item: BenchItem, output: str) -> str:
  del item  # the rule does not depend on the question
  return extract(output)


is_correct = exact_match


def _ratio(num: int, den: int) -> float:
  return float(num / den) if den else 0.0


def confusion(labels: Sequence[str], answers: Sequence[str | None]) -> dict[str, int]:
  """TP/FP/TN/FN over the parsed answers, plus the unparsed count by label."""
  c = dict(tp=0, fp=0, tn=0, fn=0, unparsed_yes=0, unparsed_no=0)
  for label, answer in zip(labels, answers, strict=True):
    if answer is None:
      c[f"unparsed_{label}"] += 1
    elif answer == "yes":
      c["tp" if label == "yes" else "fp"] += 1
    else:
      c["fn" if label == "yes" else "tn"] += 1
  return c


def metrics(c: dict[str, int]) -> dict[str, float]:
  """The reported numbers from `confusion` counts (conventions in the docstring)."""
  parsed = c["tp"] + c["fp"] + c["tn"] + c["fn"]
  total = parsed + c["unparsed_yes"] + c["unparsed_no"]
  precision = _ratio(c["tp"], c["tp"] + c["fp"])
  recall = _ratio(c["tp"], c["tp"] + c["fn"] + c["unparsed_yes"])
  f1 = (2 * precision * recall / (precision + recall)) if precision + recall else 0.0
  return {
      "accuracy": _ratio(c["tp"] + c["tn"], total),
      "precision": precision,
      "recall": recall,
      "f1": float(f1),
      "yes_ratio": _ratio(c["tp"] + c["fp"], parsed),
      "num_items": float(total),
      "unparsed": float(total - parsed),
  }


def score(items: Sequence[BenchItem], parsed: Sequence[str | None]) -> dict[str, float]:
  """Overall metrics, and "<split>/<metric>" per split when there are several."""
  check_answers(items, parsed)
  out = metrics(confusion([it.answer for it in items], parsed))
  splits = list(dict.fromkeys(it.category for it in items))
  if len(splits) > 1:
    for split in splits:
      pairs = [(it.answer, a) for it, a in zip(items, parsed) if it.category == split]
      labels, answers = zip(*pairs)
      for k, v in metrics(confusion(labels, answers)).items():
        out[f"{split}/{k}"] = v
  return out

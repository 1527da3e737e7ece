"""ScienceQA-IMG (Lu et al. 2022, "Learn to Explain"): the multiple-choice science
questions of ScienceQA that come with an image.

Release layout (github.com/lupantech/ScienceQA, data/scienceqa/, images from its
tools/download.sh: train.zip, val.zip, test.zip unzipped into images/):

  <root>/problems.json     {pid: {"question": str, "choices": [str, ...],
                                  "answer": 0-based index into choices, "hint": str
                                  ("" when none), "image": "image.png" or null,
                                  "split": "train" | "val" | "test", "subject":
                                  "natural science" | "social science" |
                                  "language science", "grade": "grade1".."grade12",
                                  "task", "topic", "category", "skill", "lecture",
                                  "solution"}}   (pids are numeric strings)
  <root>/pid_splits.json   optional: {"train": [pid, ...], "val", "test", "trainval",
                                      "minitrain", "minival", "minitest"}
  <root>/images/<problem's split>/<pid>/<problem's "image">   e.g. images/test/5/image.png

`load(path, split="test")`: `path` is <root> or its problems.json. The split's pids
come from pid_splits.json when it lists that split (in its order), else from the
problems whose "split" field equals it (in file order). Only problems with an image are
kept (the IMG subset: 2017 of the 4241 test questions). A mini split's images are in
the folder of the problem's own "split" field.

Prompt (LLaVA-1.5's ScienceQA-IMG prompt, the one its parser below pairs with; as
lmms-eval's scienceqa_img default writes it): the image, "Context: <hint>" when the hint
is not empty, the question, the options "A. <choice>" one per line, then "Answer with
the option's letter from the given choices directly." (what model_vqa_science.py's
--single-pred-prompt appends, haotian-liu/LLaVA @c121f04), joined by newlines. The
image placeholder goes first with no separator, as for DeepSeek-VL's other prompts.
MAX_NEW_TOKENS is model_vqa_science.py's max_new_tokens (1024, @c121f04).

Answer rule: LLaVA's llava/eval/eval_science_qa.py (haotian-liu/LLaVA
@c121f0432da27facab705978f83c4ada465e46fd, last changed ce1aa08d), on the stripped output (model_vqa_science.py strips what it
writes), with its default options A-E:
  1. the whole output is one of the letters A-E: that letter;
  2. else, output at least 3 characters, its first a letter A-E and characters 1-2
     exactly ". " ("B. blue"): the first character;
  3. else the regex "The answer is ([A-Z])." (the "." is any character, case-sensitive)
     must match exactly once: its letter;
  4. else FAILED: None (unparsed), scored wrong.
So "(B)", "Answer: C", "B." and "The answer is B" (nothing after the letter) are
FAILED. A letter beyond the problem's choices ("E" of four) is parsed but wrong (its
index is -1; the random fallback after that return is dead code).

Metrics: "accuracy" (correct / num_items: eval_science_qa.py's "IMG-Accuracy", the
problems whose prompt has an image; a FAILED answer stays in the denominator),
"category/<subject>" (ScienceQA's acc_natural/social/language, restricted to these
items), "num_items", "unparsed" (FAILED answers).
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Sequence

from dsvl_jax.eval.benchmarks.base import (
    LETTERS,
    BenchItem,
    BenchmarkFormatError,
    accuracy_metrics,
    exact_match,
    existing_image,
    image_loader,
    option_lines,
)
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

NAME = "scienceqa"
MAX_NEW_TOKENS = 1024  # llava/eval/model_vqa_science.py @c121f04 (greedy: --temperature 0)
SETUP = (
    "prompt: LLaVA-1.5 ScienceQA-IMG (Context/question/A. options + --single-pred-prompt, "
    "model_vqa_science.py @c121f04); parser: LLaVA eval_science_qa.py @c121f04"
)
INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPTIONS = ("A", "B", "C", "D", "E")  # eval_science_qa.py's --options default
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # eval_science_qa.py, as written there
PROBLEMS = "problems.json"
PID_SPLITS = "pid_splits.json"
IMAGES = "images"


def _root_and_file(path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  if path.is_dir():
    path = path / PROBLEMS
  if not path.is_file():
    raise FileNotFoundError(f"ScienceQA: {path} not found")
  return path.parent, path


def _read_json(file: pathlib.Path) -> Any:
  try:
    return json.loads(file.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise BenchmarkFormatError(f"{file}: not JSON ({e.msg}, line {e.lineno})") from None


def check_problem(p: Any, where: str) -> None:
  """Raise BenchmarkFormatError (naming `where`: file and pid) unless `p` has the
  fields this loader uses, with their release types."""
  if not isinstance(p, dict):
    raise BenchmarkFormatError(f"{where}: not a JSON object")
  for key, kind in (
      ("question", str),
      ("choices", list),
      ("answer", int),
      ("split", str),
      ("subject", str),
  ):
    if key not in p:
      raise BenchmarkFormatError(f"{where}: missing {key!r}")
    if not isinstance(p[key], kind) or isinstance(p[key], bool):
      raise BenchmarkFormatError(f"{where}: {key!r} has the wrong type ({p[key]!r})")
  choices = p["choices"]
  if len(choices) < 2 or len(choices) > len(LETTERS):
    raise BenchmarkFormatError(f"{where}: {len(choices)} choices")
  if not all(isinstance(c, str) for c in choices):
    raise BenchmarkFormatError(f"{where}: a choice is not a string")
  if not 0 <= p["answer"] < len(choices):
    raise BenchmarkFormatError(f"{where}: answer {p['answer']} outside the choices")
  if not isinstance(p.get("hint", ""), str):
    raise BenchmarkFormatError(f"{where}: 'hint' is not a string")
  if p.get("image") is not None and not isinstance(p["image"], str):
    raise BenchmarkFormatError(f"{where}: 'image' is neither a file name nor null")


def split_pids(
    root: pathlib.Path, problems: dict[str, Any], file: pathlib.Path, split: str
) -> list[str]:
  """The split's pids: pid_splits.json's list when it has the split, else by field."""
  splits_file = root / PID_SPLITS
  if splits_file.is_file():
    splits = _read_json(splits_file)
    if isinstance(splits, dict) and split in splits:
      pids = [str(pid) for pid in splits[split]]
      for pid in pids:
        if pid not in problems:
          raise BenchmarkFormatError(
              f"{splits_file}: {split!r} lists pid {pid}, which {file.name} lacks"
          )
      return pids
  pids = []
  for pid, p in problems.items():
    if not isinstance(p, dict) or "split" not in p:
      raise BenchmarkFormatError(f"{file}: pid {pid}: missing 'split'")
    if p["split"] == split:
      pids.append(pid)
  if not pids:
    raise ValueError(f"ScienceQA: no problem in split {split!r} ({file})")
  return pids


def load(path: str | pathlib.Path, split: str = "test") -> list[BenchItem]:
  """The split's questions that have an image, in pid_splits (or file) order."""
  root, file = _root_and_file(pathlib.Path(path))
  problems = _read_json(file)
  if not isinstance(problems, dict):
    raise BenchmarkFormatError(f"{file}: not an object of pid -> problem")
  items = []
  for pid in split_pids(root, problems, file, split):
    p, where = problems[pid], f"{file}: pid {pid}"
    check_problem(p, where)
    if not p.get("image"):
      continue  # text-only question: not in the IMG subset
    image = existing_image(root / IMAGES / p["split"] / pid / p["image"], where)
    items.append(
        BenchItem(
            id=pid,
            question=p["question"],
            options=tuple(p["choices"]),
            answer=LETTERS[p["answer"]],
            load_images=image_loader(image),
            num_images=1,
            category=p["subject"],
            hint=p.get("hint", ""),
            extra={"grade": p.get("grade", ""), "split": p["split"]},
        )
    )
  return items


def prompt(item: BenchItem) -> str:
  parts = [f"Context: {item.hint}"] if item.hint.strip() else []
  parts += [item.question, option_lines(item.options), INSTRUCTION]
  return IMAGE_TOKEN + "\n".join(parts)


def extract(output: str) -> str | None:
  """The letter eval_science_qa.py reads from an output (module docstring), or None
  for its FAILED."""
  text = output.strip()
  if text in OPTIONS:
    return text
  if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
    return text[0]
  found = _ANSWER_IS.findall(text)
  return found[0] if len(found) == 1 else None


def parse(item: BenchItem, output: str) -> str | None:
  del item  # the rule reads the output alone; is_correct checks the letter's range
  return extract(output)


def is_correct(item: BenchItem, parsed: Any) -> bool:
  """Right when the letter is among the item's choices and is the answer (a letter past
  the last choice is wrong, as get_pred_idx makes it -1)."""
  return parsed in tuple(LETTERS[: len(item.options)]) and exact_match(item, parsed)


def score(items: Sequence[BenchItem], parsed: Sequence[str | None]) -> dict[str, float]:
  """accuracy, category/<subject> accuracy, num_items, unparsed (None = wrong)."""
  return accuracy_metrics(items, parsed, count=float)

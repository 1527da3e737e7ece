"""SEED-Bench (v1), image part: evaluation dimensions 1-9.

Release layout (AILab-CVC/SEED-Bench on HuggingFace): `SEED-Bench.json` and the image
folder `SEED-Bench-image/` (unzipped SEED-Bench-image.zip) side by side. `load(path)`
takes either that folder or the JSON file itself; images are always read from the
`IMAGE_DIR` folder beside the JSON. The JSON:

  {"questions": [{"question_id": str, "question": str,
                  "choice_a" .. "choice_d": str, "answer": "A" | "B" | "C" | "D",
                  "data_id": image file name in SEED-Bench-image/ (video: a video path),
                  "data_type": "image" | "video", "question_type_id": int,
                  "segment": [start, end] (some video questions)}, ...],
   "question_type": {"Scene Understanding": 1, ..., "Procedure Understanding": 12}}

Only `data_type == "image"` questions are loaded (videos are dimensions 10-12). A
data_id is looked up as written, then with ".jpg" appended (the release notes call it
the image "file name"; names without the extension are accepted in case a copy
drops it). Every image must exist at load time.

Prompt, answer matching and judge: `choice.py`, as VLMEvalKit scores its SEEDBench_IMG
set (an ImageMCQDataset: the same build_prompt, without a Hint line since SEED
questions have none; can_infer v1 @aca64dbb, an unmatched answer predicted 'Z' and so
wrong; with an LLM judge, extract_answer_from_item's fallback; vanilla, not circular,
evaluation). SEED-Bench's own harness ranks option likelihoods instead; DeepSeek-VL's
SEED number comes from VLMEvalKit's generated letters.

Metrics: accuracy over all image questions (the leaderboard's "Image" number: correct /
total, not a mean of dimensions; VLMEvalKit's report_acc "Overall"), category/<dimension
name>, num_items, unparsed (answers that name no option: 'Z').
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

from dsvl_jax.eval.benchmarks import choice
from dsvl_jax.eval.benchmarks.base import (
    BenchItem,
    BenchmarkFormatError,
    accuracy_metrics,
    exact_match,
    image_loader,
)

NAME = "seedbench"
MAX_NEW_TOKENS = choice.MAX_NEW_TOKENS  # 512: VLMEvalKit's DeepSeek-VL wrapper
SETUP = (
    "prompt: VLMEvalKit ImageMCQDataset.build_prompt (SEEDBench_IMG) @aca64dbb; parser: "
    "VLMEvalKit can_infer v1 @aca64dbb (unmatched -> 'Z', wrong; judge fallback: "
    "extract_answer_from_item)"
)
JUDGE = "fallback"  # can_infer decides without one; a judge only matches what it cannot
JSON_NAME = "SEED-Bench.json"
IMAGE_DIR = "SEED-Bench-image"
CHOICE_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")
REQUIRED = (
    "question_id",
    "question",
    *CHOICE_KEYS,
    "answer",
    "data_id",
    "data_type",
    "question_type_id",
)
IMAGE_SUFFIXES = ("", ".jpg")  # tried in order after the data_id


def release_paths(path: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """(JSON file, image folder) for a release folder or its JSON file."""
  path = pathlib.Path(path)
  json_path = path / JSON_NAME if path.is_dir() else path
  return json_path, json_path.parent / IMAGE_DIR


def type_names(data: dict[str, Any], json_path: pathlib.Path) -> dict[int, str]:
  """question_type_id -> dimension name, from the "question_type" map."""
  types = data.get("question_type")
  if not isinstance(types, dict):
    raise BenchmarkFormatError(f'{json_path}: no "question_type" object')
  return {int(i): name for name, i in types.items()}


def image_path(image_dir: pathlib.Path, data_id: str, where: str) -> pathlib.Path:
  for suffix in IMAGE_SUFFIXES:
    candidate = image_dir / (data_id + suffix)
    if candidate.is_file():
      return candidate
  raise BenchmarkFormatError(f"{where}: image {data_id!r} not found in {image_dir}")


def load(path: str | pathlib.Path) -> list[BenchItem]:
  """The image questions of the release at `path`, in file order."""
  json_path, image_dir = release_paths(path)
  try:
    data = json.loads(json_path.read_text(encoding="utf-8"))
  except (OSError, json.JSONDecodeError) as e:
    raise BenchmarkFormatError(f"{json_path}: not a readable JSON file ({e})") from e
  if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
    raise BenchmarkFormatError(f'{json_path}: no "questions" list')
  names = type_names(data, json_path)
  items, seen = [], set()
  for n, q in enumerate(data["questions"]):
    where = f"{json_path}: questions[{n}]"
    missing = [k for k in REQUIRED if k not in q]
    if missing:
      raise BenchmarkFormatError(f"{where}: missing key(s) {', '.join(missing)}")
    if q["data_type"] != "image":
      continue
    qid = str(q["question_id"])
    where += f" (question_id {qid})"
    if qid in seen:
      raise BenchmarkFormatError(f"{where}: question_id appears twice")
    seen.add(qid)
    if q["answer"] not in ("A", "B", "C", "D"):
      raise BenchmarkFormatError(f"{where}: answer {q['answer']!r} is not A-D")
    if q["question_type_id"] not in names:
      raise BenchmarkFormatError(
          f"{where}: question_type_id {q['question_type_id']!r} is not in question_type"
      )
    items.append(
        BenchItem(
            id=qid,
            question=q["question"],
            options=tuple(str(q[k]).strip() for k in CHOICE_KEYS),
            answer=q["answer"],
            load_images=image_loader(image_path(image_dir, str(q["data_id"]), where)),
            num_images=1,
            category=names[q["question_type_id"]],
            extra={"data_id": q["data_id"], "question_type_id": q["question_type_id"]},
        )
    )
  return items


prompt = choice.item_prompt
parse = choice.item_answer
judge = choice.judge
is_correct = exact_match


def score(items: Sequence[BenchItem], parsed: Sequence[str | None]) -> dict[str, float]:
  """Accuracy overall and per dimension (parsed[i] answers items[i]); 'Z' is wrong."""
  metrics = accuracy_metrics(items, parsed)
  metrics["unparsed"] = sum(choice.unmatched(a) for a in parsed)
  return metrics

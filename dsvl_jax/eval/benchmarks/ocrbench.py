"""OCRBench: loader, prompt, and the official containment score.

Release (github.com/Yuliang-Liu/MultimodalOCR, OCRBench/): `OCRBench.json`, a list of
1000 objects

  {"dataset_name": "IIIT5K",                 source set; "HME100k" is scored specially
   "id": 2843,                               an int, unique only within its source set
   "image_path": "IIIT5K/test/918_1.png",   relative to the images folder
   "question": "what is written in the image?",
   "answers": "CENTRE" or ["...", "..."],   any one counts
   "type": "Regular Text Recognition"}      one of 10 task types (the categories)

and the images, distributed apart as `OCRBench_Images/` (the official scripts take
`--image_folder ./OCRBench_Images --OCRBench_file ./OCRBench/OCRBench.json`).

`load(path, image_root=None)`: `path` is the JSON file, or a folder holding it (directly
or in `OCRBench/`). Without `image_root` the images folder is the first of the JSON's
folder, `<JSON's folder>/OCRBench_Images` and `<JSON's folder>/../OCRBench_Images` that
holds the first item's image; every image must then exist there.

Prompt and length: the published DeepSeek-VL setup, VLMEvalKit
(open-compass/VLMEvalKit @e8e78f05f3080fe28154f2130321f17951c3be94): the wrapper
`vlmeval/vlm/deepseek_vl.py` has no custom prompt and generates greedily with
max_new_tokens=512 (MAX_NEW_TOKENS); the dataset class `vlmeval/dataset/image_vqa.py`
OCRBench inherits ImageBaseDataset.build_prompt (`vlmeval/dataset/image_base.py`): the
image, then the question as released, no instruction (the 2024 code, bbf8a3e
`vlmeval/utils/dataset.py` TSVDataset.build_prompt, gives a VQA set the same).

Score: the official script's rule (Yuliang-Liu/MultimodalOCR, OCRBench/scripts/LLaVA1_5.py
@f5cbec66817b643f732f11cdc7b3a550963b70dc, as in the other model scripts there and in
VLMEvalKit's OCRBench.evaluate): an item is right when one gold answer, normalised, is
contained in the normalised output. Normalisation for HME100k (handwritten math,
LaTeX; the official script keys it on dataset_name, VLMEvalKit on the type, the same
items in the release): strip, newlines to spaces, then every space removed, case kept;
for the rest: lowercase, strip, newlines to spaces. The official "Final Score" is the
count of right items (out of 1000), here "score"; the script prints right counts per
type and per group (GROUPS: "Text Recognition" sums the six recognition types), here
"group/<name>" counts and "category/<type>" the fraction right in that type (count =
fraction x items of the type).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

from dsvl_jax.eval.benchmarks.base import (
    BenchItem,
    BenchmarkFormatError,
    accuracy,
    check_answers,
    image_loader,
)
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

NAME = "ocrbench"
MAX_NEW_TOKENS = 512  # VLMEvalKit vlmeval/vlm/deepseek_vl.py default_kwargs @e8e78f05
SETUP = (
    "prompt: VLMEvalKit OCRBench (ImageBaseDataset.build_prompt: image + question) @e8e78f05; "
    "parser: OCRBench scripts/LLaVA1_5.py containment rule @f5cbec66"
)

JSON_NAME = "OCRBench.json"
IMAGES_DIR = "OCRBench_Images"
KEYS = ("dataset_name", "id", "image_path", "question", "answers", "type")
MATH_DATASET = "HME100k"  # the official rule keys the special case on the source set
RECOGNITION = (
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
)
# The five groups the official script prints (and VLMEvalKit reports), each the types it
# sums; their counts add up to the Final Score.
GROUPS = {
    "Text Recognition": RECOGNITION,
    "Scene Text-centric VQA": ("Scene Text-centric VQA",),
    "Doc-oriented VQA": ("Doc-oriented VQA",),
    "Key Information Extraction": ("Key Information Extraction",),
    "Handwritten Mathematical Expression Recognition": (
        "Handwritten Mathematical Expression Recognition",
    ),
}


def _json_file(path: pathlib.Path) -> pathlib.Path:
  if path.is_dir():
    for candidate in (path / JSON_NAME, path / "OCRBench" / JSON_NAME):
      if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"no {JSON_NAME} in {path} or {path / 'OCRBench'}")
  if not path.is_file():
    raise FileNotFoundError(f"no OCRBench JSON at {path}")
  return path


def _image_root(json_file: pathlib.Path, first_image: str) -> pathlib.Path:
  here = json_file.parent
  candidates = (here, here / IMAGES_DIR, here.parent / IMAGES_DIR)
  for root in candidates:
    if (root / first_image).is_file():
      return root
  raise FileNotFoundError(
      f"{json_file}: image {first_image!r} is in none of "
      f"{', '.join(map(str, candidates))}; pass image_root"
  )


def _check(record: Any, where: str) -> None:
  if not isinstance(record, dict):
    raise BenchmarkFormatError(f"{where}: not an object")
  for key in KEYS:
    if key not in record:
      raise BenchmarkFormatError(f"{where}: no key {key!r} (OCRBench keys: {', '.join(KEYS)})")
  answers = record["answers"]
  if not (
      isinstance(answers, str)
      or (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers))
  ):
    raise BenchmarkFormatError(
        f"{where}: answers must be a string or a non-empty list of strings, got {answers!r}"
    )


def load(path: str | pathlib.Path, image_root: str | pathlib.Path | None = None) -> list[BenchItem]:
  json_file = _json_file(pathlib.Path(path))
  records = json.loads(json_file.read_text(encoding="utf-8"))
  if not isinstance(records, list) or not records:
    raise BenchmarkFormatError(f"{json_file}: expected a non-empty JSON list")
  for i, record in enumerate(records):
    _check(record, f"{json_file} item {i}")
  root = (
      pathlib.Path(image_root)
      if image_root is not None
      else _image_root(json_file, records[0]["image_path"])
  )
  items, seen = [], set()
  for i, r in enumerate(records):
    image = root / r["image_path"]
    if not image.is_file():
      raise FileNotFoundError(f"{json_file} item {i}: no image {image}")
    # `id` repeats across source sets; "<set>/<id>" (with "#<n>" on a repeat) does not.
    item_id = f"{r['dataset_name']}/{r['id']}"
    if item_id in seen:
      item_id = f"{item_id}#{i}"
    seen.add(item_id)
    answers = (r["answers"],) if isinstance(r["answers"], str) else tuple(r["answers"])
    items.append(
        BenchItem(
            id=item_id,
            question=r["question"],
            options=(),
            answer=answers,
            load_images=image_loader(image),
            num_images=1,
            category=r["type"],
            extra={"dataset_name": r["dataset_name"], "image_path": r["image_path"]},
        )
    )
  return items


def prompt(item: BenchItem) -> str:
  """The image, then the question as released."""
  return IMAGE_TOKEN + item.question


def parse(item: BenchItem, output: str) -> str | None:
  """The output itself, stripped (the rule reads the whole answer); None if empty."""
  return output.strip() or None


def normalize(text: str, dataset_name: str) -> str:
  if dataset_name == MATH_DATASET:
    return text.strip().replace("\n", " ").replace(" ", "")
  return text.lower().strip().replace("\n", " ")


def match(answers: Sequence[str], output: str, dataset_name: str) -> bool:
  """Official rule: some normalised gold answer is a substring of the normalised
  output."""
  out = normalize(output, dataset_name)
  return any(normalize(a, dataset_name) in out for a in answers)


def is_correct(item: BenchItem, parsed: str | None) -> bool:
  return parsed is not None and match(item.answer, parsed, item.extra["dataset_name"])


def score(items: Sequence[BenchItem], parsed: Sequence[str | None]) -> dict[str, float | int]:
  """score (right answers: the official number out of 1000), accuracy, group/<name>
  (right answers per official group), category/<type>, num_items, unparsed."""
  check_answers(items, parsed)
  flags = [is_correct(it, p) for it, p in zip(items, parsed)]
  out: dict[str, float | int] = {"score": sum(flags), "accuracy": accuracy(flags)}
  for group, kinds in GROUPS.items():
    out[f"group/{group}"] = sum(f for it, f in zip(items, flags) if it.category in kinds)
  for kind in sorted({it.category for it in items}):
    out[f"category/{kind}"] = accuracy([f for it, f in zip(items, flags) if it.category == kind])
  out["num_items"] = len(items)
  out["unparsed"] = sum(p is None for p in parsed)
  return out

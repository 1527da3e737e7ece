"""MMBench (dev, English or Chinese) from its public TSV, scored by CircularEval.

The TSV (MMBench_DEV_EN.tsv / MMBench_DEV_CN.tsv as VLMEvalKit and OpenCompass
distribute them): UTF-8, tab-separated, a header row, fields that hold tabs, quotes or
newlines quoted csv-style ("..." with "" for a quote). Columns:

  index     int; the question's id
  question  str
  hint      str; empty (or 'nan') when the question has none
  A B C D   option texts; a question with n < 4 options leaves the last cells empty
  answer    the correct letter
  category  str; the fine ability reported per category
  image     base64 JPEG/PNG; or, when at most 64 characters, the index of another row
            whose image this row shares (how VLMEvalKit files store the circular
            copies without repeating the picture)
  optional: l2-category, split, source, comment (kept in `BenchItem.extra`)

CircularEval: a question with n options is asked n times, its options rotated by
k = 0..n-1 (the answer letter follows its text), and counts as right only when every
rotation is answered right; an unparsed rotation is wrong. Files that already carry
the rotations use VLMEvalKit's convention, index i + k * 1_000_000 for rotation k of
question i, and are grouped by index % 1_000_000; files without them get the
rotations generated here, with those same ids. `group` is the original index.

Prompt, answer matching and judge: `choice.py`, VLMEvalKit's rules (ImageMCQDataset's
prompt, can_infer v1 @aca64dbb, an unmatched rotation predicted 'Z' and so wrong; with an
LLM judge, extract_answer_from_item's fallback). VLMEvalKit scores every file whose
name holds "mmbench" circularly (image_mcq.py evaluate, mcq_circular_eval). The judge
is asked per rotation, also for a rotation of a question another rotation already
failed (VLMEvalKit stops asking there): more judge calls, the same circular scores.

Metrics: circular_accuracy (the official number), vanilla_accuracy (rotation 0 only,
i.e. each question asked once as released), category/<name> (circular), num_items
(questions), num_rotations, unparsed (rotations whose answer names no option: 'Z'),
language ("zh" for MMBench-CN, read from the questions).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import pathlib
from typing import Any, Sequence

from PIL import Image, UnidentifiedImageError

from dsvl_jax.eval.benchmarks import choice
from dsvl_jax.eval.benchmarks.base import (
    LETTERS,
    BenchItem,
    BenchmarkFormatError,
    accuracy,
    category_accuracy,
    check_answers,
    exact_match,
    image_loader,
)

NAME = "mmbench"
MAX_NEW_TOKENS = choice.MAX_NEW_TOKENS  # 512: VLMEvalKit's DeepSeek-VL wrapper
SETUP = (
    "prompt: VLMEvalKit ImageMCQDataset.build_prompt @aca64dbb; parser: VLMEvalKit can_infer v1 "
    "@aca64dbb (unmatched -> 'Z', wrong; judge fallback: extract_answer_from_item); CircularEval"
)
JUDGE = "fallback"  # can_infer decides without one; a judge only matches what it cannot
REQUIRED = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image")
OPTIONAL = ("l2-category", "split", "source", "comment")
CIRCULAR_STRIDE = 1_000_000  # index of rotation k = index + k * CIRCULAR_STRIDE
IMAGE_REF_MAX = 64  # image cells this short are another row's index, not base64
_FIELD_LIMIT = 1 << 30  # base64 images exceed csv's default 128 KiB field limit


def _absent(cell: str | None) -> bool:
  # pandas writes a missing value as an empty cell; 'nan' appears in re-exported files.
  return cell is None or cell.strip() == "" or cell.strip().lower() == "nan"


def read_rows(path: pathlib.Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
  """The header and (line number, {column: cell}) per record, with every row's width
  checked against the header."""
  old_limit = csv.field_size_limit(_FIELD_LIMIT)
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      reader = csv.reader(f, delimiter="\t")
      header = next(reader, None)
      if header is None:
        raise BenchmarkFormatError(f"{path}: empty file (no header row)")
      missing = [c for c in REQUIRED if c not in header]
      if missing:
        raise BenchmarkFormatError(
            f"{path}: header row: missing column(s) "
            f"{', '.join(missing)} (has {', '.join(header)})"
        )
      rows = []
      for n, row in enumerate(reader, start=1):
        if not row:
          continue
        if len(row) != len(header):
          raise BenchmarkFormatError(
              f"{path}: row {n} (line {reader.line_num}) has {len(row)} fields, the "
              f"header has {len(header)}"
          )
        rows.append((n, dict(zip(header, row))))
  finally:
    csv.field_size_limit(old_limit)
  return header, rows


def row_options(row: dict[str, str], letters: Sequence[str], where: str) -> tuple[str, ...]:
  """The option texts A.. up to the first empty cell; a filled cell after an empty one
  is a format error (options are contiguous)."""
  cells = [row[c] for c in letters]
  n = next((i for i, c in enumerate(cells) if _absent(c)), len(cells))
  if any(not _absent(c) for c in cells[n:]):
    raise BenchmarkFormatError(f"{where}: options are not contiguous: {dict(zip(letters, cells))}")
  if n < 2:
    raise BenchmarkFormatError(f"{where}: fewer than two options")
  return tuple(c.strip() for c in cells[:n])


def decode_image(cell: str, where: str) -> bytes:
  """The image file bytes of a base64 cell, checked to be an image PIL can open."""
  try:
    data = base64.b64decode("".join(cell.split()), validate=True)
    Image.open(io.BytesIO(data)).close()  # reads the header only
  except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
    raise BenchmarkFormatError(f"{where}: image is not a base64 image ({e})") from e
  return data


def image_source(indexed: dict[int, tuple[str, dict[str, str]]], index: int) -> int:
  """The index of the row whose image cell holds this row's base64: the row itself, or
  the row a short cell names."""
  where, row = indexed[index]
  cell = row["image"].strip()
  if len(cell) > IMAGE_REF_MAX:
    return index
  ref = int(cell) if cell.isdigit() else None
  if ref not in indexed or len(indexed[ref][1]["image"].strip()) <= IMAGE_REF_MAX:
    raise BenchmarkFormatError(
        f"{where}: image {cell!r} is neither base64 nor the index of a row with one"
    )
  return ref


def _extra(row: dict[str, str], index: int, rotation: int) -> dict[str, Any]:
  extra: dict[str, Any] = {"index": index, "rotation": rotation}
  for c in OPTIONAL:
    if c in row and not _absent(row[c]):
      extra[c.replace("-", "_")] = row[c]
  return extra


def load(path: str | pathlib.Path) -> list[BenchItem]:
  """Every rotation of every question in the TSV at `path` (a file): questions in file
  order, each followed by its rotations 1..n-1."""
  path = pathlib.Path(path)
  header, rows = read_rows(path)
  letters = [c for c in LETTERS if c in header]  # A-D, more if a file adds them
  indexed: dict[int, tuple[str, dict[str, str]]] = {}
  for n, row in rows:
    where = f"{path}: row {n}"
    try:
      index = int(row["index"])
    except ValueError:
      raise BenchmarkFormatError(f"{where}: index {row['index']!r} is not an int") from None
    if index in indexed:
      raise BenchmarkFormatError(f"{where}: index {index} appears twice")
    indexed[index] = (f"{where} (index {index})", row)
  has_copies = any(i >= CIRCULAR_STRIDE for i in indexed)

  decoded: dict[int, bytes] = {}  # by the index whose cell holds the base64
  items = []
  for index, (where, row) in indexed.items():
    options = row_options(row, letters, where)
    answer = row["answer"].strip()
    if answer not in tuple(LETTERS[: len(options)]):
      raise BenchmarkFormatError(
          f"{where}: answer {answer!r} is not one of its {len(options)} option letters"
      )
    source = image_source(indexed, index)
    if source not in decoded:
      decoded[source] = decode_image(indexed[source][1]["image"], indexed[source][0])
    base = dict(
        question=row["question"],
        load_images=image_loader(decoded[source]),
        num_images=1,
        category=row["category"].strip(),
        hint="" if _absent(row["hint"]) else row["hint"].strip(),
    )
    if has_copies:
      rotations = [(index // CIRCULAR_STRIDE, options, answer)]
      group = index % CIRCULAR_STRIDE
    else:
      rotations = [(k, *choice.rotate(options, answer, k)) for k in range(len(options))]
      group = index
    for k, opts, ans in rotations:
      item_index = group + k * CIRCULAR_STRIDE
      items.append(
          BenchItem(
              id=str(item_index),
              options=opts,
              answer=ans,
              group=str(group),
              extra=_extra(row, item_index, k),
              **base,
          )
      )
  # Rotations of a question side by side (files list copies after all originals), so a
  # prefix of the list holds whole questions.
  first = {}
  for position, item in enumerate(items):
    first.setdefault(item.group, position)
  return sorted(items, key=lambda it: (first[it.group], it.extra["rotation"]))


prompt = choice.item_prompt
parse = choice.item_answer
judge = choice.judge
is_correct = exact_match


def score(items: Sequence[BenchItem], parsed: Sequence[str | None]) -> dict[str, Any]:
  """CircularEval over the rotations in `items` (parsed[i] answers items[i]); `language`
  "zh" when most questions are Chinese (MMBench-CN), else "en"."""
  check_answers(items, parsed)
  right: dict[str, list[bool]] = {}
  category: dict[str, str] = {}
  vanilla = []
  for item, answer in zip(items, parsed):
    ok = exact_match(item, answer)
    right.setdefault(item.group, []).append(ok)
    category.setdefault(item.group, item.category)
    if item.extra.get("rotation", 0) == 0:
      vanilla.append(ok)
  passed = {g: all(flags) for g, flags in right.items()}
  chinese = sum(any("\u4e00" <= ch <= "\u9fff" for ch in item.question) for item in items)
  metrics: dict[str, Any] = {
      # MMBench-CN or MMBench (EN): reports put them in their own columns
      "language": "zh" if chinese * 2 > len(items) else "en",
      "circular_accuracy": accuracy(list(passed.values())),
      "vanilla_accuracy": accuracy(vanilla),
      "num_items": len(passed),
      "num_rotations": len(items),
      "unparsed": sum(choice.unmatched(a) for a in parsed),
  }
  metrics.update(category_accuracy([category[g] for g in passed], list(passed.values())))
  return metrics

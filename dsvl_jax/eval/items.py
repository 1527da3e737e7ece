"""Evaluation items: one multiple-choice question per jsonl line.

Schema (BUILD.md, "Evaluation"); image paths are relative to the jsonl's folder:

  {"id":       str or int, optional (default "<file name>:<line>"), unique in the file,
   "question": str; may hold one <image_placeholder> per image (with none, the images
               go first, as the chat CLI places them),
   "images":   [path, ...], optional (default none),
   "options":  [str, ...], at least two, distinct after stripping whitespace,
   "answer":   the correct option's text, or its 0-based index (an int),
   "type":     str, optional category for per-type accuracy (default "")}

Blank lines are skipped. A bad item raises `ItemError` naming the file and line.
Images are only checked to exist here; they are decoded batch by batch when scored.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

FIELDS = ("id", "question", "images", "options", "answer", "type")


class ItemError(ValueError):
  """An evaluation item that does not follow the schema (the message names file:line)."""


@dataclasses.dataclass(frozen=True)
class EvalItem:
  """A parsed item; `answer` is an index into `options` (all stripped)."""

  id: str
  question: str
  images: tuple[pathlib.Path, ...]
  options: tuple[str, ...]
  answer: int
  type: str
  source: str  # "file:line", for messages

  @property
  def answer_text(self) -> str:
    return self.options[self.answer]


def _string(d: dict, key: str, where: str, default: str | None = None) -> str:
  value = d.get(key, default)
  if not isinstance(value, str):
    raise ItemError(f"{where}: '{key}' must be a string, got {value!r}")
  return value


def parse_item(d: Any, base_dir: pathlib.Path, where: str) -> EvalItem:
  """One decoded JSON object -> EvalItem; `where` ("file:line") prefixes every error."""
  if not isinstance(d, dict):
    raise ItemError(f"{where}: an item must be a JSON object, got {type(d).__name__}")
  unknown = sorted(set(d) - set(FIELDS))
  if unknown:
    raise ItemError(f"{where}: unknown field(s) {unknown}; known: {list(FIELDS)}")
  for key in ("question", "options", "answer"):
    if key not in d:
      raise ItemError(f"{where}: missing field '{key}'")
  question = _string(d, "question", where)
  item_id = d.get("id", where.rsplit("/", 1)[-1])
  if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
    raise ItemError(f"{where}: 'id' must be a string or an int, got {item_id!r}")
  kind = _string(d, "type", where, default="")

  options = d["options"]
  if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
    raise ItemError(f"{where}: 'options' must be a list of strings")
  options = tuple(o.strip() for o in options)
  if len(options) < 2:
    raise ItemError(f"{where}: 'options' needs at least two options, got {len(options)}")
  if not all(options):
    raise ItemError(f"{where}: 'options' has an empty option")
  if len(set(options)) != len(options):
    raise ItemError(f"{where}: 'options' are not distinct: {list(options)}")

  answer = d["answer"]
  if isinstance(answer, bool) or not isinstance(answer, (str, int)):
    raise ItemError(f"{where}: 'answer' must be an option's text or its index, got {answer!r}")
  if isinstance(answer, int):
    if not 0 <= answer < len(options):
      raise ItemError(
          f"{where}: 'answer' index {answer} is out of range for {len(options)} options"
      )
  elif answer.strip() in options:
    answer = options.index(answer.strip())
  else:
    raise ItemError(f"{where}: 'answer' {answer!r} is not one of the options {list(options)}")

  images = d.get("images", [])
  if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
    raise ItemError(f"{where}: 'images' must be a list of path strings")
  paths = tuple(base_dir / p for p in images)
  for p in paths:
    if not p.is_file():
      raise ItemError(f"{where}: image file not found: {str(p)!r}")
  markers = question.count(IMAGE_TOKEN)
  if markers and markers != len(paths):
    raise ItemError(
        f"{where}: 'question' has {markers} {IMAGE_TOKEN} marker(s) but "
        f"{len(paths)} image(s) are listed"
    )
  return EvalItem(str(item_id), question, paths, options, answer, kind, where)


def load_items(path: str | pathlib.Path, max_items: int = 0) -> list[EvalItem]:
  """The items of a jsonl file (the first `max_items` when > 0)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"evaluation set not found: {str(path)!r}")
  items: list[EvalItem] = []
  seen: dict[str, str] = {}
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if max_items and len(items) >= max_items:
        break
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        d = json.loads(line)
      except json.JSONDecodeError as e:
        raise ItemError(f"{where}: not valid JSON: {e}") from e
      item = parse_item(d, path.parent, where)
      if item.id in seen:
        raise ItemError(f"{where}: id {item.id!r} already used at {seen[item.id]}")
      seen[item.id] = where
      items.append(item)
  if not items:
    raise ItemError(f"{path}: no items")
  return items

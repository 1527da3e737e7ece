"""LLaVA-style conversation files, read as released (`type="llava"`).

Release layout (LLaVA-Instruct-150K, llava_v1_5_mix665k.json, ShareGPT4V's
sharegpt4v_instruct_gpt4-vision_cap100k.json and most SFT sets made since): one JSON array
of records, or a jsonl file of them, each

  {"id": "000000033471",                       a string (some sets: a number)
   "image": "coco/train2017/000000033471.jpg", one path, or a list of paths (LLaVA-NeXT),
                                               relative to the training run's image folder;
                                               absent in text-only conversations
   "conversations": [{"from": "human", "value": "<image>\\nWhat is on the bus?"},
                     {"from": "gpt", "value": "An advertisement."}, ...]}

Checked against haotian-liu/LLaVA docs/Finetune_Custom_Data.md (the fields) and
llava/train/train.py (`LazySupervisedDataset`: `'image' in record` decides whether a record
has an image, paths are joined to `--image_folder`), LLaVA-VL/LLaVA-NeXT
llava/train/train.py (`"image"` may be a list; .json and .jsonl files), and the ShareGPT4V
dataset card (huggingface.co/datasets/Lin-Chen/ShareGPT4V: the same fields, markers also
at the end of a turn: "...in this image?\\n<image>").

Mapping to our schema: {"kind": "chat", "messages", "images"} (or "text_chat" without
images); `common.llava_messages` maps "from" human/gpt to user/assistant and each
"<image>" marker, in order over the turns, to `<image_placeholder>`; the k-th marker is the
k-th image. Markers stay WHERE THE RECORD PUTS THEM, with the text around them ("<image>\\n"
stays a placeholder and a newline). LLaVA's `preprocess_multimodal` instead moves a turn's
marker to the turn's start ("<image>\\n" + the rest); that move only works with one image
(v1.5 collapses several markers into one; LLaVA-NeXT moves only single-marker turns), and
DeepSeek-VL's own prompts put the placeholder where the image is referred to, so we keep
the author's position, which keeps multi-image records in order.

Images resolve against `src.image_folder` (default: the file's folder); absolute paths
stay. A record counts as image-bearing when it has an "image" that is not null or [];
the reader keeps only the records of its source's modality (`src.modality`), so one file
can feed a multimodal source (chats with images) and a text source (text chats). A record
whose kind cannot be told (not an object, "image" of a wrong type, or, in jsonl, a line
that is not JSON) is kept by both, so that each source counts it.

Skip reasons (common.FormatError): "malformed" for a record that is not an object or not
valid JSON/UTF-8, a bad "image", missing or bad "conversations", a "from" other than
human/gpt, or a number of "<image>" markers that differs from its images.

Index: a JSON array is parsed once at open (a broken array fails there, as LLaVA's
json.load would) and only each kept element's byte span in the file is held; a jsonl file
uses sources.LineIndex (byte offsets of lines). Records are read from the file on demand,
so the reader pickles to grain workers at 16 bytes a record, whatever the file's size.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any

import numpy as np

from dsvl_jax.data.formats.common import FormatError, llava_messages
from dsvl_jax.data.mixing import MULTIMODAL, TEXT
from dsvl_jax.data.sources import LineIndex

_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's insignificant whitespace
_UTF8_BOM = b"\xef\xbb\xbf"
# What the index learns of a record: which sources keep it.
_TEXT, _IMAGES, _UNKNOWN = 0, 1, 2


def open_source(src) -> "LlavaSource":
  """The reader of a `type="llava"` source (data.config.SourceConfig)."""
  return LlavaSource(src.paths[0], src.image_folder, src.modality)


def _kind_of(record: Any) -> int:
  """_IMAGES, _TEXT, or _UNKNOWN (kept by both sources; reading it raises)."""
  if not isinstance(record, dict):
    return _UNKNOWN
  image = record.get("image")
  if image is None or image == []:
    return _TEXT
  if isinstance(image, (str, list)):
    return _IMAGES
  return _UNKNOWN


def _image_paths(record: dict[str, Any]) -> list[str]:
  image = record.get("image")
  if image is None:
    return []
  images = [image] if isinstance(image, str) else image
  if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
    raise FormatError("malformed", "'image' must be a path or a list of paths")
  return images


def _index_array(data: bytes, path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Byte spans [start, end) and kinds of the elements of a JSON array file.

  Decoded as latin-1, one character per byte, so character positions are byte offsets:
  UTF-8's multi-byte sequences are all >= 0x80, never JSON punctuation, so the structure
  parses the same (the strings come out garbled, and only the "image" key is looked at).
  """
  text = data.decode("latin-1")
  decoder = json.JSONDecoder()
  at = _WHITESPACE.match(text, len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0).end()
  starts, ends, kinds = [], [], []
  try:
    if text[at : at + 1] != "[":
      raise ValueError("does not start with '['")
    at = _WHITESPACE.match(text, at + 1).end()
    if text[at : at + 1] == "]":
      at += 1
    else:
      while True:
        element, end = decoder.raw_decode(text, at)
        starts.append(at)
        ends.append(end)
        kinds.append(_kind_of(element))
        at = _WHITESPACE.match(text, end).end()
        if text[at : at + 1] == "]":
          at += 1
          break
        if text[at : at + 1] != ",":
          raise ValueError(f"expected ',' or ']' at byte {at}")
        at = _WHITESPACE.match(text, at + 1).end()
    if _WHITESPACE.match(text, at).end() != len(text):
      raise ValueError(f"data after the array at byte {at}")
  except ValueError as e:  # json.JSONDecodeError is one
    raise ValueError(f"{path}: not a JSON array of records: {e}") from e
  return (np.asarray(starts, np.int64), np.asarray(ends, np.int64), np.asarray(kinds, np.int8))


class LlavaSource:
  """Random access to the records of one LLaVA file that suit `modality` (module
  docstring); `__getitem__` returns a record dict of our schema or raises FormatError."""

  base_dir = None  # image paths come out absolute

  def __init__(self, path: str | os.PathLike, image_folder: str = "", modality: str = MULTIMODAL):
    if modality not in (MULTIMODAL, TEXT):
      raise ValueError(f"modality must be {MULTIMODAL!r} or {TEXT!r}, got {modality!r}")
    self.path = pathlib.Path(path).absolute()
    if not self.path.is_file():
      raise FileNotFoundError(f"LLaVA file not found: {str(path)!r}")
    folder = pathlib.Path(image_folder) if image_folder else self.path.parent
    self.image_folder = folder.absolute()
    self.modality = modality
    want = _IMAGES if modality == MULTIMODAL else _TEXT
    with open(self.path, "rb") as f:
      head = f.read(4096).lstrip(_UTF8_BOM).lstrip()
    self.is_array = head.startswith(b"[")
    if self.is_array:
      starts, ends, kinds = _index_array(self.path.read_bytes(), self.path)
      (keep,) = np.nonzero((kinds == want) | (kinds == _UNKNOWN))
      self._starts = starts[keep]
      self._lengths = (ends - starts)[keep].astype(np.int32)
      self._positions = keep.astype(np.int32)  # the element's place in the array, for logs
      self._lines = None
    else:
      self._lines = LineIndex(self.path)
      kinds = np.empty(len(self._lines), np.int8)
      k = 0
      with open(self.path, "rb") as f:
        for line in f:
          if line.strip():  # LineIndex's records: the non-blank lines
            try:
              kinds[k] = _kind_of(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
              kinds[k] = _UNKNOWN
            k += 1
      (keep,) = np.nonzero((kinds == want) | (kinds == _UNKNOWN))
      self._positions = keep.astype(np.int32)  # into the LineIndex
    self._file, self._pid, self._last = None, None, None

  def __len__(self) -> int:
    return len(self._positions)

  def __getstate__(self):
    return {**self.__dict__, "_file": None, "_pid": None, "_last": None}

  def _raw(self, index: int) -> bytes:
    if self._lines is not None:
      return self._lines[int(self._positions[index])]
    if self._file is None or self._pid != os.getpid():  # reopen after fork/spawn
      self._file, self._pid = open(self.path, "rb"), os.getpid()
    return os.pread(self._file.fileno(), int(self._lengths[index]), int(self._starts[index]))

  def _parsed(self, index: int) -> Any:
    """The record's JSON value; the last one is kept, since the encoder asks `describe`
    and then `__getitem__` for the same index."""
    last = self._last
    if last is not None and last[0] == index:
      return last[1]
    try:
      value = json.loads(self._raw(index))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      value = FormatError("malformed", f"not valid JSON: {e}")
    self._last = (index, value)
    return value

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self._parsed(index)
    if isinstance(record, FormatError):
      raise record
    if not isinstance(record, dict):
      raise FormatError("malformed", f"a record must be a JSON object, got {type(record).__name__}")
    images = _image_paths(record)
    messages = llava_messages(record.get("conversations"), len(images))
    if not images:
      return {"kind": "text_chat", "messages": messages}
    return {
        "kind": "chat",
        "messages": messages,
        "images": [str(self.image_folder / p) for p in images],
    }

  def describe(self, index: int) -> str:
    """The file, the record's place in it and its "id" (never raises: it names bad
    records too)."""
    if self._lines is not None:
      where = self._lines.describe(int(self._positions[index]))
    else:
      where = f"{self.path.name} record {int(self._positions[index])}"
    try:
      record = self._parsed(index)
    except OSError:
      return where
    rid = record.get("id") if isinstance(record, dict) else None
    if isinstance(rid, (str, int)) and not isinstance(rid, bool):
      where += f" id {rid!r}"
    return where

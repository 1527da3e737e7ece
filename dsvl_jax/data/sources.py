"""Training-data sources and the record schema (BUILD.md, "Training data").

A record is one training sample before tokenisation:

  {"kind": "caption" | "interleaved" | "chat" | "text" | "text_chat"   (informational),
   "text": str                    a document, or
   "messages": [{"role": "user" | "assistant", "content": str}, ...]  a chat,
   "images": [image, ...]}        the k-th `<image_placeholder>` is the k-th image

Every source is a `Source`: random access to records (grain's `RandomAccessDataSource`
protocol: `__len__` and `__getitem__`) returning them *raw*, plus where a record comes
from. `parse_record` turns a raw payload into a `Record` inside the grain worker, where
a malformed one is counted and skipped like any other bad sample instead of stopping
the job:

  JsonlSource        a manifest, one JSON object per line; image paths relative to it
  ArrayRecordSource  records framed by `frame_record` (image file bytes inside), for
                     large data and cheap global shuffling
  SyntheticSource    the built-in generator (`synthetic.py`), no files at all
  InMemorySource     a list of record dicts (tests, notebooks)
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import struct
from typing import Any, Protocol, Sequence, Union, runtime_checkable

import numpy as np
from PIL import Image

from dsvl_jax.data import synthetic

# An image reference: a file path, the bytes of an encoded image file, or a PIL image.
ImageRef = Union[str, bytes, Image.Image]

MAGIC = b"DSVLREC1"  # ArrayRecord payload: MAGIC, u32 header length, JSON header, images
_HEADER = struct.Struct("<I")


@dataclasses.dataclass(frozen=True)
class Record:
  """A parsed record; exactly one of `text` and `messages` is set."""

  kind: str
  text: str | None
  messages: tuple[dict[str, str], ...] | None
  images: tuple[ImageRef, ...]


class RecordError(ValueError):
  """A record that does not follow the schema."""


@runtime_checkable
class Source(Protocol):
  """What the encoder reads records from (picklable: grain workers receive it)."""

  base_dir: str | None  # relative image paths in its records resolve against it

  def __len__(self) -> int:
    """The number of records."""

  def __getitem__(self, index: int) -> Any:
    """Record `index`, raw: a dict, a JSON line or an ArrayRecord frame (`parse_record`)."""

  def describe(self, index: int) -> str:
    """Where record `index` is, for log lines ("" when the index says it all)."""


def _check_string(value: Any, what: str) -> None:
  if not isinstance(value, str):
    raise RecordError(f"{what} must be a string, got {type(value).__name__}")
  try:  # JSON admits lone surrogates ("\\ud800"), which no tokenizer can encode
    value.encode("utf-8")
  except UnicodeEncodeError as e:
    raise RecordError(f"{what} is not valid Unicode: {e}") from e


def _record_from_dict(d: Any, base_dir: pathlib.Path | None) -> Record:
  if not isinstance(d, dict):
    raise RecordError(f"a record must be a JSON object, got {type(d).__name__}")
  unknown = set(d) - {"kind", "text", "messages", "images", "image_lengths"}
  if unknown:
    raise RecordError(f"unknown record fields {sorted(unknown)}")
  text, messages = d.get("text"), d.get("messages")
  if (text is None) == (messages is None):
    raise RecordError("a record needs exactly one of 'text' and 'messages'")
  if text is not None:
    _check_string(text, "'text'")
  if messages is not None:
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and set(m) == {"role", "content"} for m in messages
    ):
      raise RecordError("'messages' must be a list of {'role', 'content'} objects")
    for i, m in enumerate(messages):
      _check_string(m["role"], f"message {i} 'role'")
      _check_string(m["content"], f"message {i} 'content'")
  images = d.get("images", [])
  if not isinstance(images, (list, tuple)):
    raise RecordError("'images' must be a list")
  refs = []
  for ref in images:
    if isinstance(ref, str):
      path = pathlib.Path(ref)
      refs.append(str(path if path.is_absolute() or base_dir is None else base_dir / path))
    elif isinstance(ref, (bytes, Image.Image)):
      refs.append(ref)
    else:
      raise RecordError(f"an image must be a path, bytes or a PIL image, got {type(ref).__name__}")
  kind = d.get("kind", "")
  return Record(str(kind), text, None if messages is None else tuple(messages), tuple(refs))


def parse_record(raw: Any, base_dir: str | None = None) -> Record:
  """A source's raw payload -> Record; raises RecordError when it breaks the schema.

  raw: a dict (synthetic), a JSON line (str/bytes) or an ArrayRecord frame (bytes).
  """
  base = None if base_dir is None else pathlib.Path(base_dir)
  if isinstance(raw, dict):
    return _record_from_dict(raw, base)
  if isinstance(raw, bytes) and raw.startswith(MAGIC):
    return unframe_record(raw)
  try:
    d = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RecordError(f"not valid JSON: {e}") from e
  return _record_from_dict(d, base)


def frame_record(d: dict[str, Any], images: Sequence[bytes]) -> bytes:
  """One ArrayRecord payload: the record's JSON (minus images) and its image files."""
  header = {k: v for k, v in d.items() if k != "images"}
  header["image_lengths"] = [len(b) for b in images]
  blob = json.dumps(header, ensure_ascii=False).encode()
  return b"".join([MAGIC, _HEADER.pack(len(blob)), blob, *images])


def unframe_record(payload: bytes) -> Record:
  start = len(MAGIC) + _HEADER.size
  if len(payload) < start:
    raise RecordError("truncated ArrayRecord payload")
  (n,) = _HEADER.unpack_from(payload, len(MAGIC))
  try:
    header = json.loads(payload[start : start + n])
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RecordError(f"bad ArrayRecord header: {e}") from e
  if not isinstance(header, dict):
    raise RecordError("bad ArrayRecord header: not a JSON object")
  lengths = header.pop("image_lengths", [])
  if not isinstance(lengths, list) or not all(
      isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in lengths
  ):
    raise RecordError("bad ArrayRecord header: 'image_lengths' must be byte counts")
  at, images = start + n, []
  for length in lengths:
    images.append(payload[at : at + length])
    at += length
  if at != len(payload):
    raise RecordError(
        f"ArrayRecord payload holds {len(payload)} bytes, its header accounts for {at}"
    )
  header["images"] = images
  return _record_from_dict(header, None)


class LineIndex:
  """Byte offsets of the non-blank lines of a text file; reads line k on demand (the
  file opened once per process, so it survives pickling to grain workers). Only the
  offsets are kept in memory."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f"not found: {str(self.path)!r}")
    offsets, lines, at = [], [], 0
    with open(self.path, "rb") as f:
      for number, line in enumerate(f, start=1):
        if line.strip():
          offsets.append(at)
          lines.append(number)
        at += len(line)
    self.offsets = np.asarray(offsets, np.int64)
    self.lines = np.asarray(lines, np.int32)  # 1-based line of each record, for logs
    self._file, self._pid = None, None

  def __len__(self) -> int:
    return len(self.offsets)

  def __getitem__(self, k: int) -> bytes:
    if self._file is None or self._pid != os.getpid():  # reopen after fork/spawn
      self._file, self._pid = open(self.path, "rb"), os.getpid()
    self._file.seek(int(self.offsets[k]))
    return self._file.readline()

  def __getstate__(self):
    return {**self.__dict__, "_file": None, "_pid": None}

  def describe(self, k: int) -> str:
    return f"{self.path.name} line {int(self.lines[k])}"


class JsonlSource:
  """Random access to the lines of a jsonl manifest (blank lines are not records)."""

  def __init__(self, path: str | os.PathLike):
    if not pathlib.Path(path).is_file():
      raise FileNotFoundError(f"manifest not found: {str(path)!r}")
    self.path = pathlib.Path(path)
    self._index = LineIndex(path)

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, index: int) -> bytes:
    return self._index[index]

  @property
  def base_dir(self) -> str:
    return str(self.path.parent)

  def describe(self, index: int) -> str:
    return self._index.describe(index)


class ArrayRecordSource:
  """grain's ArrayRecord reader over one or more files (globs are not expanded); the
  frames hold their images, so no path needs a base."""

  base_dir = None

  def __init__(self, paths: str | Sequence[str]):
    import grain  # local import: keeps this module light for the converter tool's users

    paths = [paths] if isinstance(paths, str) else list(paths)
    for p in paths:
      if not pathlib.Path(p).is_file():
        raise FileNotFoundError(f"ArrayRecord file not found: {p!r}")
    self._reader = grain.sources.ArrayRecordDataSource(paths)

  def __len__(self) -> int:
    return len(self._reader)

  def __getitem__(self, index: int) -> bytes:
    return self._reader[index]

  def describe(self, index: int) -> str:
    return ""


class SyntheticSource:
  """`size` records of the built-in dataset with `seed`; only `kinds` are drawn."""

  base_dir = None

  def __init__(self, seed: int, size: int, image_size: int, kinds: Sequence[str]):
    unknown = set(kinds) - set(synthetic.KINDS)
    if unknown or not kinds:
      raise ValueError(
          f"synthetic kinds must be a non-empty subset of {synthetic.KINDS}, got {list(kinds)}"
      )
    self.seed, self.size, self.image_size, self.kinds = seed, size, image_size, tuple(kinds)

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict[str, Any]:
    kind = self.kinds[index % len(self.kinds)]
    return synthetic.sample(self.seed, index, self.image_size, kind)

  def describe(self, index: int) -> str:
    return ""


@dataclasses.dataclass(frozen=True)
class InMemorySource:
  """Record dicts held in a list; image paths in them are absolute or the process's."""

  records: Sequence[dict[str, Any]]
  base_dir = None

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.records[index]

  def describe(self, index: int) -> str:
    return ""


def open_image(ref: ImageRef) -> Image.Image:
  """Decodes an image reference; errors name the file (image_processor.load_image)."""
  from dsvl_jax.processor.image_processor import load_image

  return ref if isinstance(ref, Image.Image) else load_image(ref)

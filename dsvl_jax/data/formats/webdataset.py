"""WebDataset tar shards, indexed once for random access.

The release layout (webdataset/webdataset: README, webdataset/tariterators.py
`base_plus_ext` and `group_by_keys`): a plain POSIX tar whose regular members that belong
to one sample share a key; the key is the member's path up to the first dot of its
basename ("a/0001.seg.png" -> key "a/0001", extension "seg.png"), the extension names the
field, lower-cased. Members named `__...__` are metadata, not samples. Image-text shards
as img2dataset writes them (rom1504/img2dataset img2dataset/writer.py;
github.com/LAION-AI/dataset-spec: "0.jpg", "0.txt" the caption, "0.json" metadata incl.
"caption", "url", "key", "status", "width", "height"), and instruction sets packed the
same way with a LLaVA record in the .json ({"id", "image", "conversations": [{"from",
"value"}]}).

Mapping to our record schema, per key (records in shard order, keys in the order of
their first member):
  image: the first member with extension jpg / jpeg / png / webp, its bytes as stored
    (one image a key: the convention has one field per extension; others are ignored)
  .json with "conversations" (LLaVA turns: common.llava_messages, "<image>" markers
    counted against the one image) or "messages" ({"role", "content"} turns, as
    common.chat_messages reads them) -> a chat ("chat"; "text_chat" without image)
  else the .txt caption (img2dataset's .json repeats it), else the .json's "caption"
    or "text" -> "caption" (LLaVA "<image>" markers become our placeholder, and one
    goes in front unless it holds one) or, without image, "text". Otherwise the text is
    used exactly as stored (no stripping).

webdataset groups consecutive members only; this reader groups a key's members wherever
they are in the shard, so shards written member by member read the same and `tar`-built
ones whose members are not adjacent read too.

Skip reasons raised here (common.FormatError): "missing_member" (a key with no text; in
a multimodal source also one with text but no image), "malformed" (a key holding the same
extension twice, as webdataset refuses too; a .json that is not a JSON object; text that
is not UTF-8; chats of another shape). A corrupt image is the encoder's "bad_image".

Modality: the index knows from the member names which keys have an image, so a text
source keeps only the keys without one (reading those as documents or text chats) and
a multimodal source all keys; one shard set can so feed both.

Index: the tar headers are scanned once at open (tarfile; no member data is read) and,
per key, the data offset and size of its image, .txt and .json members kept in numpy
arrays with the key names in one bytes blob (about 60 bytes a key plus its name).
`__getitem__` seeks in the shard, opened once per process. Compressed shards (.tar.gz)
cannot be seeked: decompress them first.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import tarfile
from typing import Any, Sequence

import numpy as np

from dsvl_jax.data.formats.common import (
    FormatError,
    OpenFiles,
    caption_text,
    chat_messages,
    expand_paths,
    llava_messages,
)
from dsvl_jax.data.mixing import MULTIMODAL

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's metadata members
_FIELDS = ("image", "txt", "json")


def split_name(name: str) -> tuple[str, str] | None:
  """A member name -> (key, extension) by the WebDataset convention, or None for a name
  without an extension (not part of a sample)."""
  folder, slash, base = name.rpartition("/")
  stem, dot, ext = base.partition(".")
  if not stem or not dot:
    return None
  return folder + slash + stem, ext.lower()


def index_shard(path: pathlib.Path, keep_images: bool) -> dict[str, Any]:
  """One shard's keys: per field the member data offset and size (-1: absent), a flag for
  keys holding an extension twice, and the key names. keep_images=False leaves out the
  keys that have an image (a text source's index)."""
  keys: dict[str, int] = {}
  offsets, sizes, seen, dup = [], [], [], []
  try:
    tar = tarfile.open(path, "r:")
  except tarfile.ReadError as e:
    raise ValueError(
        f"{path}: not an uncompressed tar ({e}); random access needs plain .tar shards"
    ) from e
  with tar:
    for member in tar:
      if not member.isreg() or _META.match(member.name):
        continue
      split = split_name(member.name)
      if split is None:
        continue
      key, ext = split
      field = "image" if ext in IMAGE_EXTENSIONS else ext if ext in ("txt", "json") else None
      if key not in keys:
        keys[key] = len(keys)
        offsets.append([-1, -1, -1])
        sizes.append([-1, -1, -1])
        seen.append(set())
        dup.append(False)
      k = keys[key]
      dup[k] |= ext in seen[k]
      seen[k].add(ext)
      if field is not None and offsets[k][_FIELDS.index(field)] < 0:
        offsets[k][_FIELDS.index(field)] = member.offset_data
        sizes[k][_FIELDS.index(field)] = member.size
  offsets = np.asarray(offsets, np.int64).reshape(-1, 3)
  sizes = np.asarray(sizes, np.int64).reshape(-1, 3)
  dup = np.asarray(dup, bool)
  keep = np.ones(len(keys), bool) if keep_images else offsets[:, 0] < 0
  names = [n.encode() for n, m in zip(keys, keep) if m]
  return {
      "offsets": offsets[keep],
      "sizes": sizes[keep],
      "dup": dup[keep],
      "names": b"".join(names),
      "name_ends": np.cumsum([len(n) for n in names], dtype=np.int64),
  }


class WebDatasetSource:
  """Random access to the samples of WebDataset tar shards (module docstring); holds
  paths and offset arrays, opens shards lazily in each process."""

  base_dir = None  # images come back as bytes

  def __init__(self, paths: Sequence[str | os.PathLike], modality: str = MULTIMODAL):
    self.multimodal = modality == MULTIMODAL
    self.paths = [str(p) for p in paths]
    shards = [index_shard(pathlib.Path(p), self.multimodal) for p in self.paths]
    counts = [len(s["offsets"]) for s in shards]
    self._starts = np.cumsum([0] + counts, dtype=np.int64)
    self._offsets = np.concatenate([s["offsets"] for s in shards]).reshape(-1, 3)
    self._sizes = np.concatenate([s["sizes"] for s in shards]).reshape(-1, 3)
    self._dup = np.concatenate([s["dup"] for s in shards])
    self._names = [s["names"] for s in shards]
    self._name_ends = [s["name_ends"] for s in shards]
    self._files = OpenFiles(self.paths, functools.partial(open, mode="rb"))

  def __len__(self) -> int:
    return int(self._starts[-1])

  def _locate(self, index: int) -> tuple[int, int]:
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} of {len(self)}")
    shard = int(np.searchsorted(self._starts, index, side="right")) - 1
    return shard, index - int(self._starts[shard])

  def key(self, index: int) -> str:
    shard, k = self._locate(index)
    ends = self._name_ends[shard]
    return self._names[shard][int(ends[k - 1]) if k else 0 : int(ends[k])].decode()

  def describe(self, index: int) -> str:
    shard, _ = self._locate(index)
    return f"{pathlib.Path(self.paths[shard]).name} key {self.key(index)!r}"

  def _read(self, shard: int, offset: int, size: int) -> bytes:
    f = self._files.get(shard)
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
      raise FormatError("malformed", f"member at byte {offset} is cut short ({len(data)} bytes)")
    return data

  def __getitem__(self, index: int) -> dict[str, Any]:
    shard, _ = self._locate(index)
    offsets, sizes = self._offsets[index], self._sizes[index]
    where = f"key {self.key(index)!r}: "
    if self._dup[index]:
      raise FormatError("malformed", f"{where}the same extension twice in one key")

    has_image = offsets[0] >= 0
    if self.multimodal and not has_image:
      raise FormatError("missing_member", f"{where}no {'/'.join(IMAGE_EXTENSIONS)} member")

    def member(field: str) -> bytes | None:
      k = _FIELDS.index(field)
      return None if offsets[k] < 0 else self._read(shard, int(offsets[k]), int(sizes[k]))

    meta = member("json")
    if meta is not None:
      try:
        meta = json.loads(meta)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError("malformed", f"{where}.json is not valid JSON: {e}") from e
      if not isinstance(meta, dict):
        raise FormatError("malformed", f"{where}.json is not an object")
    n = int(has_image)
    record: dict[str, Any]
    if meta is not None and "conversations" in meta:
      messages = llava_messages(meta["conversations"], n, where)
      record = {"kind": "chat" if n else "text_chat", "messages": messages}
    elif meta is not None and "messages" in meta:
      messages, _ = chat_messages(meta["messages"], n, where)  # one image: nothing to order
      record = {"kind": "chat" if n else "text_chat", "messages": messages}
    else:
      text = member("txt")
      if text is not None:
        try:
          text = text.decode("utf-8")
        except UnicodeDecodeError as e:
          raise FormatError("malformed", f"{where}.txt is not UTF-8: {e}") from e
      else:
        text = next(
            (meta[f] for f in ("caption", "text") if isinstance((meta or {}).get(f), str)), None
        )
      if text is None:
        raise FormatError(
            "missing_member", f"{where}no .txt caption, and no .json caption or conversation"
        )
      record = {"kind": "caption" if n else "text", "text": caption_text(text, n)}
    record["images"] = [member("image")] if has_image else []
    return record


def open_source(src) -> WebDatasetSource:
  """The reader of a configured webdataset source (data.config.SourceConfig): its paths
  are .tar shards or folders of them (sorted by name)."""
  return WebDatasetSource(expand_paths(src.paths, (".tar",)), src.modality)

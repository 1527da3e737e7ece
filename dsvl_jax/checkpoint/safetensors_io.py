"""Reading and writing PyTorch-layout tensors: safetensors files, one tensor at a time.

A `TensorSource` answers keys, shapes (from headers, without reading data) and single
tensors; `SafetensorsSource` serves a single `model.safetensors` or a sharded set
described by `model.safetensors.index.json`. Pickle checkpoints are refused, never
loaded. `write_safetensors` writes shards of bounded size plus the index.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Iterable, Mapping

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from dsvl_jax.checkpoint.mapping import ConversionError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class TensorSource:
  """Read-only mapping of PyTorch keys to arrays, read lazily."""

  def keys(self) -> list[str]:
    raise NotImplementedError

  def shape(self, key: str) -> tuple[int, ...]:
    raise NotImplementedError

  def get(self, key: str) -> np.ndarray:
    raise NotImplementedError

  def close(self) -> None:
    pass


class DictSource(TensorSource):
  """An in-memory state dict (numpy arrays, or anything np.asarray accepts)."""

  def __init__(self, state: Mapping):
    self._state = state

  def keys(self):
    return list(self._state)

  def shape(self, key):
    return tuple(self._state[key].shape)

  def get(self, key):
    return np.asarray(self._state[key])


class SafetensorsSource(TensorSource):
  """Tensors of a checkpoint directory (single file or sharded with an index)."""

  def __init__(self, directory: str | pathlib.Path):
    self.directory = pathlib.Path(directory)
    self._files: dict[str, pathlib.Path] = {}  # key -> file
    self._handles: dict[pathlib.Path, object] = {}
    index = self.directory / INDEX_NAME
    if index.exists():
      try:
        weight_map = json.loads(index.read_text())["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise ConversionError(f"unreadable index {index}: {e}") from e
      for key, name in weight_map.items():
        self._files[key] = self.directory / name
      for file in sorted(set(self._files.values())):
        if not file.exists():
          raise ConversionError(f"{index} names {file.name}, which does not exist")
        keys = set(self._open(file).keys())
        listed = {k for k, f in self._files.items() if f == file}
        if listed - keys:
          raise ConversionError(
              f"{file} lacks tensors its index lists: {sorted(listed - keys)[:10]}"
          )
    elif (self.directory / SINGLE_NAME).exists():
      file = self.directory / SINGLE_NAME
      self._files = {k: file for k in self._open(file).keys()}
    else:
      files = sorted(self.directory.glob("*.safetensors"))
      pickles = [p.name for p in self.directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
      if pickles and not files:
        raise ConversionError(
            f"{self.directory} holds only pickle checkpoints ({', '.join(pickles)}). They are "
            "refused: unpickling runs arbitrary code. Convert them to safetensors first, in "
            "an environment you trust, e.g. with transformers: "
            "AutoModel.from_pretrained(dir, trust_remote_code=False).save_pretrained(out, "
            "safe_serialization=True), or torch.load + safetensors.torch.save_file."
        )
      if len(files) != 1:
        raise ConversionError(
            f"{self.directory}: expected {SINGLE_NAME} or {INDEX_NAME}, "
            f"found {[f.name for f in files] or 'no safetensors files'}"
        )
      self._files = {k: files[0] for k in self._open(files[0]).keys()}

  def _open(self, file: pathlib.Path):
    if file not in self._handles:
      try:
        self._handles[file] = safe_open(str(file), framework="numpy")
      except Exception as e:  # safetensors raises its own error types for bad headers
        raise ConversionError(
            f"cannot read {file}: {e} (truncated or not a safetensors file?)"
        ) from e
    return self._handles[file]

  def keys(self):
    return list(self._files)

  def shape(self, key):
    return tuple(self._open(self._files[key]).get_slice(key).get_shape())

  def get(self, key):
    # A fresh handle per tensor: safe_open memory-maps the file, and pages read through
    # a long-lived mapping stay in our resident set; closing unmaps them, so reading a
    # checkpoint never holds more than one tensor of file pages (BUILD.md, memory).
    file = self._files[key]
    try:
      with safe_open(str(file), framework="numpy") as f:
        return f.get_tensor(key)
    except Exception as e:
      raise ConversionError(f"cannot read tensor '{key}' from {file}: {e}") from e

  def close(self):
    self._handles.clear()


def parse_size(text: str) -> int:
  """'5GB' / '500MB' / '10KiB' / '123' -> bytes."""
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", text, re.IGNORECASE)
  if not m:
    raise ValueError(f"cannot parse size {text!r}; use e.g. 5GB or 500MB")
  unit = (m.group(2) or "B").upper()
  base = 1024 if "I" in unit else 1000
  power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
  return int(float(m.group(1)) * base**power)


def write_safetensors(
    tensors: Iterable[tuple[str, np.ndarray]],
    directory: pathlib.Path,
    shard_size: int,
    metadata: dict[str, str] | None = None,
) -> list[str]:
  """Writes (key, array) pairs as shards of at most `shard_size` bytes (a tensor larger
  than that gets a shard of its own) plus an index; a single shard is `model.safetensors`.
  Holds at most one shard in memory. Returns the file names written.
  """
  metadata = {"format": "pt", **(metadata or {})}
  names, weight_map, total = [], {}, 0

  def flush(shard, number):
    name = f"model-{number:05d}.safetensors.partial"
    save_file(shard, str(directory / name), metadata=metadata)
    names.append(name)

  current, size = {}, 0
  for key, array in tensors:
    nbytes = array.nbytes
    if current and size + nbytes > shard_size:
      flush(current, len(names) + 1)
      for k in current:
        weight_map[k] = len(names)
      current, size = {}, 0
    current[key] = np.ascontiguousarray(array)
    size += nbytes
    total += nbytes
  if current or not names:
    flush(current, len(names) + 1)
    for k in current:
      weight_map[k] = len(names)

  n = len(names)
  if n == 1:
    final = [SINGLE_NAME]
  else:
    final = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
  for tmp, name in zip(names, final):
    (directory / tmp).rename(directory / name)
  if n > 1:
    index = {
        "metadata": {"total_size": total},
        "weight_map": {k: final[i - 1] for k, i in sorted(weight_map.items())},
    }
    (directory / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    final.append(INDEX_NAME)
  return final

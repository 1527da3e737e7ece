"""Sequence packing for stage 2 (and the one-sample rows of stages 1 and 3).

A sample is ids [T] with a loss_mask [T] (which tokens are supervised) and its images
[n, 3, S, S]. Packing works on next-token pairs made inside each sample (inputs =
ids[:-1], targets = ids[1:], weight = loss_mask[1:]), so no target ever crosses a sample
boundary; samples are placed whole (an image's token block is never split), in arrival
order, with segment ids 1, 2, ... and positions restarting at 0 per segment. Padding has
segment 0 and weight 0. The attention masks built from segment ids
(`models.attention.make_mask`) keep every token inside its own sample.

`RowBuilder` fills one row; `Packer`/`pack` run it over a stream (first fit into the open
row). A sample longer than a row is never truncated silently: it is counted and skipped
(logged rate-limited, skip_log.py) or raises when `strict`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Sequence

import numpy as np

from dsvl_jax.data.skip_log import SkipLog


@dataclasses.dataclass
class Packed:
  """One row of length L: inputs, targets, weights, segment_ids, positions [L]; images
  [N, 3, S, S] of its segments in order (N = num_images, or padded to a fixed number of
  slots with zero images after the first num_images)."""

  inputs: np.ndarray
  targets: np.ndarray
  weights: np.ndarray
  segment_ids: np.ndarray
  positions: np.ndarray
  images: np.ndarray
  num_segments: int
  num_images: int = 0

  @property
  def efficiency(self) -> float:
    return float((self.segment_ids > 0).mean())


class RowBuilder:
  """Places whole samples into one row of `seq_len` tokens.

  max_images: image slots of the row (images are then padded to exactly that many);
  None: no limit, images concatenated. max_segments: samples per row (1 = unpacked).
  """

  def __init__(
      self,
      seq_len: int,
      pad_id: int,
      image_shape: tuple[int, int, int],
      max_images: int | None = None,
      max_segments: int | None = None,
      image_dtype=np.float32,
  ):
    self.seq_len, self.pad_id, self.image_shape = seq_len, pad_id, image_shape
    self.max_images, self.max_segments, self.image_dtype = max_images, max_segments, image_dtype
    self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    self.used_tokens = 0
    self.used_images = 0

  @property
  def empty(self) -> bool:
    return not self._parts

  @property
  def full(self) -> bool:
    return self.max_segments is not None and len(self._parts) >= self.max_segments

  def fits(self, num_tokens: int, num_images: int) -> bool:
    """Whether a sample of num_tokens ids (num_tokens - 1 pairs) fits in what is left."""
    if self.full or self.used_tokens + num_tokens - 1 > self.seq_len:
      return False
    return self.max_images is None or self.used_images + num_images <= self.max_images

  def add(self, ids: Sequence[int], loss_mask: Sequence[bool], images: np.ndarray) -> None:
    ids = np.asarray(ids, np.int32)
    mask = np.asarray(loss_mask, bool)
    images = np.asarray(images, self.image_dtype).reshape((-1,) + self.image_shape)
    if not self.fits(len(ids), len(images)):
      raise ValueError(
          f"a sample of {len(ids)} tokens and {len(images)} image(s) does not "
          f"fit ({self.used_tokens}/{self.seq_len} tokens, {self.used_images} "
          f"image(s) used)"
      )
    self._parts.append((ids[:-1], ids[1:], mask[1:].astype(np.float32), images))
    self.used_tokens += len(ids) - 1
    self.used_images += len(images)

  def build(self) -> Packed:
    L = self.seq_len
    inputs = np.full(L, self.pad_id, np.int32)
    targets = np.full(L, self.pad_id, np.int32)
    weights = np.zeros(L, np.float32)
    segs = np.zeros(L, np.int32)
    pos = np.zeros(L, np.int32)
    at = 0
    for k, (inp, tgt, w, _) in enumerate(self._parts, start=1):
      n = len(inp)
      inputs[at : at + n], targets[at : at + n], weights[at : at + n] = inp, tgt, w
      segs[at : at + n], pos[at : at + n] = k, np.arange(n)
      at += n
    slots = self.used_images if self.max_images is None else self.max_images
    images = np.zeros((slots,) + self.image_shape, self.image_dtype)
    if self.used_images:
      images[: self.used_images] = np.concatenate([p[3] for p in self._parts])
    return Packed(inputs, targets, weights, segs, pos, images, len(self._parts), self.used_images)


@dataclasses.dataclass
class PackStats:
  sequences: int = 0
  samples: int = 0
  real_tokens: int = 0
  total_tokens: int = 0
  skipped: int = 0  # empty or longer than a sequence

  @property
  def efficiency(self) -> float:
    return self.real_tokens / max(self.total_tokens, 1)


class Packer:
  """Greedy packer over a stream of samples (first fit into the open sequence)."""

  def __init__(
      self,
      seq_len: int,
      pad_id: int,
      image_shape: tuple[int, int, int],
      strict: bool = False,
      max_segments: int | None = None,
  ):
    self.seq_len, self.pad_id, self.image_shape = seq_len, pad_id, image_shape
    self.strict, self.max_segments = strict, max_segments
    self.stats = PackStats()
    self._skip_log = SkipLog()
    self._row = self._new_row()

  def _new_row(self) -> RowBuilder:
    return RowBuilder(self.seq_len, self.pad_id, self.image_shape, max_segments=self.max_segments)

  def _flush(self) -> Packed:
    out = self._row.build()
    self.stats.sequences += 1
    self.stats.real_tokens += self._row.used_tokens
    self.stats.total_tokens += self.seq_len
    self._row = self._new_row()
    return out

  def add(
      self, ids: Sequence[int], loss_mask: Sequence[bool], images: np.ndarray, name: str = ""
  ) -> Iterator[Packed]:
    """Adds one sample; yields a finished sequence when the open one is full."""
    n = len(ids) - 1
    if n < 1 or n > self.seq_len:
      msg = (
          f"sample {name or self.stats.samples + self.stats.skipped} has {len(ids)} "
          f"tokens; a packed sequence holds 2..{self.seq_len + 1}"
      )
      self.stats.skipped += 1
      if self.strict:
        raise ValueError(msg)
      self._skip_log.warn("length", msg)
      return
    if not self._row.fits(len(ids), 0) and not self._row.empty:
      yield self._flush()
    self._row.add(ids, loss_mask, images)
    self.stats.samples += 1

  def finish(self) -> Iterator[Packed]:
    if not self._row.empty:
      yield self._flush()


def pack(
    samples: Iterable[tuple[Sequence[int], Sequence[bool], np.ndarray]],
    seq_len: int,
    pad_id: int,
    image_shape: tuple[int, int, int],
    strict: bool = False,
) -> tuple[list[Packed], PackStats]:
  """Packs a finite iterable of (ids, loss_mask, images); returns sequences and stats."""
  packer = Packer(seq_len, pad_id, image_shape, strict)
  out = []
  for ids, mask, images in samples:
    out.extend(packer.add(ids, mask, images))
  out.extend(packer.finish())
  return out, packer.stats

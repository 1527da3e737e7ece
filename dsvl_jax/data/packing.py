"""Sequence packing for stage 2 (and the unpacked layout of stages 1 and 3).

A sample is an `EncodedSample`-like (ids [T], loss_mask [T]: which tokens are supervised)
plus its images [n, 3, S, S]. Packing works on next-token pairs made inside each sample
(inputs = ids[:-1], targets = ids[1:], weight = loss_mask[1:]), so no target ever crosses
a sample boundary; samples are placed whole (an image's token block is never split),
first-fit in arrival order, with segment ids 1, 2, ... and positions restarting at 0 per
segment. Padding has segment 0 and weight 0.

A sample longer than the sequence is never truncated silently: it is counted and
skipped (or raises when `strict`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterable, Iterator, Sequence

import numpy as np


@dataclasses.dataclass
class Packed:
  """One sequence of length L: inputs, targets, weights, segment_ids, positions [L];
  images [N, 3, S, S] of its segments in order."""
  inputs: np.ndarray
  targets: np.ndarray
  weights: np.ndarray
  segment_ids: np.ndarray
  positions: np.ndarray
  images: np.ndarray
  num_segments: int

  @property
  def efficiency(self) -> float:
    return float((self.segment_ids > 0).mean())


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

  def __init__(self, seq_len: int, pad_id: int, image_shape: tuple[int, int, int],
               strict: bool = False, max_segments: int | None = None):
    self.seq_len, self.pad_id, self.image_shape = seq_len, pad_id, image_shape
    self.strict, self.max_segments = strict, max_segments
    self.stats = PackStats()
    self._open: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    self._used = 0

  def _flush(self) -> Packed:
    L = self.seq_len
    inputs = np.full(L, self.pad_id, np.int32)
    targets = np.full(L, self.pad_id, np.int32)
    weights = np.zeros(L, np.float32)
    segs = np.zeros(L, np.int32)
    pos = np.zeros(L, np.int32)
    images, at = [], 0
    for k, (inp, tgt, w, imgs) in enumerate(self._open, start=1):
      n = len(inp)
      inputs[at:at + n], targets[at:at + n], weights[at:at + n] = inp, tgt, w
      segs[at:at + n], pos[at:at + n] = k, np.arange(n)
      images.append(imgs)
      at += n
    self.stats.sequences += 1
    self.stats.real_tokens += at
    self.stats.total_tokens += L
    out = Packed(inputs, targets, weights, segs, pos,
                 np.concatenate(images) if images else np.zeros((0,) + self.image_shape,
                                                                 np.float32),
                 len(self._open))
    self._open, self._used = [], 0
    return out

  def add(self, ids: Sequence[int], loss_mask: Sequence[bool], images: np.ndarray,
          name: str = "") -> Iterator[Packed]:
    """Adds one sample; yields a finished sequence when the open one is full."""
    ids = np.asarray(ids, np.int32)
    n = len(ids) - 1
    if n < 1 or n > self.seq_len:
      msg = (f"sample {name or self.stats.samples + self.stats.skipped} has {len(ids)} "
             f"tokens; a packed sequence holds 2..{self.seq_len + 1}")
      self.stats.skipped += 1
      if self.strict:
        raise ValueError(msg)
      logging.warning("skipped: %s", msg)
      return
    full = self._used + n > self.seq_len or (
        self.max_segments is not None and len(self._open) >= self.max_segments)
    if full and self._open:
      yield self._flush()
    mask = np.asarray(loss_mask, bool)
    self._open.append((ids[:-1], ids[1:], mask[1:].astype(np.float32),
                       np.asarray(images, np.float32).reshape((-1,) + self.image_shape)))
    self._used += n
    self.stats.samples += 1

  def finish(self) -> Iterator[Packed]:
    if self._open:
      yield self._flush()


def pack(samples: Iterable[tuple[Sequence[int], Sequence[bool], np.ndarray]], seq_len: int,
         pad_id: int, image_shape: tuple[int, int, int], strict: bool = False
         ) -> tuple[list[Packed], PackStats]:
  """Packs a finite iterable of (ids, loss_mask, images); returns sequences and stats."""
  packer = Packer(seq_len, pad_id, image_shape, strict)
  out = []
  for ids, mask, images in samples:
    out.extend(packer.add(ids, mask, images))
  out.extend(packer.finish())
  return out, packer.stats

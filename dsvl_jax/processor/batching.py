"""Collating encoded samples into a left-padded batch (reference 5.1).

Layout, as ORIG `VLChatProcessor.batchify`: sequences are right-aligned, pads (the
config's pad id, = EOS) on the left, attention_mask 1 on real tokens. Unlike batchify's
[B, max_n, 3, S, S] with zero-image slots, images are one flat batch-major
[N, 3, S, S] array (sample 0's images, then sample 1's, ...), which is what the model's
scatter consumes (the k-th image-token block of the batch gets the k-th image); N may
be 0.

Overflow: a sample longer than max_length raises by default. `overflow="truncate_left"`
drops the oldest tokens after BOS and only before the first image token, so an image
block is never cut and every image keeps its tokens; when that cannot reach max_length
it raises too.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import numpy as np

from dsvl_jax.processor.conversation import EncodedSample

if TYPE_CHECKING:  # annotation only: keeps this module free of JAX imports
  from dsvl_jax.models import VLMConfig

OVERFLOW_POLICIES = ("error", "truncate_left")


@dataclasses.dataclass(frozen=True)
class Sample:
  """ids [T] int; images [n, 3, S, S] float32 in [0, 1] (n >= 0); loss_mask [T] bool."""

  ids: np.ndarray
  images: np.ndarray
  loss_mask: np.ndarray | None = None

  @classmethod
  def from_encoded(cls, encoded: EncodedSample, images: np.ndarray) -> "Sample":
    images = np.asarray(images, np.float32)
    if len(images) != encoded.num_images:
      raise ValueError(
          f"the prompt has {encoded.num_images} image placeholder(s) but "
          f"{len(images)} image(s) were given"
      )
    return cls(encoded.ids, images, encoded.loss_mask)


def round_up(n: int, bucket: int) -> int:
  """n rounded up to a multiple of bucket: padded shapes come from a few buckets, so a
  jitted function compiles once per bucket, not once per length."""
  return -(-n // bucket) * bucket


def left_pad(
    rows: Sequence[Sequence[int]], width: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
  """rows of ids -> (ids, mask) [len(rows), width] int32, each row right-aligned."""
  ids = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), np.int32)
  for i, row in enumerate(rows):
    ids[i, width - len(row) :] = row
    mask[i, width - len(row) :] = 1
  return ids, mask


def _truncate_left(
    ids: np.ndarray, mask: np.ndarray | None, max_length: int, cfg: VLMConfig, index: int
) -> tuple[np.ndarray, np.ndarray | None]:
  """Drops len - max_length tokens after BOS (kept) and before the first image."""
  excess = len(ids) - max_length
  start = 1 if ids[0] == cfg.bos_token_id else 0  # the model always saw BOS first
  image_pos = np.flatnonzero(ids == cfg.image_token_id)
  first_image = int(image_pos[0]) if len(image_pos) else len(ids)
  if start + excess > first_image or max_length <= start:
    raise ValueError(
        f"sample {index}: cannot truncate {len(ids)} tokens to max_length={max_length}: "
        f"only the {first_image - start} token(s) between BOS and the first image at "
        f"position {first_image} may be dropped, {excess} would have to go"
    )
  keep = np.r_[np.arange(start), np.arange(start + excess, len(ids))]
  return ids[keep], None if mask is None else mask[keep]


def collate(
    samples: Sequence[Sample],
    cfg: VLMConfig,
    max_length: int | None = None,
    overflow: str = "error",
) -> dict[str, np.ndarray]:
  """Left-pads a list of samples into one batch.

  Returns input_ids [B, T] int32 (pad id on the left), attention_mask [B, T] int32,
  images [N, 3, S, S] float32 (batch-major, N = total images, may be 0) and, when the
  samples carry loss masks, loss_mask [B, T] bool (False on pads). T is the longest
  sample after truncation; max_length defaults to cfg.llm.max_position_embeddings.
  """
  if overflow not in OVERFLOW_POLICIES:
    raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
  if not samples:
    raise ValueError("collate needs at least one sample")
  has_mask = [s.loss_mask is not None for s in samples]
  if any(has_mask) and not all(has_mask):
    raise ValueError("either every sample carries a loss_mask or none does")
  max_length = cfg.llm.max_position_embeddings if max_length is None else max_length
  s, k = cfg.image_size, cfg.num_image_tokens
  rows, masks, images = [], [], []
  for i, sample in enumerate(samples):
    ids = np.asarray(sample.ids).astype(np.int32).reshape(-1)
    mask = None if sample.loss_mask is None else np.asarray(sample.loss_mask, bool)
    img = np.asarray(sample.images, np.float32)
    if len(ids) == 0:
      raise ValueError(f"sample {i} has no tokens")
    if mask is not None and mask.shape != ids.shape:
      raise ValueError(f"sample {i}: loss_mask {mask.shape} does not match ids {ids.shape}")
    if img.ndim != 4 or img.shape[1:] != (3, s, s):
      raise ValueError(f"sample {i}: images must be [n, 3, {s}, {s}], got {img.shape}")
    n_tokens = int(np.sum(ids == cfg.image_token_id))
    if n_tokens != len(img) * k:
      raise ValueError(
          f"sample {i}: {n_tokens} image tokens but {len(img)} image(s) x "
          f"{k} tokens = {len(img) * k}"
      )
    if len(ids) > max_length:
      if overflow == "error":
        raise ValueError(
            f"sample {i} has {len(ids)} tokens ({len(img)} image(s) x {k}), more than "
            f"max_length={max_length}; shorten it or use overflow='truncate_left'"
        )
      ids, mask = _truncate_left(ids, mask, max_length, cfg, i)
    rows.append(ids)
    masks.append(mask)
    images.append(img)
  t = max(len(r) for r in rows)
  input_ids, attention_mask = left_pad(rows, t, cfg.pad_token_id)
  batch = {
      "input_ids": input_ids,
      "attention_mask": attention_mask,
      "images": np.concatenate(images, axis=0),
  }
  if all(has_mask):
    loss_mask = np.zeros((len(rows), t), bool)
    for b, mask in enumerate(masks):
      loss_mask[b, t - len(mask) :] = mask
    batch["loss_mask"] = loss_mask
  return batch

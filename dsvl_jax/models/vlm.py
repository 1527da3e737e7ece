"""DeepSeek-VL: vision tower -> aligner -> image embeddings placed into the LLM input.

Images come in one of two layouts:

* flat [N, 3, S, S] in [0, 1], batch-major (inference): the k-th image-token position of
  the batch (scanning batch, then time) receives the k-th row of the flattened image
  embeddings [N * tokens_per_image, D], as ORIG's boolean mask assignment and
  transformers' masked_scatter do; a batch may mix samples with 0, 1 or more images.
* per-row slots [B, M, 3, S, S] (training): row b's k-th image block is slot (b, k).
  The shape is fixed whatever the images per row, so every multimodal step compiles
  once; unused slots are encoded too (and never read). M = 0 (text steps) never runs
  the vision towers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from dsvl_jax.models.aligner import HybridSplitAligner, MlpGeluAligner
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.llm import LLM, Cache, positions_from_mask
from dsvl_jax.models.vision import HybridTower, SiglipTower


def check_image_tokens(input_ids: Any, num_images: int, cfg: VLMConfig) -> None:
  """Raises if the number of image-token positions differs from the images given.

  A no-op on traced values: jitted callers check concrete inputs before tracing.
  """
  if isinstance(input_ids, jax.core.Tracer):
    return
  n_tokens = int(np.sum(np.asarray(input_ids) == cfg.image_token_id))
  expected = num_images * cfg.num_image_tokens
  if n_tokens != expected:
    raise ValueError(
        f"the batch has {n_tokens} image-token positions (id {cfg.image_token_id}) but "
        f"{num_images} image(s) x {cfg.num_image_tokens} tokens = {expected} image "
        f"embeddings; each image needs exactly {cfg.num_image_tokens} placeholder tokens"
    )


def scatter_image_embeddings(
    input_ids: jax.Array, token_embeds: jax.Array, image_embeds: jax.Array, image_token_id: int
) -> jax.Array:
  """Places image rows at image-token positions in batch-major order.

  input_ids [B, T]; token_embeds [B, T, D]; image_embeds [N, K, D] -> [B, T, D].
  """
  b, t, d = token_embeds.shape
  rows = image_embeds.reshape(-1, d).astype(token_embeds.dtype)
  is_image = input_ids == image_token_id
  index = jnp.cumsum(is_image.reshape(-1)).reshape(b, t) - 1
  gathered = rows[jnp.clip(index, 0, rows.shape[0] - 1)]
  return jnp.where(is_image[..., None], gathered, token_embeds)


def scatter_row_images(
    input_ids: jax.Array, token_embeds: jax.Array, image_embeds: jax.Array, image_token_id: int
) -> jax.Array:
  """Places each row's image slots at its image-token positions, in order.

  input_ids [B, T]; token_embeds [B, T, D]; image_embeds [B, M, K, D] -> [B, T, D].
  """
  b, t, d = token_embeds.shape
  rows = image_embeds.reshape(b, -1, d).astype(token_embeds.dtype)  # [B, M*K, D]
  is_image = input_ids == image_token_id
  index = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, rows.shape[1] - 1)
  gathered = jnp.take_along_axis(rows, index[..., None], axis=1)
  return jnp.where(is_image[..., None], gathered, token_embeds)


class DeepseekVL(nn.Module):
  """The full model; parameters: {'llm', 'vision', 'aligner'}."""

  cfg: VLMConfig

  def setup(self):
    cfg = self.cfg
    self.llm = LLM(cfg.llm, cfg.compute)
    if cfg.hybrid:
      self.vision = HybridTower(cfg.siglip, cfg.sam, cfg.compute)
      self.aligner = HybridSplitAligner(cfg.aligner, cfg.compute, cfg.llm.hidden_size)
    else:
      self.vision = SiglipTower(cfg.siglip, cfg.compute)
      self.aligner = MlpGeluAligner(cfg.aligner, cfg.compute, cfg.llm.hidden_size)

  def encode_images(self, images: jax.Array) -> jax.Array:
    """[N, 3, S, S] in [0, 1] -> image embeddings [N, tokens_per_image, D_llm]."""
    s = self.cfg.image_size
    if images.ndim != 4 or images.shape[1:] != (3, s, s):
      raise ValueError(f"images must be [N, 3, {s}, {s}] in [0, 1], got {images.shape}")
    if self.cfg.hybrid:
      high, low = self.vision(images)
      return self.aligner(high, low)
    return self.aligner(self.vision(images))

  def embed(self, input_ids: jax.Array, images: jax.Array | None = None) -> jax.Array:
    """Token embeddings with image embeddings in place: [B, T] -> [B, T, D].

    images: flat [N, 3, S, S] or per-row slots [B, M, 3, S, S] (module docstring).
    """
    if images is not None and images.ndim == 5:
      embeds = self.llm.embed(input_ids)
      b, m = images.shape[:2]
      if m == 0:  # a text step: the towers are not part of its program
        return embeds
      feats = self.encode_images(images.reshape((b * m,) + images.shape[2:]))
      return scatter_row_images(
          input_ids, embeds, feats.reshape((b, m) + feats.shape[1:]), self.cfg.image_token_id
      )
    num_images = 0 if images is None else images.shape[0]
    check_image_tokens(input_ids, num_images, self.cfg)
    embeds = self.llm.embed(input_ids)
    if num_images == 0:  # text-only batches never run the vision towers
      return embeds
    return scatter_image_embeddings(
        input_ids, embeds, self.encode_images(images), self.cfg.image_token_id
    )

  def __call__(
      self,
      input_ids: jax.Array,
      images: jax.Array | None = None,
      *,
      return_hidden: bool = False,
      logits_to_keep: int = 0,
      **inputs: Any,
  ) -> dict[str, jax.Array | Cache | None]:
    """Logits for a batch.

    input_ids, images and the keyword `inputs` (attention_mask, positions, segment_ids,
    cache, cache_index): as hidden_states takes them.
    logits_to_keep: k > 0 computes logits for the last k positions only (a prefill needs
      one; the [T, V] projection of a long prompt is otherwise a large share of its cost).
    Returns {'logits': [B, T or k, V] float32, 'cache': ..., 'hidden': [B, T, D] if asked}.
    """
    hidden, new_cache = self.hidden_states(input_ids, images, **inputs)
    kept = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
    out = {"logits": self.llm.logits(kept, inputs.get("adapter")), "cache": new_cache}
    if return_hidden:
      out["hidden"] = hidden
    return out

  def hidden_states(
      self,
      input_ids: jax.Array,
      images: jax.Array | None = None,
      *,
      attention_mask: jax.Array | None = None,
      positions: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
      cache: Cache | None = None,
      cache_index: jax.Array | int = 0,
      adapter: jax.Array | None = None,
  ) -> tuple[jax.Array, Cache | None]:
    """The LLM's final-normed hidden states [B, T, D] (and the cache): __call__ without
    the LM head, for losses that project to the vocabulary chunk by chunk.

    input_ids [B, T]; images: flat [N, 3, S, S] in [0, 1], per-row slots [B, M, 3, S, S]
      (module docstring), or None.
    attention_mask [B, T] (1 = real token); with a cache, [B, S_cache] over all slots.
    positions [B, T]: RoPE positions; default cumsum(attention_mask) - 1 (left padding)
      or arange(T). Required with a cache.
    segment_ids [B, T]: packed sequences; needs cache=None.
    adapter [B] int32: each row's adapter with stacked adapters (compute.lora.stacked;
      the LLM's only: images need one adapter, infer/slots.py selects it).
    Returns (hidden [B, T, D], the updated cache or None).
    """
    if positions is None:
      if cache is not None:
        raise ValueError("positions are required when decoding with a cache")
      if attention_mask is not None:
        positions = positions_from_mask(attention_mask)
      else:
        positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
    embeds = self.embed(input_ids, images)
    return self.llm(
        embeds,
        positions,
        attention_mask=attention_mask,
        segment_ids=segment_ids,
        cache=cache,
        cache_index=cache_index,
        adapter=adapter,
    )

  def lm_logits(self, hidden: jax.Array) -> jax.Array:
    """Final-normed hidden states [..., D] -> float32 logits [..., V]."""
    return self.llm.logits(hidden)

"""Next-token selection from logits, with transformers' processor order and rules.

Order (as `generate` applies them): repetition penalty, then temperature, top-k, top-p,
then argmax (temperature 0) or a categorical draw. The repetition penalty follows the
HF rule (a seen token's logit is divided by the penalty if positive, multiplied if
negative); which tokens count as seen is the caller's choice — the original DeepSeek
code generates from embeddings, so only generated tokens count (reference 6).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """temperature 0 means greedy; top_k 0 and top_p 1.0 disable those filters."""
  temperature: float = 0.0
  top_p: float = 1.0
  top_k: int = 0
  repetition_penalty: float = 1.0
  max_new_tokens: int = 512
  stop_strings: tuple[str, ...] = ()
  ignore_eos: bool = False  # benchmarks: always produce max_new_tokens
  seed: int = 0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if self.repetition_penalty <= 0:
      raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def apply_repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: float) -> jax.Array:
  """logits [B, V] float32; seen [B, V] bool."""
  if penalty == 1.0:
    return logits
  penalised = jnp.where(logits > 0, logits / penalty, logits * penalty)
  return jnp.where(seen, penalised, logits)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
  """Keeps logits >= the k-th largest (ties at the boundary kept, as HF does)."""
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, NEG_INF, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
  """Nucleus filter, HF rule: sort ascending, drop tokens whose cumulative probability
  is <= 1 - p, always keep the most likely token."""
  if p >= 1.0:
    return logits
  order = jnp.argsort(logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
  remove_sorted = cum <= (1.0 - p)
  remove_sorted = remove_sorted.at[..., -1].set(False)
  remove = jnp.zeros_like(remove_sorted).at[
      jnp.arange(logits.shape[0])[:, None], order].set(remove_sorted)
  return jnp.where(remove, NEG_INF, logits)


def process_logits(logits: jax.Array, seen: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """All filters in generate's order; the result is what argmax / sampling sees."""
  logits = apply_repetition_penalty(logits.astype(jnp.float32), seen, cfg.repetition_penalty)
  if cfg.temperature == 0:
    return logits
  logits = logits / cfg.temperature
  logits = top_k_filter(logits, cfg.top_k)
  return top_p_filter(logits, cfg.top_p)


def select(logits: jax.Array, seen: jax.Array, cfg: SamplingConfig, rng: jax.Array) -> jax.Array:
  """[B, V] logits -> [B] int32 next tokens."""
  logits = process_logits(logits, seen, cfg)
  if cfg.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)

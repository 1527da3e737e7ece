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
import numpy as np

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
  remove = (
      jnp.zeros_like(remove_sorted)
      .at[jnp.arange(logits.shape[0])[:, None], order]
      .set(remove_sorted)
  )
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


# -- per-row sampling (continuous batching: every row its own request) -----------------

ROW_FIELDS = ("temperature", "top_p_cut", "top_p_on", "top_k", "penalty")


def row_values(cfg: SamplingConfig) -> dict[str, np.ndarray]:
  """One row's sampling settings as the arrays `select_rows` reads.

  top_p_cut is 1 - top_p computed in Python (double) and then rounded, as `top_p_filter`
  compares against it, so a row selects exactly what `select` does for that config.
  """
  return {
      "temperature": np.float32(cfg.temperature),
      "top_p_cut": np.float32(1.0 - cfg.top_p),
      "top_p_on": np.bool_(cfg.temperature > 0 and cfg.top_p < 1.0),
      "top_k": np.int32(cfg.top_k if cfg.temperature > 0 else 0),
      "penalty": np.float32(cfg.repetition_penalty),
  }


def _filter_rows(
    logits: jax.Array, top_k: jax.Array, cut: jax.Array, top_p_on: jax.Array
) -> jax.Array:
  """top_k_filter then top_p_filter with a k and p per row, from one ascending sort.

  Equal to the static filters: the k-th largest is the sorted array's entry V - k, and
  the sorted top-k-filtered logits are the sorted logits with the entries below it set
  to -inf (an argsort of the filtered array orders only those -inf entries otherwise).
  """
  b, v = logits.shape
  order = jnp.argsort(logits, axis=-1)
  srt = jnp.take_along_axis(logits, order, axis=-1)
  k_on = ((top_k > 0) & (top_k < v))[:, None]
  kth = jnp.take_along_axis(srt, jnp.clip(v - top_k, 0, v - 1)[:, None], axis=-1)
  logits = jnp.where(k_on & (logits < kth), NEG_INF, logits)
  srt = jnp.where(k_on & (srt < kth), NEG_INF, srt)
  cum = jnp.cumsum(jax.nn.softmax(srt, axis=-1), axis=-1)
  remove_sorted = (cum <= cut[:, None]).at[:, -1].set(False)
  remove = jnp.zeros_like(remove_sorted).at[jnp.arange(b)[:, None], order].set(remove_sorted)
  return jnp.where(top_p_on[:, None] & remove, NEG_INF, logits)


def select_rows(
    logits: jax.Array, seen: jax.Array, rows: dict[str, jax.Array], keys: jax.Array
) -> jax.Array:
  """[B, V] logits -> [B] int32 tokens, each row by its own settings (`row_values`
  stacked to [B]) and key ([B] keys): row b gets what `select` gives a batch of one with
  that row's config and key. Sorting runs only when some row filters; drawing only when
  some row samples."""
  logits = logits.astype(jnp.float32)
  pen = rows["penalty"][:, None]
  penalised = jnp.where(logits > 0, logits / pen, logits * pen)
  logits = jnp.where(seen & (pen != 1.0), penalised, logits)
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  temp = rows["temperature"]

  def draw(logits):
    scaled = logits / jnp.where(temp > 0, temp, 1.0)[:, None]
    needs_sort = jnp.any(rows["top_p_on"] | (rows["top_k"] > 0))
    scaled = jax.lax.cond(
        needs_sort,
        _filter_rows,
        lambda x, *_: x,
        scaled,
        rows["top_k"],
        rows["top_p_cut"],
        rows["top_p_on"],
    )
    one = lambda key, row: jax.random.categorical(key, row[None], axis=-1)[0]
    return jax.vmap(one)(keys, scaled).astype(jnp.int32)

  drawn = jax.lax.cond(jnp.any(temp > 0), draw, lambda _: greedy, logits)
  return jnp.where(temp > 0, drawn, greedy)

"""Next-token cross-entropy on supervised tokens, without the full [B, T, V] logits.

The vocabulary projection (102,400 columns) of a 4096-token row is 1.6 GB of float32
logits per row, more than a layer's activations; so the loss walks the sequence in
chunks of `chunk` tokens under `jax.checkpoint`: each chunk's logits exist only inside
its own step, forward and backward. `chunk = 0` projects whole rows at once (small
vocabularies, where chunking only adds loop overhead).

Normalisation is the caller's: this returns the weighted sum of token losses and the
sum of weights, so a global batch split over hosts or accumulation micro-batches divides
once by the count of the whole global batch and every supervised token weighs the same.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-log p(target): logits [..., V] float32, targets [...] int -> [...] float32."""
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return logz - picked


def cross_entropy_sum(
    hidden: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    logits_fn: Callable[[jax.Array], jax.Array],
    chunk: int = 0,
) -> tuple[jax.Array, jax.Array]:
  """(sum of weight * nll, sum of weights) over a batch.

  hidden [B, T, D] (final-normed); targets [B, T] int; weights [B, T] float;
  logits_fn: [B, c, D] -> [B, c, V] float32.
  """
  b, t, d = hidden.shape
  weights = weights.astype(jnp.float32)
  if chunk <= 0 or chunk >= t:
    nll = token_nll(logits_fn(hidden), targets)
    return jnp.sum(nll * weights), jnp.sum(weights)
  pad = -t % chunk
  if pad:  # padded positions carry weight 0
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    weights = jnp.pad(weights, ((0, 0), (0, pad)))
  n = (t + pad) // chunk
  # [n, B, c, ...]: chunks along the sequence keep the batch axis (and its sharding).
  hs = hidden.reshape(b, n, chunk, d).swapaxes(0, 1)
  ys = targets.reshape(b, n, chunk).swapaxes(0, 1)
  ws = weights.reshape(b, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def chunk_loss(h, y, w):
    return jnp.sum(token_nll(logits_fn(h), y) * w)

  def body(total, xs):
    return total + chunk_loss(*xs), None

  total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (hs, ys, ws))
  return total, jnp.sum(weights)

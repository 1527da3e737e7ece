"""The train state and the train step (pure functions; trainer.py jits and shards them).

One step, for a global batch of B rows (inputs, targets, weights, segment_ids,
positions [B, T]; images [B, M, 3, S, S], M = 0 on text steps):

  params = trainable (differentiated) + frozen (stop_gradient: no backward through a
           frozen tower; a frozen LLM still passes activation gradients to the aligner)
  loss   = sum over supervised tokens of weight * nll / (sum of weights of the global
           batch), accumulated over `accum` micro-batches: the same value and gradient
           as one pass over the whole batch, whoever holds which token
  update = clip by global norm, AdamW per group; skipped (and counted) when the loss or
           the gradient norm is not finite, leaving params and optimizer state as they were
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from dsvl_jax.models.vlm import DeepseekVL
from dsvl_jax.train import freezing
from dsvl_jax.train.loss import cross_entropy_sum

BATCH_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions", "images")


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []: steps taken (skipped updates included)
  params: Any  # every parameter, frozen ones included
  opt_state: Any  # over the trainable parameters only
  rng: jax.Array  # uint32 [2]: raw PRNG key, split per step (for stochastic extensions)
  nonfinite: jax.Array  # int32 []: updates skipped for a non-finite loss or gradient


def init_state(params: Any, tx: optax.GradientTransformation, mask: Any, seed: int) -> TrainState:
  trainable, _ = freezing.partition(params, mask)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(trainable),
      rng=jax.random.PRNGKey(seed),
      nonfinite=jnp.zeros((), jnp.int32),
  )


def micro_batches(batch: dict[str, jax.Array], accum: int) -> dict[str, jax.Array]:
  """[B, ...] -> [accum, B / accum, ...], micro-batch a = rows a, a + accum, ...

  Strided, not contiguous: each device's rows (the batch axis is sharded in blocks)
  spread over every micro-batch, so no micro-batch lives on a subset of devices.
  """

  def split(x):
    return x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)

  return jax.tree.map(split, batch)


def make_loss_and_grads(
    model: DeepseekVL, mask: Any, *, accum: int = 1, loss_chunk: int = 0
) -> Callable[[Any, dict], tuple[jax.Array, Any]]:
  """(params, batch, rng=None) -> (loss, gradients of the trainable parameters; None
  where frozen).

  The loss is the global-batch mean over supervised tokens (module docstring), computed
  in `accum` micro-batches whose gradients add up to the one-pass gradient. rng: a raw
  key for the adapters' dropout (model.cfg.compute.lora.dropout), folded per micro-batch.
  """
  dropout = model.cfg.compute.lora.rank > 0 and model.cfg.compute.lora.dropout > 0

  def loss_and_grads(params, batch, rng=None):
    trainable, frozen = freezing.partition(params, mask)
    frozen = jax.lax.stop_gradient(frozen)
    total = jnp.maximum(jnp.sum(batch["weights"].astype(jnp.float32)), 1.0)

    def loss_fn(tr, mb, index=0):
      merged = freezing.merge(tr, frozen)
      rngs = {}
      if dropout:
        if rng is None:
          raise ValueError("compute.lora.dropout needs a key: loss_and_grads(..., rng=)")
        key = jax.random.fold_in(rng, index)
        rngs = {"dropout": jax.random.fold_in(key, 0)}
        head_rngs = {"dropout": jax.random.fold_in(key, 1)}
      hidden, _ = model.apply(
          {"params": merged},
          mb["inputs"],
          mb["images"],
          positions=mb["positions"],
          segment_ids=mb["segment_ids"],
          method=DeepseekVL.hidden_states,
          rngs=rngs,
      )

      def logits_fn(h):
        return model.apply(
            {"params": merged}, h, method=DeepseekVL.lm_logits, rngs=head_rngs if dropout else {}
        )

      nll_sum, _ = cross_entropy_sum(hidden, mb["targets"], mb["weights"], logits_fn, loss_chunk)
      return nll_sum / total

    grad_fn = jax.value_and_grad(loss_fn)
    if accum == 1:
      return grad_fn(trainable, batch)

    def body(carry, xs):
      mb, index = xs
      loss_acc, grad_acc = carry
      loss_i, grad_i = grad_fn(trainable, mb, index)
      return (loss_acc + loss_i, jax.tree.map(jnp.add, grad_acc, grad_i)), None

    zeros = jax.tree.map(jnp.zeros_like, trainable)
    (loss, grads), _ = jax.lax.scan(
        body, (jnp.zeros((), jnp.float32), zeros), (micro_batches(batch, accum), jnp.arange(accum))
    )
    return loss, grads

  return loss_and_grads


def make_train_step(
    model: DeepseekVL,
    tx: optax.GradientTransformation,
    mask: Any,
    *,
    accum: int = 1,
    loss_chunk: int = 0,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """(state, batch) -> (state, metrics); `mask` is freezing.trainable_mask's tree."""
  loss_and_grads = make_loss_and_grads(model, mask, accum=accum, loss_chunk=loss_chunk)

  def step(state: TrainState, batch: dict[str, jax.Array]):
    rng, key = jax.random.split(state.rng)
    loss, grads = loss_and_grads(state.params, batch, key)
    trainable, frozen = freezing.partition(state.params, mask)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    updated = optax.apply_updates(trainable, updates)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def keep(new, old):
      return jnp.where(ok, new, old)

    updated = jax.tree.map(keep, updated, trainable)
    opt_state = jax.tree.map(keep, opt_state, state.opt_state)
    new_state = TrainState(
        step=state.step + 1,
        params=freezing.merge(updated, frozen),
        opt_state=opt_state,
        rng=rng,
        nonfinite=state.nonfinite + (~ok).astype(jnp.int32),
    )
    supervised = jnp.sum(batch["weights"].astype(jnp.float32))
    metrics = {"loss": loss, "grad_norm": grad_norm, "supervised_tokens": supervised, "finite": ok}
    return new_state, metrics

  return step

"""The optimizer: global-norm clipping, then AdamW per parameter group.

It is built over the trainable part of the parameters only (freezing.partition), so a
frozen parameter has no optimizer state at all. Groups (llm, aligner, siglip, ...) share
the schedule scaled by `optimizer.lr_scales.<group>`; the clip norm is taken over all
trainable gradients together. Weight decay, when set, applies to matrices (ndim >= 2),
not to norms, biases or the HD alpha.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from dsvl_jax.train.config import OptimizerConfig
from dsvl_jax.train.schedules import learning_rate


def make_optimizer(
    opt: OptimizerConfig, total_steps: int, labels: Any
) -> optax.GradientTransformation:
  """labels: group name per trainable leaf (None where frozen), as params are laid out."""
  schedule = learning_rate(opt, total_steps)
  groups = sorted(set(jax.tree.leaves(labels)))

  def adamw(scale: float) -> optax.GradientTransformation:
    return optax.adamw(
        lambda count: schedule(count) * scale,
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p),
    )

  inner = optax.multi_transform({g: adamw(getattr(opt.lr_scales, g)) for g in groups}, labels)
  if opt.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(opt.grad_clip), inner)
  return inner

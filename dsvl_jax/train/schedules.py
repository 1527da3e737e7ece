"""Learning-rate schedules of paper Table 4: linear warm-up, then cosine or multi-step.

The "step" scheduler is DeepSeek-LLM's multi-step schedule (arXiv 2401.02954, which the
paper continues from): after warm-up the rate holds at its peak, then is multiplied by
0.316 after 80% of the steps and by 0.1 after 90% (`optimizer.step_boundaries`,
`optimizer.step_factors`).

Warm-up is lr * (step + 1) / warmup_steps, so the first update already moves.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from dsvl_jax.train.config import OptimizerConfig


def learning_rate(opt: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """step (the optimizer's update count, 0-based) -> learning rate."""
  warm = opt.warmup_steps
  peak = opt.lr

  def warmup(step):
    return peak * jnp.minimum(1.0, (step + 1.0) / max(warm, 1))

  if opt.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif opt.schedule == "cosine":
    after = optax.cosine_decay_schedule(
        peak, max(total_steps - warm, 1), alpha=opt.final_lr_fraction
    )
  else:  # step: boundaries are fractions of the whole run, counted from step 0
    rel = 1.0
    scales = {}
    for b, f in zip(opt.step_boundaries, opt.step_factors):
      # piecewise_constant_schedule multiplies; convert absolute factors to ratios.
      scales[max(int(round(b * total_steps)) - warm, 0)] = f / rel
      rel = f
    after = optax.piecewise_constant_schedule(peak, scales)
  if warm == 0:
    return after
  return optax.join_schedules([warmup, after], [warm])

"""Train-step speed: our jitted step vs transformers + torch AdamW, same config and weights.

  python experiments/bench_train.py [--configs tiny,mid] [--steps 3] [--stage 2]

`tiny` is configs/tiny.py (SigLIP family); `mid` is the 1.3B architecture with 4 LLM
layers at full width and vocabulary plus the real SigLIP-L/16@384 tower. One step =
forward, backward and an AdamW update (clip 1.0) of the stage's trained parts (stage 2:
LLM + aligner, SigLIP frozen; stage 3: SigLIP trained too), float32, on a batch of rows
that each hold one image and text, loss on the text tokens. Both sides run in this
process on the same machine (torch on the same thread count), one after the other.

Reported: seconds per step (best of --steps after compilation / warm-up), model FLOP/s
from dsvl_jax/train/flops.py's formula (the same count for both sides), and that as a
share of the host's float32 matmul peak measured at start (dsvl_jax/runtime/perf.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os

import jax
import numpy as np
import torch
import transformers

# Siblings: python puts the script's folder, experiments/, first on sys.path.
from bench_generate import best_of
from hf_reference import hf_model

from convert import state_dict_to_params
from dsvl_jax.config.files import load_config
from dsvl_jax.models import DeepseekVL, VLMConfig
from dsvl_jax.runtime.perf import host_limits
from dsvl_jax.train import flops as flops_lib
from dsvl_jax.train import freezing
from dsvl_jax.train.config import optimizer_config
from dsvl_jax.train.optimizer import make_optimizer
from dsvl_jax.train.step import init_state, make_train_step

TRAINABLE = {2: ("llm", "aligner"), 3: ("llm", "aligner", "siglip")}


def model_config(name: str) -> tuple[VLMConfig, int, int]:
  """(config, rows, text tokens per row)."""
  if name == "tiny":
    return VLMConfig.from_dict(load_config("configs/tiny.py").model), 8, 48
  cfg = VLMConfig.from_dict(load_config("configs/deepseek_vl_1_3b.py").model)
  cfg = cfg.replace(
      llm=dataclasses.replace(cfg.llm, num_layers=4),
      compute=dataclasses.replace(cfg.compute, dtype="float32"),
  )
  return cfg, 2, 64


def make_batch(cfg: VLMConfig, rows: int, text: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  k = cfg.num_image_tokens
  ids = np.concatenate(
      [
          np.full((rows, 1), cfg.bos_token_id),
          np.full((rows, k), cfg.image_token_id),
          rng.integers(3, 400, (rows, text)),
      ],
      axis=1,
  ).astype(np.int32)
  t = ids.shape[1]
  weights = (ids != cfg.image_token_id).astype(np.float32)
  weights[:, -1] = 0  # the last position has no next token
  s = cfg.image_size
  return dict(
      inputs=ids,
      targets=np.concatenate([ids[:, 1:], ids[:, :1]], 1),
      weights=weights,
      segment_ids=np.ones_like(ids),
      positions=np.tile(np.arange(t), (rows, 1)),
      images=rng.random((rows, 1, 3, s, s), dtype=np.float32),
  )


def time_ours(cfg, params, batch, trainable, steps) -> float:
  mask = freezing.trainable_mask(params, trainable)
  labels = freezing.partition(freezing.group_labels(params), mask)[0]
  tx = make_optimizer(optimizer_config({"lr": 1e-5}), 1000, labels)
  state = init_state(params, tx, mask, 0)
  step = jax.jit(make_train_step(DeepseekVL(cfg), tx, mask), donate_argnums=(0,))
  batch = jax.device_put(batch)

  def run():
    nonlocal state
    state, m = step(state, batch)
    jax.block_until_ready((state, m))

  run()  # compile + warm up
  return best_of(run, steps)


def time_theirs(cfg, hf, batch, trainable, steps) -> float:
  for p in hf.model.vision_model.parameters():
    p.requires_grad_("siglip" in trainable)
  params = [p for p in hf.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
  ids = torch.from_numpy(batch["inputs"]).long()
  labels = ids.clone()
  labels[torch.from_numpy(batch["inputs"]) == cfg.image_token_id] = -100
  pixels = (torch.from_numpy(batch["images"][:, 0]) - 0.5) / 0.5

  def step():
    opt.zero_grad(set_to_none=True)
    loss = hf(input_ids=ids, pixel_values=pixels, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()

  step()  # warm up (allocates the optimizer state)
  return best_of(step, steps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="tiny,mid")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--stage", type=int, default=2, choices=(2, 3))
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  limits = host_limits()  # before any model: a quiet machine, nothing else allocated
  trainable = TRAINABLE[args.stage]
  rows = []
  for name in args.configs.split(","):
    cfg, n_rows, text = model_config(name)
    batch = make_batch(cfg, n_rows, text)
    hf = hf_model(cfg, train=True)
    params, _ = state_dict_to_params(
        {k: v.detach().numpy() for k, v in hf.state_dict().items()}, cfg
    )
    ours = time_ours(cfg, params, batch, trainable, args.steps)
    params = None
    gc.collect()  # free our state before torch allocates its own
    theirs = time_theirs(cfg, hf, batch, trainable, args.steps)
    hf = None
    gc.collect()
    shape = flops_lib.BatchShape.of(batch["segment_ids"], np.ones(n_rows))
    flops = flops_lib.step_flops(cfg, trainable, shape)
    rows.append((name, f"{n_rows} x {batch['inputs'].shape[1]}", flops, ours, theirs))
  print(
      f"\njax {jax.__version__}, torch {torch.__version__}, transformers "
      f"{transformers.__version__}, {os.cpu_count()} CPU threads, float32, stage "
      f"{args.stage} ({', '.join(trainable)} trained)"
  )
  print(f"peak from {limits}\n")
  print(
      "| config | batch (rows x tokens) | model GFLOP / step | dsvl_jax s/step | dsvl_jax "
      "share of peak | transformers s/step | transformers share of peak | speed-up |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for name, shape, flops, ours, theirs in rows:
    print(
        f"| {name} | {shape} | {flops / 1e9:.1f} | {ours:.3g} | "
        f"{flops / ours / limits.peak_flops:.0%} | {theirs:.3g} | "
        f"{flops / theirs / limits.peak_flops:.0%} | {theirs / ours:.2f}x |"
    )


if __name__ == "__main__":
  main()

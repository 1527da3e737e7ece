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
share of the host's matmul peak in the row's dtype measured at start
(dsvl_jax/runtime/perf.py); for our steps also the compiled program's temporaries and
the optimizer state's bytes.

  --dtypes float32,bfloat16   bfloat16 rows: our compute dtype bfloat16 over float32
                              parameters; transformers under torch.autocast(bfloat16)
  --lora 16                   LoRA rows (the LLM through rank-16 adapters, the aligner in
                              full) and QLoRA rows (those kernels nf4), ours only
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

# Siblings: python puts the script's folder, experiments/, first on sys.path.
from bench_generate import best_of
from hf_reference import hf_model

from convert import state_dict_to_params
from dsvl_jax.config.files import load_config
from dsvl_jax.models import DeepseekVL, VLMConfig, lora
from dsvl_jax.models.config import LoraConfig
from dsvl_jax.models.init import init_adapters
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


@dataclasses.dataclass
class Timed:
  seconds: float
  temp_bytes: int  # the compiled step's temporaries
  optimizer_bytes: int


def time_ours(cfg, params, batch, trainable, steps) -> Timed:
  mask = freezing.trainable_mask(params, trainable)
  labels = freezing.partition(freezing.group_labels(params), mask)[0]
  tx = make_optimizer(optimizer_config({"lr": 1e-5}), 1000, labels)
  state = init_state(params, tx, mask, 0)
  step = jax.jit(make_train_step(DeepseekVL(cfg), tx, mask), donate_argnums=(0,))
  batch = jax.device_put(batch)
  temp = step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes

  def run():
    nonlocal state
    state, m = step(state, batch)
    jax.block_until_ready((state, m))

  run()  # compile + warm up
  return Timed(best_of(run, steps), temp, freezing.nbytes(state.opt_state))


def with_lora(cfg: VLMConfig, params, rank: int, quant: str) -> tuple[VLMConfig, dict]:
  """cfg and params with fresh rank-`rank` adapters on the LLM (kernels `quant`-stored)."""
  spec = LoraConfig(rank=rank, alpha=2.0 * rank, base_quant=quant)
  cfg = cfg.replace(compute=dataclasses.replace(cfg.compute, lora=spec))
  params = lora.merge(params, init_adapters(cfg, jax.random.key(1)))
  return cfg, lora.quantized(params, cfg) if quant != "none" else params


def time_theirs(cfg, hf, batch, trainable, steps, bf16: bool = False) -> float:
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
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
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
  parser.add_argument("--dtypes", default="float32", help="float32, bfloat16 or both")
  parser.add_argument("--lora", type=int, default=0, help="adapter rank for LoRA rows (0: none)")
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  dtypes = args.dtypes.split(",")
  # before any model: a quiet machine, nothing else allocated
  limits = {d: host_limits(jnp.dtype(d)) for d in dtypes}
  trainable = TRAINABLE[args.stage]
  rows = []
  for name in args.configs.split(","):
    for dtype in dtypes:
      cfg, n_rows, text = model_config(name)
      cfg = cfg.replace(compute=dataclasses.replace(cfg.compute, dtype=dtype))
      batch = make_batch(cfg, n_rows, text)
      hf = hf_model(cfg, train=True)
      params, _ = state_dict_to_params(
          {k: v.detach().numpy() for k, v in hf.state_dict().items()}, cfg
      )
      shape = flops_lib.BatchShape.of(batch["segment_ids"], np.ones(n_rows))
      flops = flops_lib.step_flops(cfg, trainable, shape)
      full = time_ours(cfg, params, batch, trainable, args.steps)
      runs = [("full", full)]
      for quant in ("none", "nf4") if args.lora else ():
        lcfg, lparams = with_lora(cfg, params, args.lora, quant)
        tuned = ("llm", "aligner")
        runs.append(
            (
                "QLoRA nf4" if quant == "nf4" else "LoRA",
                time_ours(lcfg, lparams, batch, tuned, args.steps),
            )
        )
        lparams = None
      params = None
      gc.collect()  # free our state before torch allocates its own
      theirs = time_theirs(cfg, hf, batch, trainable, args.steps, bf16=dtype == "bfloat16")
      hf = None
      gc.collect()
      for setup, t in runs:
        rows.append(
            (name, dtype, setup, f"{n_rows} x {batch['inputs'].shape[1]}", flops, t, theirs)
        )
  print(
      f"\njax {jax.__version__}, torch {torch.__version__}, transformers "
      f"{transformers.__version__}, {os.cpu_count()} CPU threads, stage "
      f"{args.stage} ({', '.join(trainable)} trained; LoRA rows: the LLM through rank-"
      f"{args.lora} adapters, the aligner in full)"
  )
  for d in dtypes:
    print(f"peak in {d} from {limits[d]}")
  print(
      "\n| config | dtype | setup | batch (rows x tokens) | model GFLOP / step | dsvl_jax s/step "
      "| share of peak | temporaries MiB | optimizer MiB | transformers s/step | share of "
      "peak | speed-up |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for name, dtype, setup, shape, flops, t, theirs in rows:
    peak = limits[dtype].peak_flops
    if setup == "full":
      share, theirs_cols = f"{flops / t.seconds / peak:.0%}", (
          f"{theirs:.3g} | {flops / theirs / peak:.0%} | {theirs / t.seconds:.2f}x"
      )
    else:  # not the full step's model FLOPs: the time is the comparison
      share, theirs_cols = "-", "- | - | -"
    print(
        f"| {name} | {dtype} | {setup} | {shape} | {flops / 1e9:.1f} | {t.seconds:.3g} | {share} "
        f"| {t.temp_bytes / 2**20:.1f} | {t.optimizer_bytes / 2**20:.1f} | {theirs_cols} |"
    )


if __name__ == "__main__":
  main()

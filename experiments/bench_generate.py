"""Prefill latency and decode speed: our jitted path vs transformers, same weights.

  python experiments/bench_generate.py [--configs tiny,mid] [--new-tokens 32]
  python experiments/bench_generate.py --configs mid --quant float32,bfloat16,int8,int4

`tiny` is configs/tiny.py; `mid` is the 1.3B architecture with 8 LLM layers (full width,
full vocabulary) and the real SigLIP-L/16@384 tower. Weights are one random
transformers model, converted with convert/ for our side; both run float32 on the CPU
in the same process (torch limited to the same thread count). Prompt: one image plus
text. Bounds: prefill FLOPs / the host's float32 matmul rate, decode LLM weight bytes /
its streaming read rate, both measured at start (`dsvl_jax.runtime.perf`): hosts of the same
type differ up to 4x, so the processor is printed with them.

--quant: instead, our generator alone at each parameter kind (int8 / int4 weight-only, as
`<section>.quantize` loads them), batch 1 and 8, with the bytes a decode step reads, its
streaming bound, and whether the compiled decode step fuses the dequantisation into its
matmuls (experiments/quant_decode.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np
import torch
import transformers

# Siblings: python puts the script's folder, experiments/, first on sys.path.
from hf_reference import paired_models
from quant_decode import print_excerpts, print_table
from quant_decode import run as run_quant

from dsvl_jax.config.files import load_config
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.models import VLMConfig
from dsvl_jax.models.init import count_params
from dsvl_jax.runtime.perf import host_limits


def model_config(name: str) -> VLMConfig:
  if name == "tiny":
    return VLMConfig.from_dict(load_config("configs/tiny.py").model)
  cfg = VLMConfig.from_dict(load_config("configs/deepseek_vl_1_3b.py").model)
  return cfg.replace(
      llm=dataclasses.replace(cfg.llm, num_layers=8),
      compute=dataclasses.replace(cfg.compute, dtype="float32"),
  )


def best_of(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def prefill_flops(cfg: VLMConfig, prompt_len: int, params: dict) -> float:
  """2 x weights x tokens for the towers and the LLM, plus attention scores."""
  vision = count_params(params["vision"]) + count_params(params["aligner"])
  llm_layers = count_params(params["llm"]["layers"])
  s, c = cfg.siglip, cfg.llm
  attn_vision = 4 * s.num_blocks * s.num_tokens**2 * s.width
  attn_llm = 4 * c.num_layers * prompt_len**2 * c.num_heads * c.head_dim
  head = 2 * c.hidden_size * c.vocab_size  # last position only
  return 2 * vision * s.num_tokens + 2 * llm_layers * prompt_len + attn_vision + attn_llm + head


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="tiny,mid")
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument(
      "--quant", default="", help="e.g. float32,bfloat16,int8,int4: the quantised table instead"
  )
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  limits = host_limits()  # before any model: a quiet machine, nothing else allocated
  if args.quant:
    quant_tables(args, limits)
    return
  peak, stream = limits.peak_flops, limits.bandwidth
  rows = []
  for name in args.configs.split(","):
    cfg = model_config(name)
    hf, params = paired_models(cfg)
    gen = Generator(cfg, params)
    k = cfg.num_image_tokens
    ids = np.array(
        [
            [cfg.bos_token_id]
            + [cfg.image_token_id] * k
            + list(np.random.default_rng(0).integers(3, 400, 24))
        ],
        np.int32,
    )
    images = np.random.default_rng(1).random(
        (1, 3, cfg.image_size, cfg.image_size), dtype=np.float32
    )
    hf_pixels = {"pixel_values": (torch.from_numpy(images) - 0.5) / 0.5}
    n = args.new_tokens

    def ours(new):
      # EOS never stops early (ignore_eos / min_new_tokens): equal work on both sides
      return gen.generate(ids, None, images, SamplingConfig(max_new_tokens=new, ignore_eos=True))

    def theirs(new):
      with torch.no_grad():
        return hf.generate(
            input_ids=torch.from_numpy(ids).long(),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            **hf_pixels,
        )

    ours(1), ours(n + 1)  # compile both shapes
    theirs(1)
    o1, t1 = best_of(lambda: ours(1), args.repeats), best_of(lambda: theirs(1), args.repeats)
    on, tn = best_of(lambda: ours(n + 1), 2), best_of(lambda: theirs(n + 1), 2)
    o_dec, t_dec = n / max(on - o1, 1e-9), n / max(tn - t1, 1e-9)
    flops = prefill_flops(cfg, ids.shape[1], params)
    llm_bytes = 4 * (count_params(params["llm"]) - cfg.llm.vocab_size * cfg.llm.hidden_size)
    rows.append(
        (
            name,
            f"prefill ({ids.shape[1]} tokens, 1 image), s",
            o1,
            t1,
            t1 / o1,
            flops / peak,
            (flops / peak) / o1,
        )
    )
    rows.append(
        (
            name,
            "decode, tokens/s",
            o_dec,
            t_dec,
            o_dec / t_dec,
            stream / llm_bytes,
            o_dec / (stream / llm_bytes),
        )
    )
    hf = gen = params = None  # free this model before building the next
  print(
      f"\njax {jax.__version__}, torch {torch.__version__}, transformers "
      f"{transformers.__version__}, {os.cpu_count()} CPU threads, float32"
  )
  print(f"bounds from {limits}\n")
  print("| config | metric | dsvl_jax | transformers | speed-up | bound | dsvl_jax / bound |")
  print("|---|---|---|---|---|---|---|")
  for name, metric, o, t, ratio, bound, frac in rows:
    unit = "s" if "prefill" in metric else "tok/s"
    print(
        f"| {name} | {metric} | {o:.3g} | {t:.3g} | {ratio:.2f}x | "
        f"{bound:.3g} {unit} | {frac:.0%} |"
    )


def quant_tables(args, limits) -> None:
  """The --quant table per config: experiments/quant_decode.py."""
  kinds = args.quant.split(",")
  for name in args.configs.split(","):
    cfg = model_config(name)
    t0 = time.perf_counter()
    rows, excerpts = run_quant(cfg, kinds, args.new_tokens, args.repeats)
    print(f"\n{name}: {time.perf_counter() - t0:.0f} s")
    print(f"jax {jax.__version__}, {os.cpu_count()} CPU threads; bounds from {limits}\n")
    print_table(cfg, rows, limits.bandwidth, args.new_tokens)
    print_excerpts(excerpts)


if __name__ == "__main__":
  main()

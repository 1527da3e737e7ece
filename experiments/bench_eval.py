"""Evaluation throughput: the batched harness vs a one-at-a-time transformers loop.

  python experiments/bench_eval.py [--configs tiny,mid] [--items 24] [--batch 8]

Same random weights on both sides (one transformers model, converted with convert/),
float32 on the CPU, torch on the same threads. The sets are POPE-like: a drawn image
and a yes/no question of varying length per item, in two layouts: every item its own
image, and POPE's own (six questions per image: the harness computes a prefix the rows
of a batch share, image included, once; the loop has nothing to share). Ours: `eval.harness.run_benchmark`
(prompts sorted by length, batches of --batch, compiled shapes reused); timed on a
second pass, after the first compiled every shape. Theirs: the loop other harnesses
run, `generate` once per item with the same prompt ids and pixels. Both generate
exactly --new-tokens tokens per item (EOS and stop strings ignored): equal work.
`tiny` is configs/tiny.py; `mid` the 1.3B architecture with 8 LLM layers and the real
SigLIP-L/16@384 tower (bench_generate.py's).

Bound: the speed-up our harness would have if an item cost nothing but its prefill
FLOPs (towers, LLM, attention; a prefix shared by k questions counted once per k) at
the host's float32 matmul peak, measured at start (`dsvl_jax.runtime.perf.host_limits`), and
decoding were free: transformers' seconds per item / that floor. Where it is under the
target, no batching reaches the target on this host in float32.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import types

import jax
import torch
import transformers

# Siblings: python puts the script's folder, experiments/, first on sys.path.
from bench_generate import model_config, prefill_flops
from hf_reference import paired_models
from PIL import Image, ImageDraw

from dsvl_jax.eval.benchmarks.base import BenchItem, exact_match
from dsvl_jax.eval.generation import AnswerGenerator
from dsvl_jax.eval.harness import build_sample, run_benchmark
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.processor.conversation import template_for
from dsvl_jax.processor.image_processor import ImageProcessorConfig
from dsvl_jax.processor.layout import TokenLayout
from dsvl_jax.processor.tokenizer import make_tokenizer
from dsvl_jax.runtime.perf import host_limits

COLOURS = ("red", "blue", "green", "orange", "purple", "black")


def yes_no_set(n: int, per_image: int = 1) -> types.SimpleNamespace:
  """A POPE-like benchmark of n items (eval/benchmarks/base.py's Benchmark protocol),
  `per_image` consecutive items asking about the same image."""
  items = []
  for i in range(n):
    colour = COLOURS[(i // per_image) % len(COLOURS)]

    def draw(colour=colour, i=i // per_image):
      img = Image.new("RGB", (320 + 16 * (i % 5), 240), "white")
      ImageDraw.Draw(img).ellipse((40, 40, 200, 200), fill=colour)
      return [img]

    question = (
        f"Is there a {COLOURS[(i * 7) % len(COLOURS)]} circle" + " in the picture" * (i % 4) + "?"
    )
    items.append(
        BenchItem(
            id=str(i), question=question, options=(), answer="yes", load_images=draw, num_images=1
        )
    )
  return types.SimpleNamespace(
      NAME="yesno",
      load=lambda path: items,
      prompt=lambda it: "<image_placeholder>" + it.question + " Please answer yes or no.",
      parse=lambda it, out: out or None,
      is_correct=exact_match,
      score=lambda its, parsed: {"num_items": len(its), "unparsed": sum(p is None for p in parsed)},
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="tiny,mid")
  parser.add_argument("--items", type=int, default=24)
  parser.add_argument("--layouts", default="1,6", help="questions per image, per set")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--new-tokens", type=int, default=16)
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())
  limits = host_limits()  # before any model: a quiet machine, nothing else allocated
  print(limits, flush=True)
  rows = []
  for name in args.configs.split(","):
    cfg = model_config(name)
    hf, params = paired_models(cfg)
    tok = make_tokenizer("builtin:bytes", TokenLayout.of(cfg))
    equal_work = SamplingConfig(temperature=0.0, max_new_tokens=args.new_tokens, ignore_eos=True)
    gen = AnswerGenerator(
        cfg, tok, batch_size=args.batch, max_new_tokens=args.new_tokens, prompt_bucket=64
    )
    gen.sampling = equal_work  # no early stop: the same tokens as the loop below
    gen.set_params(params)
    processor = ImageProcessorConfig.for_model(cfg)
    template = template_for("")

    def theirs(sample):
      with torch.no_grad():
        return hf.generate(
            input_ids=torch.from_numpy(sample.ids[None]).long(),
            pixel_values=(torch.from_numpy(sample.images) - 0.5) / 0.5,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
        )

    for per_image in map(int, args.layouts.split(",")):
      bench = yes_no_set(args.items, per_image)
      times = []
      for _ in range(2):  # the first pass compiles every (batch, bucket) shape
        with tempfile.TemporaryDirectory() as out:
          t0 = time.perf_counter()
          run_benchmark("yesno", bench, "", gen, tok, cfg, out, system_prompt="", progress=False)
          times.append(time.perf_counter() - t0)
      ours = args.items / times[1]
      samples = [build_sample(bench, it, tok, cfg, template, processor)[1] for it in bench.load("")]
      theirs(samples[0])  # warm-up
      t0 = time.perf_counter()
      for s in samples:
        theirs(s)
      hf_rate = len(samples) / (time.perf_counter() - t0)
      lengths = [len(s.ids) for s in samples]
      floor = sum(prefill_flops(cfg, n, params) for n in lengths) / per_image / len(lengths)
      bound = (1 / hf_rate) / (floor / limits.peak_flops)
      rows.append(
          (
              name,
              per_image,
              f"{min(lengths)}-{max(lengths)}",
              ours,
              hf_rate,
              bound,
              times[0] - times[1],
          )
      )
      print(rows[-1], flush=True)
    hf = gen = params = None
  print(
      f"\njax {jax.__version__}, torch {torch.__version__}, transformers "
      f"{transformers.__version__}; {limits}; {os.cpu_count()} CPU threads, float32; "
      f"{args.items} items, 1 image each, {args.new_tokens} new tokens each, "
      f"batch {args.batch}\n"
  )
  print(
      "| config | questions per image | prompt tokens | dsvl_jax harness, items/s "
      "| transformers loop, items/s | speed-up | bound | first-pass compile overhead, s |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for name, per_image, lengths, ours, theirs_rate, bound, compile_s in rows:
    print(
        f"| {name} | {per_image} | {lengths} | {ours:.2f} | {theirs_rate:.2f} "
        f"| {ours / theirs_rate:.1f}x | {bound:.1f}x | {compile_s:.0f} |"
    )


if __name__ == "__main__":
  main()

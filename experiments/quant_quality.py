"""What weight-only quantisation costs in quality (models/quant.py, compute.quant).

  python experiments/quant_quality.py --demo=workdir/demo [--families siglip,hybrid]
      [--prompts 4] [--kinds int8,int4,nf4,bfloat16+kv8,int8+kv8] [--targets llm]

1. The demo's trained model (`make run` writes WORKDIR/stage3 and its tokenizer): the
   held-out exact match and multiple-choice accuracy of its 246 questions (and the
   blank-image control) with the weights in float32, bfloat16 and each quantised kind,
   through the same Evaluator the demo reports with.
2. Mid-sized random models of both families (the 1.3B architecture with 8 LLM layers;
   the 7B architecture with 4), float32 compute: over prompts with an image, the mean
   KL divergence KL(float32 || variant) of the next-token distributions at every text
   position and the share of positions whose top-1 token agrees with float32's.

`--targets llm` quantises the LLM's projections (the default targets); `all` adds the
vision towers' blocks and the aligner. A kind ending in `+kv8` also holds the KV cache in
int8 (compute.kv_cache_dtype): the demo's answers are generated through it, and part 2's
logits come from a forward that writes the prompt into an int8 cache and attends to
what it reads back, as a prefill does.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from dsvl_jax.config.files import load_config
from dsvl_jax.models import DeepseekVL, VLMConfig, quant_tree
from dsvl_jax.models.init import init_params
from dsvl_jax.models.llm import cache_dtype, init_cache

TARGETS = {
    "llm": ("llm/layers*/*_proj",),
    "all": ("llm/layers*/*_proj", "vision/*", "aligner/*"),
}


def quantised(cfg: VLMConfig, params, kind: str, targets: tuple[str, ...]):
  """(cfg, params) of `kind`: float32, bfloat16 (weights cast), or a quantised kind;
  with a "+kv8" suffix, an int8 KV cache too."""
  if kind.endswith("+kv8"):
    cfg, params = quantised(cfg, params, kind.removesuffix("+kv8"), targets)
    return cfg.replace(compute=dataclasses.replace(cfg.compute, kv_cache_dtype="int8")), params
  if kind == "float32":
    return cfg, params
  if kind == "bfloat16":
    return cfg, jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  q = dataclasses.replace(cfg.compute.quant, kind=kind, targets=targets)
  qcfg = cfg.replace(compute=dataclasses.replace(cfg.compute, quant=q))
  return qcfg, quant_tree.quantize_tree(params, qcfg)


def demo_accuracy(workdir: pathlib.Path, kinds: list[str], targets) -> list[tuple]:
  import dsvl_jax  # pylint: disable=g-import-not-at-top
  from dsvl_jax.eval.evaluator import Evaluator  # pylint: disable=g-import-not-at-top
  from dsvl_jax.processor.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  from dsvl_jax.recipes import demo  # pylint: disable=g-import-not-at-top

  config = load_config("configs/demo.py")
  model = dsvl_jax.load(str(workdir / "stage3"))
  tokenizer = Tokenizer.from_sentencepiece(workdir / "tokenizer.model", model.config)
  d = config.demo
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    folder = pathlib.Path(tmp)
    size = model.config.image_size
    items = demo.heldout_items(d.heldout_seed, d.heldout_scenes, size, folder)
    blank = demo.heldout_items(d.heldout_seed, d.heldout_scenes, size, folder, blank=True)
    demo.write_set(items, folder / "heldout.jsonl")
    demo.write_set(blank, folder / "blank.jsonl")
    sets = {"heldout": str(folder / "heldout.jsonl"), "blank": str(folder / "blank.jsonl")}
    for kind in kinds:
      cfg, params = quantised(model.config, model.params, kind, targets)
      res = Evaluator(cfg, tokenizer, config.eval, sets=sets)(params)
      h, b = res["heldout"], res["blank"]
      rows.append((kind, h["exact_match"], h["mc_accuracy"], b["exact_match"]))
  return rows


def mid_config(family: str) -> VLMConfig:
  spec = "configs/deepseek_vl_1_3b.py" if family == "siglip" else "configs/deepseek_vl_7b.py"
  cfg = VLMConfig.from_dict(load_config(spec).model)
  return cfg.replace(
      llm=dataclasses.replace(cfg.llm, num_layers=8 if family == "siglip" else 4),
      compute=dataclasses.replace(cfg.compute, dtype="float32", param_dtype="float32"),
  )


def agreement(family: str, kinds: list[str], prompts: int, targets) -> list[tuple]:
  """(kind, mean KL(float32 || kind) in nats, top-1 agreement) over text positions."""
  cfg = mid_config(family)
  params = init_params(cfg, jax.random.key(0))
  rng = np.random.default_rng(0)
  length = 1 + cfg.num_image_tokens + 32  # BOS, one image, 32 text tokens
  ids = rng.integers(1000, 20000, (prompts, length)).astype(np.int32)
  ids[:, 0] = cfg.bos_token_id
  ids[:, 1 : 1 + cfg.num_image_tokens] = cfg.image_token_id  # one image after BOS
  s = cfg.image_size
  images = jnp.asarray(rng.random((prompts, 1, 3, s, s), np.float32))
  text = slice(1 + cfg.num_image_tokens, length)

  def logits(c, p):
    def forward(p, i, im):
      if c.compute.kv_cache_dtype == "auto":
        return DeepseekVL(c).apply({"params": p}, i, im)["logits"]
      cache = init_cache(c.llm, prompts, length, cache_dtype(c.compute))
      mask, pos = jnp.ones_like(i), jnp.broadcast_to(jnp.arange(length), i.shape)
      return DeepseekVL(c).apply(
          {"params": p}, i, im, attention_mask=mask, positions=pos, cache=cache
      )["logits"]

    out = jax.jit(forward)
    return np.asarray(out(p, jnp.asarray(ids), images), np.float64)[:, text]

  ref = logits(cfg, params)
  logp = ref - np.logaddexp.reduce(ref, axis=-1, keepdims=True)
  rows = []
  for kind in kinds:
    if kind == "float32":
      continue
    c, p = quantised(cfg, params, kind, targets)
    got = logits(c, p)
    logq = got - np.logaddexp.reduce(got, axis=-1, keepdims=True)
    kl = float(np.mean(np.sum(np.exp(logp) * (logp - logq), axis=-1)))
    top1 = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    rows.append((kind, kl, top1))
  return rows


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--demo", default="", help="the demo's workdir ('' = skip part 1)")
  ap.add_argument("--families", default="siglip,hybrid", help="'' = skip part 2")
  ap.add_argument("--prompts", type=int, default=4)
  ap.add_argument("--kinds", default="int8,int4,nf4")
  ap.add_argument("--targets", default="llm", choices=sorted(TARGETS))
  args = ap.parse_args()
  kinds = ["float32", "bfloat16", *[k for k in args.kinds.split(",") if k]]
  targets = TARGETS[args.targets]
  print(f"host: {os.cpu_count()} CPUs; quantised: {', '.join(targets)}")
  if args.demo:
    print("\ndemo held-out (246 questions; chance 0.114):")
    print("| weights | exact match | multiple choice | blank images |")
    print("|---|---|---|---|")
    for kind, em, mc, blank in demo_accuracy(pathlib.Path(args.demo), kinds, targets):
      print(f"| {kind} | {em:.3f} | {mc:.3f} | {blank:.3f} |")
  for family in [f for f in args.families.split(",") if f]:
    print(f"\nmid {family} (random weights, {args.prompts} prompts with an image):")
    print("| weights | mean KL vs float32, nats | top-1 agreement |")
    print("|---|---|---|")
    for kind, kl, top1 in agreement(family, kinds, args.prompts, targets):
      print(f"| {kind} | {kl:.2e} | {top1:.3f} |")


if __name__ == "__main__":
  main()

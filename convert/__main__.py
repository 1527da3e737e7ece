"""python -m convert {import,export}: DeepSeek-VL checkpoints <-> dsvl_jax.

Layouts (detected from the tensor names and config.json on import):
  hf        transformers / deepseek-community: model.language_model.*, lm_head.weight,
            model.vision_model.[vision_model.]* (SigLIP, q/k/v split),
            model.high_res_vision_model.vision_encoder.* (SAM), model.aligner.*;
            config.json with text_config / vision_config / high_res_vision_config.
  original  the DeepSeek release: language_model.model.*, language_model.lm_head.weight,
            vision_model.vision_tower[_low|_high].vision_tower.* (fused qkv),
            aligner.layers.* / aligner.{high,low}_up_proj; config.json with
            language_config / vision_config{cls, params} / aligner_config.
Either may be one model.safetensors or shards listed in model.safetensors.index.json.
Pickle checkpoints (.bin/.pt) are refused: convert them to safetensors first.

Examples:
  python -m convert import --src deepseek-vl-7b-chat --dst ckpt/7b --dtype bfloat16
  python -m convert import --src deepseek-vl-7b-chat --dst ckpt/7b-int4 --quantize int4
  python -m convert export --src ckpt/7b-int4 --dst out/7b-deq --layout original  # float
  python -m convert export --src ckpt/7b --dst out/7b-hf --layout hf --shard-size 5GB
  python -m convert export --adapter --src out/lora-run --dst out/lora-peft   # PEFT folder
  python -m convert export --merge --src out/lora-run --dst out/merged-hf     # merged model
  python -m convert import --adapter --src my-peft-lora --base ckpt/7b --dst ckpt/7b-lora
"""

from __future__ import annotations

import argparse
import sys

from dsvl_jax.checkpoint.formats import (
    DTYPES,
    export_checkpoint,
    import_adapter,
    import_checkpoint,
)
from dsvl_jax.checkpoint.mapping import ConversionError
from dsvl_jax.models.quant import KINDS


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m convert",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("import", help="PyTorch safetensors directory -> dsvl_jax checkpoint")
  imp.add_argument("--src", required=True, help="checkpoint directory (either layout)")
  imp.add_argument("--dst", required=True, help="new directory for the orbax checkpoint")
  imp.add_argument("--dtype", default="float32", choices=DTYPES, help="parameter dtype")
  imp.add_argument(
      "--quantize",
      default="none",
      choices=("none", *KINDS),
      help="store the kernels model.compute.quant.targets names (the LLM's projections) "
      "quantised, each as it is read: the float model never exists in memory",
  )
  imp.add_argument(
      "--quant-block", type=int, default=64, help="values per scale along a kernel's last axis"
  )
  imp.add_argument(
      "--adapter",
      action="store_true",
      help="--src is a PEFT LoRA folder; --base the model it adapts (written together)",
  )
  imp.add_argument("--base", help="with --adapter: the base checkpoint (any kind)")
  exp = sub.add_parser("export", help="dsvl_jax checkpoint -> PyTorch safetensors directory")
  exp.add_argument("--src", required=True, help="our checkpoint (or a PyTorch directory)")
  exp.add_argument("--dst", required=True, help="new directory for safetensors + config.json")
  exp.add_argument("--layout", default="hf", choices=("hf", "original"))
  exp.add_argument("--shard-size", default="5GB", help="max bytes per file, e.g. 5GB, 500MB")
  exp.add_argument(
      "--dtype", default=None, choices=DTYPES, help="storage dtype (default: as stored in --src)"
  )
  mode = exp.add_mutually_exclusive_group()
  mode.add_argument(
      "--adapter", action="store_true", help="write the LoRA adapters alone, as a PEFT folder"
  )
  mode.add_argument(
      "--merge", action="store_true", help="write the model with its LoRA adapters merged"
  )
  for p in (imp, exp):
    p.add_argument("--quiet", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  try:
    if args.command == "import" and args.adapter:
      if not args.base:
        parser.error("import --adapter needs --base (the checkpoint the adapter was made for)")
      if args.quantize != "none":
        parser.error("import --adapter takes no --quantize (quantise when loading the model)")
      n = import_adapter(args.src, args.base, args.dst, dtype=args.dtype)
      print(f"imported a PEFT adapter ({n} adapted modules) on {args.base} into {args.dst}")
    elif args.command == "import":
      report = import_checkpoint(
          args.src,
          args.dst,
          dtype=args.dtype,
          progress=not args.quiet,
          quantize=args.quantize,
          quant_block=args.quant_block,
      )
      quantised = "" if args.quantize == "none" else f", {args.quantize} kernels"
      print(
          f"imported {report.num_tensors} tensors ({report.layout} layout{quantised}) "
          f"into {args.dst}"
      )
      if report.unused:
        print(
            f"skipped {len(report.unused)} tensors the model never uses: "
            f"{', '.join(report.unused[:20])}{' ...' if len(report.unused) > 20 else ''}"
        )
    else:
      files = export_checkpoint(
          args.src,
          args.dst,
          layout=args.layout,
          shard_size=args.shard_size,
          dtype=args.dtype,
          progress=not args.quiet,
          adapters="peft" if args.adapter else "merge" if args.merge else "refuse",
      )
      what = "a PEFT adapter" if args.adapter else f"{args.layout} layout"
      print(f"exported {what} to {args.dst}: {', '.join(files)}")
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Per-chip memory of serving a model on one TPU chip, compiled on this CPU host.

  python experiments/aot_serve.py --config=configs/deepseek_vl_7b.py --topology=v5e:1x1 \
      [--quantize=none,int8,int4] [--kv_cache_dtype=auto,int8] \
      [--config.serve.dtype=bfloat16 --config.serve.num_slots=8 --config.serve.max_len=4096]

Needs libtpu (requirements-test.txt); nothing is allocated: the server's own programs
(infer/slots.py: one prefill of a one-image prompt into a slot, one decode step of every
slot) are lowered from ShapeDtypeStructs of the loaded parameters (the tree
`serve.dtype` and each `--quantize` give, as the server would hold it) and of the slot
state (the KV cache of serve.num_slots x serve.max_len) on the chip's abstract device.
The server holds the weights and the state and runs one program at a time, so its peak
is weights + state + the larger program's temporaries (XLA's memory analysis); a program
that cannot fit is the compiler's RESOURCE_EXHAUSTED, quoted.

Also answers whether the chip dequantises inside the matmul: for each quantised kind, the
decode step's optimised HLO is read for where each kernel's codes are converted, inside
the fusion that holds its matmul or in one of their own (a float kernel written out).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<file>.py[:arg]")
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:1x1", "a one-chip TPU slice, e.g. v5e:1x1")
_QUANTIZE = flags.DEFINE_list("quantize", "none,int8", "weight kinds to compile for")
_KV = flags.DEFINE_list("kv_cache_dtype", "auto,int8", "KV cache dtypes to compile for")

GIB = 1 << 30


def _gib(n: float) -> str:
  return f"{n / GIB:.2f}"


def _bytes(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top

  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def dequant_placement(hlo: str) -> tuple[int, int]:
  """(quantised kernels dequantised only inside the outermost fusions that hold their
  matmul, kernels dequantised at least in part in a fusion without one: a float kernel
  written out) in optimised HLO text. A kernel's dequantisation is its converts of the
  codes, which models/layers.py `_quantized_kernel` names in the op metadata."""
  bodies = {}
  for block in re.split(r"\n(?=\S)", hlo):
    m = re.match(r"(?:ENTRY )?%?([\w.\-]+) ", block)
    if m:
      bodies[m.group(1)] = block
  calls = {name: set(re.findall(r"calls=%([\w.\-]+)", body)) for name, body in bodies.items()}
  fused = {c for cs in calls.values() for c in cs}
  nested = {c for name in fused for c in calls.get(name, ())}

  def closure(name: str) -> str:
    return bodies.get(name, "") + "".join(closure(c) for c in calls.get(name, ()))

  # Fusions called from the entry computation or a loop body (a scanned stack's layers).
  roots = {_entry(hlo)} | set(re.findall(r"body=%([\w.\-]+)", hlo))
  fused_in, apart = set(), set()
  for name in {c for r in roots for c in calls.get(r, ())} - nested:
    text = closure(name)
    kernels = set(re.findall(r"convert\(.*op_name=\"([^\"]*)\._quantized_kernel/", text))
    (fused_in if re.search(r" (dot|convolution)\(", text) else apart).update(kernels)
  return len(fused_in - apart), len(apart)


def _entry(hlo: str) -> str:
  m = re.search(r"^ENTRY %?([\w.\-]+) ", hlo, re.M)
  return m.group(1) if m else ""


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from dsvl_jax.checkpoint.formats import with_dtype  # pylint: disable=g-import-not-at-top
  from dsvl_jax.infer.sampling import SamplingConfig, row_values  # pylint: disable=g-import-not-at-top
  from dsvl_jax.infer.slots import SlotModel  # pylint: disable=g-import-not-at-top
  from dsvl_jax.models.config import VLMConfig  # pylint: disable=g-import-not-at-top
  from dsvl_jax.models.init import abstract_params  # pylint: disable=g-import-not-at-top
  from dsvl_jax.processor.batching import round_up  # pylint: disable=g-import-not-at-top
  from dsvl_jax.train.aot import topology_devices  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  serve = config.serve
  devices, chip = topology_devices(_TOPOLOGY.value)
  if len(devices) != 1:
    raise SystemExit(f"{_TOPOLOGY.value} has {len(devices)} chips; the slot engine runs on one")
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  on_chip = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  place = lambda t: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_chip), t
  )
  base = with_dtype(VLMConfig.from_dict(config.model), serve.dtype)
  b, s = serve.num_slots, serve.max_len
  print(
      f"{_TOPOLOGY.value} ({_gib(chip.hbm_bytes)} GiB HBM a chip): {b} slots x {s} positions, "
      f"params {serve.dtype}, prompt bucket {serve.prompt_bucket}"
  )
  rows, verdicts = [], []
  for kind, kv_dtype in itertools.product(_QUANTIZE.value, _KV.value):
    cfg = base.replace(compute=dataclasses.replace(base.compute, kv_cache_dtype=kv_dtype))
    if kind != "none":
      q = dataclasses.replace(cfg.compute.quant, kind=kind, block=serve.quant_block)
      cfg = cfg.replace(compute=dataclasses.replace(cfg.compute, quant=q))
    abstract = abstract_params(cfg)
    with jax.set_mesh(mesh):  # the model is laid out for the chip (inference_config)
      model = SlotModel(cfg, abstract, b, s)
      params, state = place(model.params), place(jax.eval_shape(model.init_state))
      t = round_up(cfg.num_image_tokens + 64, serve.prompt_bucket)
      n = cfg.image_size
      sds = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=on_chip)
      i32 = sds((), jnp.int32)
      programs = {
          "prefill": lambda: model._prefill.lower(  # pylint: disable=protected-access
              params,
              state,
              i32,
              sds((1, t), jnp.int32),
              sds((1, t), jnp.int32),
              sds((1, 3, n, n), jnp.float32),
              i32,
              i32,
              place(jax.eval_shape(lambda: row_values(SamplingConfig()))),
              sds((2,), jnp.uint32),
              i32,
          ),
          "decode": lambda: model._decode.lower(  # pylint: disable=protected-access
              params, state, sds((b,), jnp.bool_), rows=b
          ),
      }
      temps, refused, decode_hlo = {}, "", ""
      for name, lower in programs.items():
        try:
          compiled = lower().compile()
        except jax.errors.JaxRuntimeError as e:  # the compiler's own verdict, in its words
          if "RESOURCE_EXHAUSTED" not in str(e):
            raise
          refused = f"{name}: {str(e).splitlines()[0].split(': ', 1)[-1]}"
          break
        temps[name] = compiled.memory_analysis().temp_size_in_bytes
        if name == "decode":
          decode_hlo = compiled.as_text()
    weights, kv = _bytes(params), _bytes(state.cache)
    other = _bytes(state) - kv
    label = (serve.dtype if kind == "none" else f"{kind} (+ {serve.dtype})", kv_dtype)
    if refused:
      rows.append((*label, weights, kv, other, None, None, None, f"no ({refused})"))
      continue
    peak = weights + kv + other + max(temps.values())
    fits = "yes" if peak <= chip.hbm_bytes else "no"
    rows.append((*label, weights, kv, other, temps["prefill"], temps["decode"], peak, fits))
    if kind != "none" and kind not in [v[0] for v in verdicts]:
      verdicts.append((kind, *dequant_placement(decode_hlo)))
  print(
      "\n| weights | KV cache | weights GiB | KV cache GiB | other state GiB | "
      "prefill temps GiB | decode temps GiB | peak GiB | fits |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for label, kv_dtype, w, kv, o, tp, td, peak, fits in rows:
    cols = [_gib(x) if x is not None else "-" for x in (w, kv, o, tp, td, peak)]
    print(f"| {label} | {kv_dtype} | {' | '.join(cols)} | {fits} |")
  for kind, in_matmul, apart in verdicts:
    print(
        f"{kind} decode step on {_TOPOLOGY.value}: {in_matmul} quantised kernels dequantised "
        f"inside their matmul's fusion, {apart} in a fusion of their own (a float kernel "
        f"written out first)"
    )


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile for TPU; run nothing anywhere
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  flags.mark_flags_as_required(["config"])
  app.run(main)

"""Checkpoint directories: import PyTorch safetensors into our format, export back.

Nothing is ever written to a destination unless the whole conversion succeeded: work
happens in a hidden sibling folder that is renamed into place at the end (and removed
on failure), and an existing destination is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
from typing import Any, Iterator

import jax
import jax.numpy as jnp
from flax import traverse_util

from dsvl_jax.checkpoint import params_io, run_base
from dsvl_jax.checkpoint.adapters import from_peft, save_peft
from dsvl_jax.checkpoint.configs import from_json, to_hf, to_original
from dsvl_jax.checkpoint.convert import ImportReport, detect_layout, from_params, to_params
from dsvl_jax.checkpoint.mapping import ConversionError
from dsvl_jax.checkpoint.safetensors_io import SafetensorsSource, parse_size, write_safetensors
from dsvl_jax.models import lora, quant_tree
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.groups import group_of
from dsvl_jax.models.init import abstract_params

# Files that travel with the weights (tokenizer, processor, generation settings).
SIDECAR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
DTYPES = ("float32", "bfloat16", "float16")


def with_dtype(cfg: VLMConfig, dtype: str) -> VLMConfig:
  """Parameters stored in `dtype`; compute in bfloat16 for reduced precision, else fp32.

  float32 also asks for 'highest' matmul precision: on GPU/TPU the default would run
  float32 matmuls in TF32/bf16 passes, and whoever asks for float32 wants its numbers.
  """
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} not in {DTYPES}")
  exact = dtype == "float32"
  return cfg.replace(
      compute=dataclasses.replace(
          cfg.compute,
          param_dtype=dtype,
          dtype="float32" if exact else dtype,
          precision="highest" if exact else cfg.compute.precision,
      )
  )


def read_pytorch_dir(src: str | pathlib.Path) -> tuple[SafetensorsSource, str, VLMConfig]:
  """Opens a transformers or original-release directory: (tensors, layout, config)."""
  src = pathlib.Path(src)
  if not src.is_dir():
    raise ConversionError(f"{src} is not a directory")
  source = SafetensorsSource(src)
  layout = detect_layout(source.keys())
  if (src / params_io.CONFIG_NAME).exists():
    cfg = params_io.read_config(src)
  elif (src / "config.json").exists():
    try:
      config = json.loads((src / "config.json").read_text())
    except json.JSONDecodeError as e:
      raise ConversionError(f"unreadable {src / 'config.json'}: {e}") from e
    lm_head = "lm_head.weight" if layout == "hf" else "language_model.lm_head.weight"
    cfg = from_json(config, layout, has_lm_head=lm_head in source.keys())
  else:
    raise ConversionError(f"{src} has no config.json")
  return source, layout, cfg


class QuantizeError(ConversionError):
  """A `quantize` request that does not fit the checkpoint's model."""


def quantized_config(cfg: VLMConfig, kind: str, block: int) -> VLMConfig:
  """`cfg` with compute.quant's kind and block (quant_tree.with_quant); ConversionError
  (one line) when its kernels are quantised already or the kind, block or a kernel's
  shape does not fit. "none" returns `cfg`."""
  if kind == "none":
    return cfg
  try:
    return quant_tree.with_quant(cfg, kind, block)
  except ValueError as e:
    raise QuantizeError(f"cannot quantise to {kind} in blocks of {block}: {e}") from None


def read_any(
    src: str | pathlib.Path,
    dtype: str = "float32",
    shardings_fn=None,
    progress: bool = False,
    quantize: str = "none",
    quant_block: int = 64,
) -> tuple[VLMConfig, Any]:
  """(config, params) from our checkpoint (float or quantised) or a PyTorch directory of
  either layout.

  shardings_fn: cfg -> tree of shardings for the params (None: one device).
  quantize, quant_block: the kernels compute.quant.targets names quantised
  (quant_tree.with_quant) from their values at `dtype`: a PyTorch directory's as they
  are read (convert.to_params), our float checkpoint's one kernel at a time after it is
  restored; a checkpoint quantised already is refused (ConversionError).
  """
  src = pathlib.Path(src)
  if params_io.training_checkpoint(src) is None and not params_io.is_checkpoint(src):
    source, layout, cfg = read_pytorch_dir(src)
    try:
      cfg = quantized_config(with_dtype(cfg, dtype), quantize, quant_block)
      params, _ = to_params(
          source,
          cfg,
          layout,
          dtype=jnp.dtype(dtype),
          shardings=shardings_fn(cfg) if shardings_fn else None,
          progress=progress,
      )
    finally:
      source.close()
    return cfg, params
  cfg, params = _read_ours(src, dtype, shardings_fn)
  if quantize == "none":
    return cfg, params
  qcfg = quantized_config(cfg, quantize, quant_block)
  return qcfg, _quantize_placed(params, qcfg, shardings_fn(qcfg) if shardings_fn else None)


def _read_ours(src: pathlib.Path, dtype: str, shardings_fn) -> tuple[VLMConfig, Any]:
  """`read_any` of our checkpoint or a training run's (restored onto the abstract tree
  of its config at `dtype`)."""
  trained = params_io.training_checkpoint(src)
  params_dir, workdir = trained if trained is not None else (src / params_io.PARAMS_DIR, None)
  cfg = with_dtype(params_io.stored_config(src), dtype)
  shardings = shardings_fn(cfg) if shardings_fn else None
  target = params_io.abstract_like(abstract_params(cfg), jnp.dtype(dtype), shardings)
  ref = run_base.read(workdir) if trained is not None else None
  if ref is None:
    return cfg, params_io.restore_params_dir(params_dir, target)
  # A LoRA run: its trained leaves over the base it names (checkpoint/run_base.py).
  plain_fn = (lambda _: shardings_fn(run_base.plain(cfg))) if shardings_fn else None
  _, base = read_any(ref["path"], dtype, plain_fn)
  run_base.check(ref, base, workdir)
  return cfg, run_base.compose(cfg, base, params_dir, target)


def _quantize_placed(params: Any, cfg: VLMConfig, shardings: Any) -> dict:
  """quant_tree.quantize_tree(params, cfg) with each stored leaf placed by `shardings`
  (the quantised config's), and each float kernel deleted once its codes exist: the
  peak is the float tree plus one kernel's codes."""
  flat = traverse_util.flatten_dict(params, sep="/")
  placed = traverse_util.flatten_dict(shardings, sep="/") if shardings is not None else {}
  out = {}
  for path, value in quant_tree.quantize_leaves(params, cfg):
    module, _, leaf = path.rpartition("/")
    if path in placed:
      value = jax.device_put(value, placed[path])
    out[path] = value
    if leaf == "scale" and module.endswith("/kernel_q"):
      flat[module[: -len("/kernel_q")] + "/kernel"].delete()
  return traverse_util.unflatten_dict(out, sep="/")


@contextlib.contextmanager
def _staging(dst: pathlib.Path) -> Iterator[pathlib.Path]:
  """A hidden folder next to `dst`, renamed to `dst` only if the block succeeds."""
  dst = dst.absolute()
  if dst.exists():
    raise ConversionError(f"destination {dst} already exists; nothing was written")
  dst.parent.mkdir(parents=True, exist_ok=True)
  tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    yield tmp
    os.rename(tmp, dst)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _copy_sidecars(src: pathlib.Path, dst: pathlib.Path) -> list[str]:
  copied = []
  for name in SIDECAR_FILES:
    if (src / name).is_file():
      shutil.copy2(src / name, dst / name)
      copied.append(name)
  return copied


def import_checkpoint(
    src: str | pathlib.Path,
    dst: str | pathlib.Path,
    dtype: str = "float32",
    progress: bool = True,
    quantize: str = "none",
    quant_block: int = 64,
) -> ImportReport:
  """PyTorch directory (either layout, single or sharded) -> our orbax checkpoint.

  quantize (int8 | int4 | nf4), quant_block: the kernels compute.quant.targets names
  stored quantised (quant_tree.with_quant; the saved config says so), each quantised from
  its values at `dtype` as it is read, so the float model never exists in memory: the
  checkpoint equals quant_tree.quantize_tree of the float import at `dtype`.
  """
  src, dst = pathlib.Path(src), pathlib.Path(dst)
  source, layout, cfg = read_pytorch_dir(src)
  with _staging(dst) as tmp:
    try:
      cfg = quantized_config(with_dtype(cfg, dtype), quantize, quant_block)
      params, report = to_params(source, cfg, layout, dtype=jnp.dtype(dtype), progress=progress)
    finally:
      source.close()
    params_io.save(tmp, params, cfg)
    _copy_sidecars(src, tmp)
  return report


def export_checkpoint(
    src: str | pathlib.Path,
    dst: str | pathlib.Path,
    layout: str = "hf",
    shard_size: str = "5GB",
    dtype: str | None = None,
    progress: bool = True,
    adapters: str = "refuse",
) -> list[str]:
  """Our checkpoint, a training workdir or step (or a PyTorch directory) -> safetensors
  in `layout` + config.json. A quantised checkpoint is written as the float model it
  computes with (its kernels dequantised; the written configs without quantisation).

  dtype: storage dtype of the written tensors (default: as stored in `src`).
  adapters, for a checkpoint with LoRA adapters: "peft" writes them alone as a PEFT
  folder (checkpoint/adapters.py), "merge" the full model with them merged into its
  kernels; "refuse" (default) raises rather than drop them silently.
  """
  src, dst = pathlib.Path(src), pathlib.Path(dst)
  if layout not in ("hf", "original"):
    raise ValueError(f"layout must be 'hf' or 'original', got {layout!r}")
  limit = parse_size(shard_size)
  trained = params_io.training_checkpoint(src)
  # a training workdir or step: its tokenizer is in the workdir
  sidecar_dir = trained[1] if trained is not None else src
  stored = params_io.stored_config(src)  # None: a PyTorch directory, read as float32
  dtype = dtype or (stored.compute.param_dtype if stored is not None else "float32")
  cfg, params = read_any(src, dtype=dtype, progress=progress)
  rank = cfg.compute.lora.rank
  if adapters == "peft":
    if not rank:
      raise ConversionError(f"{src}: holds no LoRA adapters to export")
    # groups the run trained in full go along as PEFT's modules_to_save
    full = _trained_in_full(params, trained[1]) if trained is not None else []
    with _staging(dst) as tmp:
      return save_peft(params, cfg, tmp, base=str(src), full=tuple(full))
  if rank and adapters == "merge":
    cfg, params = lora.merged(params, cfg)
  elif rank:
    raise ConversionError(
        f"{src}: holds LoRA adapters; export them with --adapter (a PEFT folder) or the "
        f"model with them merged with --merge"
    )
  # Quantised kernels are written dequantised (from_params), one layer at a time.
  float_cfg = quant_tree.float_config(cfg)
  config = to_hf(float_cfg, dtype) if layout == "hf" else to_original(float_cfg, dtype)
  with _staging(dst) as tmp:
    tmp.mkdir()
    files = write_safetensors(from_params(params, cfg, layout, progress=progress), tmp, limit)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    params_io.write_config(tmp, float_cfg)
    files += ["config.json", params_io.CONFIG_NAME] + _copy_sidecars(sidecar_dir, tmp)
  return files


def _trained_in_full(params: Any, workdir: pathlib.Path) -> list[str]:
  """The groups a training run trained in full: those of its train.trainable that hold
  no adapters."""
  trainable = json.loads((workdir / params_io.RUN_CONFIG).read_text())["train"]["trainable"]
  adapted = {group_of(path) for path in lora.flatten(lora.split(params)[0])}
  return sorted(set(trainable) - adapted)


def import_adapter(
    src: str | pathlib.Path,
    base: str | pathlib.Path,
    dst: str | pathlib.Path,
    dtype: str = "float32",
) -> int:
  """A PEFT LoRA folder on `base` (any checkpoint `read_any` reads) -> our checkpoint
  holding both (its model config carries the adapter's compute.lora). Returns the
  number of adapted modules."""
  base_cfg, base_params = read_any(base, dtype=dtype)
  cfg, adapters = from_peft(src, base_cfg)
  with _staging(pathlib.Path(dst)) as tmp:
    params_io.save(tmp, lora.merge(base_params, adapters), cfg)
    sidecars = params_io.training_checkpoint(base)
    _copy_sidecars(sidecars[1] if sidecars else pathlib.Path(base), tmp)
  return len(lora.flatten(adapters)) // 2

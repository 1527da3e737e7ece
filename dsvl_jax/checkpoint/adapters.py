"""LoRA adapters in PEFT's format, both ways, and merged into the base.

A PEFT LoRA folder holds `adapter_config.json` (r, lora_alpha, target_modules, ...) and
`adapter_model.safetensors` with, per adapted torch Linear `<module>`,
`base_model.model.<module>.lora_A.weight` [r, in] and `...lora_B.weight` [out, r];
PEFT computes W x + (lora_alpha / r) B A x. Ours (models/lora.py) are `lora_a`
[*in, r] and `lora_b` [r, *out] beside the kernel, scanned layers stacked. Module names
are transformers' (the "hf" layout of mapping.py), so an adapter written here loads with
`peft.PeftModel.from_pretrained` onto `DeepseekVL(Hybrid)ForConditionalGeneration`.

Groups a LoRA run trained in full beside its adapters (the aligner, say) travel as
PEFT's `modules_to_save`: the module's tensors under `base_model.model.<its names>`.

Adaptable here: kernels that are one torch Linear (the LLM's projections, the aligner).
SigLIP's fused qkv is three torch Linears, and SAM's blocks have no transformers names
in PEFT's sense that we map, so adapters there are refused with the module named.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any

import numpy as np

from dsvl_jax.checkpoint.mapping import ConversionError, param_specs
from dsvl_jax.models import lora
from dsvl_jax.models.config import LoraConfig, VLMConfig
from dsvl_jax.models.groups import group_of

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."  # PEFT's prefix of the wrapped model's module names
# PEFT options that change what the weights mean; an adapter using one is refused.
_UNSUPPORTED = {
    "use_dora": False,
    "use_rslora": False,
    "fan_in_fan_out": False,
    "bias": "none",
    "layers_to_transform": None,
    "rank_pattern": {},
    "alpha_pattern": {},
}


def linear_modules(cfg: VLMConfig) -> dict[str, tuple[list[str], bool]]:
  """Our Dense module path ('llm/layers/q_proj') -> (its transformers module name per
  stacked layer, or one name; whether stacked), for kernels that are one torch Linear."""
  out = {}
  for spec in param_specs(cfg, "hf"):
    keys = spec.keys
    if spec.path[-1] != "kernel" or any(len(k) != 1 for k in keys):
      continue
    if not all(k[0].endswith(".weight") for k in keys):
      continue
    out["/".join(spec.path[:-1])] = ([k[0][: -len(".weight")] for k in keys], spec.stacked)
  return out


def _by_module(adapters: Any) -> dict[str, dict[str, np.ndarray]]:
  flat = lora.flatten(adapters)
  modules: dict[str, dict[str, np.ndarray]] = {}
  for path, value in flat.items():
    module, leaf = path.rsplit("/", 1)
    modules.setdefault(module, {})[leaf] = np.asarray(value, np.float32)
  return modules


def _group_specs(cfg: VLMConfig, group: str) -> tuple[str, list]:
  """(the transformers module holding parameter group `group`, the group's ParamSpecs):
  the module PEFT's modules_to_save names for a group trained in full."""
  specs = [s for s in param_specs(cfg, "hf") if group_of("/".join(s.path)) == group]
  modules = [k.rsplit(".", 1)[0].split(".") for s in specs for ks in s.keys for k in ks]
  common = []
  for parts in zip(*modules):
    if len(set(parts)) > 1:
      break
    common.append(parts[0])
  if len(common) < 2:  # "model" alone would save the whole model
    raise ConversionError(f"group {group!r} is no single transformers module PEFT could save")
  return ".".join(common), specs


def to_peft(
    params: Any, cfg: VLMConfig, full: tuple[str, ...] = ()
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(PEFT tensors, adapter_config.json) of the adapters in `params`, and of the groups
  `full` trained in full beside them as PEFT's `modules_to_save` (their modules'
  tensors under transformers' names, as PEFT saves a ModulesToSaveWrapper)."""
  rank, index = cfg.compute.lora.rank, linear_modules(cfg)
  tensors, names, saved = {}, [], []
  flat = lora.flatten(params)
  for group in full:
    module, specs = _group_specs(cfg, group)
    saved.append(module)
    for spec in specs:
      value = np.asarray(flat["/".join(spec.path)], np.float32)
      for ks, v in zip(spec.keys, list(value) if spec.stacked else [value]):
        for k, t in zip(ks, spec.transform.to_torch(np, v)):
          tensors[PREFIX + k] = np.ascontiguousarray(t)
  for module, leaves in sorted(_by_module(lora.split(params)[0]).items()):
    if module not in index:
      raise ConversionError(
          f"adapter on {module}: not one torch Linear, PEFT has no equivalent (adapt the "
          f"LLM's projections or the aligner)"
      )
    torch_names, stacked = index[module]
    for i, name in enumerate(torch_names):
      a = leaves["lora_a"][i] if stacked else leaves["lora_a"]
      b = leaves["lora_b"][i] if stacked else leaves["lora_b"]
      tensors[f"{PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, rank).T)
      tensors[f"{PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(b.reshape(rank, -1).T)
      names.append(name)
  if not names:
    raise ConversionError("the checkpoint holds no adapters (model.compute.lora.rank is 0)")
  config = {
      "peft_type": "LORA",
      "r": rank,
      "lora_alpha": cfg.compute.lora.alpha,
      # A full match of exactly the adapted modules (a list of names would also match
      # SigLIP's q_proj, say, by suffix).
      "target_modules": "|".join(re.escape(n) for n in names),
      "lora_dropout": cfg.compute.lora.dropout,
      "task_type": None,
      "inference_mode": True,
      "init_lora_weights": True,
      "modules_to_save": saved or None,
      **_UNSUPPORTED,
  }
  return tensors, config


def save_peft(
    params: Any,
    cfg: VLMConfig,
    dst: str | pathlib.Path,
    base: str = "",
    full: tuple[str, ...] = (),
) -> list[str]:
  """Writes a PEFT adapter folder `dst` (new); base: its base_model_name_or_path; full:
  groups trained in full, saved as modules_to_save (`to_peft`)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  tensors, config = to_peft(params, cfg, full)
  dst = pathlib.Path(dst)
  dst.mkdir(parents=True)
  save_file(tensors, str(dst / WEIGHTS_FILE), metadata={"format": "pt"})
  (dst / CONFIG_FILE).write_text(json.dumps({**config, "base_model_name_or_path": base}, indent=2))
  return [WEIGHTS_FILE, CONFIG_FILE]


def _check_config(config: dict, src: pathlib.Path) -> None:
  if config.get("peft_type") != "LORA":
    raise ConversionError(f"{src / CONFIG_FILE}: peft_type {config.get('peft_type')!r}, not LORA")
  for key, plain in _UNSUPPORTED.items():
    if config.get(key) not in (plain, None) and not (plain == {} and not config.get(key)):
      raise ConversionError(f"{src / CONFIG_FILE}: {key}={config[key]!r} is not supported")


def from_peft(src: str | pathlib.Path, base_cfg: VLMConfig) -> tuple[VLMConfig, dict]:
  """(base_cfg with the adapter's compute.lora, the adapter tree) of a PEFT folder. A
  stacked layer the adapter does not cover gets B = 0 (unchanged, as in PEFT)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

  from dsvl_jax.models.init import abstract_params  # pylint: disable=g-import-not-at-top

  src = pathlib.Path(src)
  try:
    config = json.loads((src / CONFIG_FILE).read_text())
    tensors = load_file(str(src / WEIGHTS_FILE))
  except (OSError, ValueError) as e:
    raise ConversionError(f"{src}: not a PEFT adapter folder ({e})") from e
  _check_config(config, src)
  rank = int(config["r"])
  where = {}  # transformers module name -> (our module, layer or None)
  for module, (names, stacked) in linear_modules(base_cfg).items():
    where.update({n: (module, i if stacked else None) for i, n in enumerate(names)})
  found: dict[tuple[str, int | None], dict[str, np.ndarray]] = {}
  whole = {}  # modules_to_save: transformers key -> tensor
  for key, value in tensors.items():
    m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
    if m is None and key.startswith(PREFIX) and config.get("modules_to_save"):
      whole[key[len(PREFIX) :]] = value
      continue
    if m is None or m.group(1) not in where:
      raise ConversionError(
          f"{src / WEIGHTS_FILE}: {key} adapts no linear module of this model that we map "
          f"(adaptable: the LLM's projections and the aligner)"
      )
    found.setdefault(where[m.group(1)], {})[m.group(2)] = value
  modules = sorted({module for module, _ in found})
  targets = tuple(p.replace("llm/layers/", "llm/layers*/") for p in modules)
  dropout = float(config.get("lora_dropout") or 0.0)
  lora_cfg = LoraConfig(
      rank=rank, alpha=float(config["lora_alpha"]), targets=targets, dropout=dropout
  )
  cfg = base_cfg.replace(compute=dataclasses.replace(base_cfg.compute, lora=lora_cfg)).validate()
  shapes = lora.flatten(lora.split(abstract_params(cfg))[0])
  flat = {k: np.zeros(v.shape, np.float32) for k, v in shapes.items()}
  for (module, layer), ab in found.items():
    a_path, b_path = f"{module}/lora_a", f"{module}/lora_b"
    a_shape = shapes[a_path].shape[1:] if layer is not None else shapes[a_path].shape
    b_shape = shapes[b_path].shape[1:] if layer is not None else shapes[b_path].shape
    if set(ab) != {"A", "B"}:
      raise ConversionError(
          f"{src / WEIGHTS_FILE}: {module} layer {layer}: lora_A or lora_B missing"
      )
    a, b = ab["A"].T, ab["B"].T  # [in, r], [r, out]
    if a.size != np.prod(a_shape) or b.size != np.prod(b_shape) or a.shape[-1] != rank:
      raise ConversionError(
          f"{src / WEIGHTS_FILE}: {module} layer {layer}: lora_A {ab['A'].shape} / lora_B "
          f"{ab['B'].shape} do not fit rank {rank} and the module's {a_shape} / {b_shape}"
      )
    for path, value, shape in ((a_path, a, a_shape), (b_path, b, b_shape)):
      if layer is None:
        flat[path] = value.reshape(shape).astype(np.float32)
      else:
        flat[path][layer] = value.reshape(shape)
  flat.update(_saved_modules(whole, base_cfg, src))
  return cfg, lora.unflatten(flat)


def _saved_modules(whole: dict[str, np.ndarray], cfg: VLMConfig, src: pathlib.Path) -> dict:
  """Our leaves ('aligner/...') of a PEFT folder's modules_to_save tensors; every
  tensor must be a parameter of the model, and a parameter is read whole or not at all."""
  out, used = {}, set()
  for spec in param_specs(cfg, "hf"):
    keys = [k for ks in spec.keys for k in ks]
    present = [k in whole for k in keys]
    if not any(present):
      continue
    if not all(present):
      missing = next(k for k, p in zip(keys, present) if not p)
      raise ConversionError(f"{src / WEIGHTS_FILE}: modules_to_save lacks {missing}")
    layers = [spec.transform.to_flax(np, *[whole[k] for k in ks]) for ks in spec.keys]
    out["/".join(spec.path)] = np.asarray(np.stack(layers) if spec.stacked else layers[0])
    used.update(keys)
  if unknown := sorted(set(whole) - used):
    raise ConversionError(
        f"{src / WEIGHTS_FILE}: {PREFIX}{unknown[0]} is no parameter of this model"
        + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
    )
  return {k: v.astype(np.float32) for k, v in out.items()}

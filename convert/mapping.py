"""PyTorch state dict <-> Flax parameter tree, as one table of reversible rules.

`param_specs(cfg, layout)` lists, for every leaf of our parameter tree, the PyTorch
key(s) it comes from and a reversible transform (reference 2.6: Linear weights are
transposed and reshaped to our [in..., out...] kernels, Conv2d weights permuted to
[kh, kw, in, out], SigLIP's split q/k/v fused back, position embeddings squeezed).
Scanned blocks are stacked: a spec lists one key tuple per layer.

Layouts: 'hf' (transformers / deepseek-community). The 'original' DeepSeek layout is
another key table over the same transforms.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.sam import block_period

Path = tuple[str, ...]


class ConversionError(ValueError):
  """A checkpoint does not match the model: names the keys and shapes involved."""


# ---------------------------------------------------------------------------------------
# Reversible transforms. Each works on numpy (conversion) and jax.numpy (eval_shape, to
# derive the PyTorch shapes a model expects) through the `xp` argument.


@dataclasses.dataclass(frozen=True)
class Transform:
  to_flax: Callable[..., Any]  # (xp, *torch_arrays) -> flax array
  to_torch: Callable[..., tuple]  # (xp, flax_array) -> tuple of torch arrays


def identity() -> Transform:
  return Transform(lambda xp, w: w, lambda xp, a: (a,))


def reshape(flax_shape: tuple[int, ...], torch_shape: tuple[int, ...]) -> Transform:
  return Transform(lambda xp, w: w.reshape(flax_shape), lambda xp, a: (a.reshape(torch_shape),))


def linear(kernel_shape: tuple[int, ...], n_in: int = 1) -> Transform:
  """torch Linear weight [out, in] <-> kernel [*in_dims, *out_dims] (n_in leading dims)."""
  n_in_flat = int(np.prod(kernel_shape[:n_in]))
  return Transform(
      lambda xp, w: w.T.reshape(kernel_shape),
      lambda xp, a: (a.reshape(n_in_flat, -1).T,))


def bias(shape: tuple[int, ...]) -> Transform:
  return Transform(lambda xp, b: b.reshape(shape), lambda xp, a: (a.reshape(-1),))


def conv() -> Transform:
  """torch Conv2d [O, I, kh, kw] <-> flax [kh, kw, I, O]."""
  return Transform(lambda xp, w: w.transpose(2, 3, 1, 0), lambda xp, a: (a.transpose(3, 2, 0, 1),))


def split_qkv_kernel(d: int, heads: int, head_dim: int) -> Transform:
  """Three torch [H*Dh, D] weights (q, k, v) <-> fused kernel [D, 3, H, Dh]."""
  return Transform(
      lambda xp, q, k, v: xp.stack([w.T.reshape(d, heads, head_dim) for w in (q, k, v)], axis=1),
      lambda xp, a: tuple(a[:, i].reshape(d, heads * head_dim).T for i in range(3)))


def split_qkv_bias(heads: int, head_dim: int) -> Transform:
  return Transform(
      lambda xp, q, k, v: xp.stack([b.reshape(heads, head_dim) for b in (q, k, v)], axis=0),
      lambda xp, a: tuple(a[i].reshape(-1) for i in range(3)))


# ---------------------------------------------------------------------------------------
# The table.


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  """One Flax leaf and where it lives in a PyTorch state dict.

  keys: one tuple of torch keys per stacked layer (a single tuple if not stacked).
  """
  path: Path
  keys: tuple[tuple[str, ...], ...]
  transform: Transform
  stacked: bool = False


class _Builder:

  def __init__(self):
    self.specs: list[ParamSpec] = []

  def add(self, path: str, keys: str | Iterable[str], transform: Transform) -> None:
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    self.specs.append(ParamSpec(tuple(path.split("/")), (keys,), transform))

  def stack(self, path: str, layer_keys: Iterable[Iterable[str]], transform: Transform) -> None:
    self.specs.append(ParamSpec(tuple(path.split("/")), tuple(tuple(k) for k in layer_keys),
                                transform, stacked=True))

  def norm(self, path: str, key: str) -> None:
    self.add(f"{path}/scale", f"{key}.weight", identity())
    self.add(f"{path}/bias", f"{key}.bias", identity())

  def stacked_norm(self, path: str, keys: list[str]) -> None:
    self.stack(f"{path}/scale", [[f"{k}.weight"] for k in keys], identity())
    self.stack(f"{path}/bias", [[f"{k}.bias"] for k in keys], identity())

  def stacked_linear(self, path: str, keys: list[str], kernel_shape, n_in: int = 1,
                     with_bias: bool = True) -> None:
    self.stack(f"{path}/kernel", [[f"{k}.weight"] for k in keys], linear(kernel_shape, n_in))
    if with_bias:
      out_shape = tuple(kernel_shape[n_in:])
      self.stack(f"{path}/bias", [[f"{k}.bias"] for k in keys], bias(out_shape))


def _llm_specs(b: _Builder, cfg: VLMConfig, prefix: str, lm_head_key: str) -> None:
  c = cfg.llm
  d, h, kvh, hd, f = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size
  layer = [f"{prefix}layers.{i}." for i in range(c.num_layers)]
  b.add("llm/embed_tokens/embedding", f"{prefix}embed_tokens.weight", identity())
  for name, shape in (("q_proj", (d, h, hd)), ("k_proj", (d, kvh, hd)), ("v_proj", (d, kvh, hd))):
    b.stacked_linear(f"llm/layers/{name}", [f"{p}self_attn.{name}" for p in layer], shape,
                     with_bias=False)
  b.stacked_linear("llm/layers/o_proj", [f"{p}self_attn.o_proj" for p in layer], (h, hd, d),
                   n_in=2, with_bias=False)
  for name, shape in (("gate_proj", (d, f)), ("up_proj", (d, f)), ("down_proj", (f, d))):
    b.stacked_linear(f"llm/layers/{name}", [f"{p}mlp.{name}" for p in layer], shape,
                     with_bias=False)
  b.stack("llm/layers/input_norm/scale", [[f"{p}input_layernorm.weight"] for p in layer],
          identity())
  b.stack("llm/layers/post_attention_norm/scale",
          [[f"{p}post_attention_layernorm.weight"] for p in layer], identity())
  b.add("llm/norm/scale", f"{prefix}norm.weight", identity())
  if not c.tie_embeddings:
    b.add("llm/lm_head/kernel", lm_head_key, linear((d, c.vocab_size)))


def _siglip_specs_hf(b: _Builder, cfg: VLMConfig, root: str, prefix: str) -> None:
  s = cfg.siglip
  d, h, hd = s.width, s.num_heads, s.width // s.num_heads
  layer = [f"{prefix}encoder.layers.{i}." for i in range(s.num_blocks)]
  b.add(f"{root}/patch_embed/kernel", f"{prefix}embeddings.patch_embedding.weight", conv())
  b.add(f"{root}/patch_embed/bias", f"{prefix}embeddings.patch_embedding.bias", identity())
  b.add(f"{root}/pos_embed", f"{prefix}embeddings.position_embedding.weight",
        reshape((s.num_tokens, d), (s.num_tokens, d)))
  b.stack(f"{root}/blocks/attn/qkv/kernel",
          [[f"{p}self_attn.{n}_proj.weight" for n in "qkv"] for p in layer],
          split_qkv_kernel(d, h, hd))
  b.stack(f"{root}/blocks/attn/qkv/bias",
          [[f"{p}self_attn.{n}_proj.bias" for n in "qkv"] for p in layer], split_qkv_bias(h, hd))
  b.stacked_linear(f"{root}/blocks/attn/proj", [f"{p}self_attn.out_proj" for p in layer],
                   (h, hd, d), n_in=2)
  b.stacked_norm(f"{root}/blocks/norm1", [f"{p}layer_norm1" for p in layer])
  b.stacked_norm(f"{root}/blocks/norm2", [f"{p}layer_norm2" for p in layer])
  b.stacked_linear(f"{root}/blocks/mlp/fc1", [f"{p}mlp.fc1" for p in layer], (d, s.mlp_dim))
  b.stacked_linear(f"{root}/blocks/mlp/fc2", [f"{p}mlp.fc2" for p in layer], (s.mlp_dim, d))
  b.norm(f"{root}/norm", f"{prefix}post_layernorm")


def _sam_specs_hf(b: _Builder, cfg: VLMConfig) -> None:
  s = cfg.sam
  d, h, hd = s.width, s.num_heads, s.width // s.num_heads
  root, enc = "vision/sam", "model.high_res_vision_model.vision_encoder."
  b.add(f"{root}/patch_embed/kernel", f"{enc}patch_embed.projection.weight", conv())
  b.add(f"{root}/patch_embed/bias", f"{enc}patch_embed.projection.bias", identity())
  b.add(f"{root}/pos_embed", f"{enc}pos_embed", reshape((s.grid, s.grid, d), (1, s.grid, s.grid, d)))
  p = block_period(s)
  for sub in range(p):
    blk = f"{root}/blocks/block_{sub}"
    layer = [f"{enc}layers.{g * p + sub}." for g in range(s.depth // p)]
    b.stack(f"{blk}/attn/qkv/kernel", [[f"{x}attn.qkv.weight"] for x in layer],
            linear((d, 3, h, hd)))
    b.stack(f"{blk}/attn/qkv/bias", [[f"{x}attn.qkv.bias"] for x in layer], bias((3, h, hd)))
    b.stacked_linear(f"{blk}/attn/proj", [f"{x}attn.proj" for x in layer], (h, hd, d), n_in=2)
    for t in ("rel_pos_h", "rel_pos_w"):
      b.stack(f"{blk}/attn/{t}", [[f"{x}attn.{t}"] for x in layer], identity())
    b.stacked_norm(f"{blk}/norm1", [f"{x}layer_norm1" for x in layer])
    b.stacked_norm(f"{blk}/norm2", [f"{x}layer_norm2" for x in layer])
    b.stacked_linear(f"{blk}/mlp/lin1", [f"{x}mlp.lin1" for x in layer], (d, s.mlp_dim))
    b.stacked_linear(f"{blk}/mlp/lin2", [f"{x}mlp.lin2" for x in layer], (s.mlp_dim, d))
  necks = [("neck", f"{enc}neck.")]
  if s.hd_branch:
    necks.append(("neck_hd", "model.high_res_vision_neck."))
  for name, key in necks:
    b.add(f"{root}/{name}/conv1/kernel", f"{key}conv1.weight", conv())
    b.add(f"{root}/{name}/conv2/kernel", f"{key}conv2.weight", conv())
    b.norm(f"{root}/{name}/norm1", f"{key}layer_norm1")
    b.norm(f"{root}/{name}/norm2", f"{key}layer_norm2")
  for i in range(len(s.downsample_channels)):
    b.add(f"{root}/downsample_{i}/kernel", f"model.high_res_vision_proj.conv{i + 1}.weight", conv())
  if s.hd_branch:
    b.add(f"{root}/hd_alpha", "model.high_res_vision_alpha", identity())


def _aligner_specs_hf(b: _Builder, cfg: VLMConfig) -> None:
  d = cfg.llm.hidden_size

  def dense(path, key, din, dout):
    b.add(f"aligner/{path}/kernel", f"model.aligner.{key}.weight", linear((din, dout)))
    b.add(f"aligner/{path}/bias", f"model.aligner.{key}.bias", identity())

  if cfg.hybrid:
    dense("high_up_proj", "high_res_vision_proj", cfg.sam.output_dim, d // 2)
    dense("low_up_proj", "vision_proj", cfg.siglip.width, d // 2)
    dense("proj", "proj", d, d)
  else:
    if cfg.aligner.depth != 2:
      raise ConversionError("the transformers layout has a 2-layer aligner "
                            f"(linear1, linear2); this model has depth {cfg.aligner.depth}")
    dense("linear_0", "linear1", cfg.siglip.width, d)
    dense("linear_1", "linear2", d, d)


HF_SIGLIP_PREFIXES = ("model.vision_model.vision_model.", "model.vision_model.")


def param_specs(cfg: VLMConfig, layout: str = "hf", *,
                siglip_prefix: str = "model.vision_model.") -> list[ParamSpec]:
  """All ParamSpecs of `cfg` for a checkpoint layout.

  siglip_prefix: transformers 4.x wrote 'model.vision_model.vision_model.', 5.x writes
  'model.vision_model.'; `state_dict_to_params` detects which one a file uses.
  """
  if layout != "hf":
    raise ValueError(f"unknown checkpoint layout {layout!r}")
  b = _Builder()
  _llm_specs(b, cfg, "model.language_model.", "lm_head.weight")
  _siglip_specs_hf(b, cfg, "vision/siglip", siglip_prefix)
  if cfg.hybrid:
    _sam_specs_hf(b, cfg)
  _aligner_specs_hf(b, cfg)
  return b.specs


# Tensors a checkpoint may carry that the model does not use (reported, not loaded).
KNOWN_UNUSED_SUFFIXES = ("rotary_emb.inv_freq",)


# ---------------------------------------------------------------------------------------
# Conversion.


def _set(tree: dict, path: Path, value: Any) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: Path) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def detect_siglip_prefix(keys: Iterable[str]) -> str:
  keys = list(keys)
  for prefix in HF_SIGLIP_PREFIXES:
    if any(k.startswith(prefix + "embeddings.") for k in keys):
      return prefix
  return HF_SIGLIP_PREFIXES[-1]


def expected_shapes(cfg: VLMConfig) -> dict[Path, tuple[int, ...]]:
  """Shapes of every parameter leaf, from jax.eval_shape (nothing allocated)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  from dsvl_jax.models.init import abstract_params  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(abstract_params(cfg))
  return {k: tuple(v.shape) for k, v in flat.items()}


def state_dict_to_params(state: Mapping[str, Any], cfg: VLMConfig, layout: str = "hf",
                         dtype: Any = np.float32) -> tuple[dict, list[str]]:
  """Converts a PyTorch-layout mapping key -> array into our parameter tree.

  `state` values may be numpy arrays or anything np.asarray accepts (torch tensors on
  CPU). Returns (params as nested dict of numpy arrays, known-unused keys skipped).
  Raises ConversionError naming every missing or unexpected key, or a shape mismatch.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  specs = param_specs(cfg, layout, siglip_prefix=detect_siglip_prefix(state.keys()))
  wanted = {k for s in specs for keys in s.keys for k in keys}
  missing = sorted(wanted - set(state))
  extra = sorted(set(state) - wanted)
  unused = [k for k in extra if k.endswith(KNOWN_UNUSED_SUFFIXES)]
  unexpected = [k for k in extra if k not in unused]
  if missing or unexpected:
    msg = []
    if missing:
      msg.append(f"{len(missing)} missing key(s): {missing}")
    if unexpected:
      msg.append(f"{len(unexpected)} unexpected key(s): {unexpected}")
    raise ConversionError("checkpoint does not match the model config: " + "; ".join(msg))

  shapes = expected_shapes(cfg)
  params: dict = {}
  for spec in specs:
    want = shapes[spec.path][1:] if spec.stacked else shapes[spec.path]
    torch_shapes = jax.eval_shape(lambda a: spec.transform.to_torch(jnp, a),
                                  jax.ShapeDtypeStruct(want, jnp.float32))
    layers = []
    for keys in spec.keys:
      arrays = [np.asarray(state[k]) for k in keys]
      for k, a, t in zip(keys, arrays, torch_shapes):
        if tuple(a.shape) != tuple(t.shape):
          raise ConversionError(f"shape mismatch for '{k}': expected {tuple(t.shape)}, "
                                f"found {tuple(a.shape)} (-> {'/'.join(spec.path)})")
      layers.append(np.asarray(spec.transform.to_flax(np, *arrays), dtype=dtype))
    _set(params, spec.path, np.stack(layers) if spec.stacked else layers[0])
  return params, unused


def params_to_state_dict(params: Mapping, cfg: VLMConfig, layout: str = "hf",
                         siglip_prefix: str = "model.vision_model.") -> dict[str, np.ndarray]:
  """The inverse of `state_dict_to_params`: our tree -> PyTorch-layout numpy arrays."""
  state = {}
  for spec in param_specs(cfg, layout, siglip_prefix=siglip_prefix):
    value = np.asarray(_get(params, spec.path))
    per_layer = list(value) if spec.stacked else [value]
    for keys, v in zip(spec.keys, per_layer):
      for k, t in zip(keys, spec.transform.to_torch(np, v)):
        state[k] = np.ascontiguousarray(t)
  return state

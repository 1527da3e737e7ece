"""PyTorch state dict <-> Flax parameter tree, as one table of reversible rules.

`param_specs(cfg, layout)` lists, for every leaf of our parameter tree, the PyTorch
key(s) it comes from and a reversible transform (reference 2.6: Linear weights are
transposed and reshaped to our [in..., out...] kernels, Conv2d weights permuted to
[kh, kw, in, out], SigLIP's split q/k/v fused back, position embeddings squeezed).
Scanned blocks are stacked: a spec lists one key tuple per layer.

Layouts: 'hf' (transformers / deepseek-community) and 'original' (the DeepSeek release);
each is a `Layout` of key names over the same transforms. Reading and writing files is
in dsvl_jax/checkpoint/safetensors_io.py; the streaming conversion itself in dsvl_jax/checkpoint/convert.py.
"""

from __future__ import annotations

import dataclasses
import re
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
      lambda xp, w: w.T.reshape(kernel_shape), lambda xp, a: (a.reshape(n_in_flat, -1).T,)
  )


def bias(shape: tuple[int, ...]) -> Transform:
  return Transform(lambda xp, b: b.reshape(shape), lambda xp, a: (a.reshape(-1),))


def conv() -> Transform:
  """torch Conv2d [O, I, kh, kw] <-> flax [kh, kw, I, O]."""
  return Transform(lambda xp, w: w.transpose(2, 3, 1, 0), lambda xp, a: (a.transpose(3, 2, 0, 1),))


def split_qkv_kernel(d: int, heads: int, head_dim: int) -> Transform:
  """Three torch [H*Dh, D] weights (q, k, v) <-> fused kernel [D, 3, H, Dh]."""
  return Transform(
      lambda xp, q, k, v: xp.stack([w.T.reshape(d, heads, head_dim) for w in (q, k, v)], axis=1),
      lambda xp, a: tuple(a[:, i].reshape(d, heads * head_dim).T for i in range(3)),
  )


def split_qkv_bias(heads: int, head_dim: int) -> Transform:
  return Transform(
      lambda xp, q, k, v: xp.stack([b.reshape(heads, head_dim) for b in (q, k, v)], axis=0),
      lambda xp, a: tuple(a[i].reshape(-1) for i in range(3)),
  )


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
    self.specs.append(
        ParamSpec(
            tuple(path.split("/")), tuple(tuple(k) for k in layer_keys), transform, stacked=True
        )
    )

  def norm(self, path: str, key: str) -> None:
    self.add(f"{path}/scale", f"{key}.weight", identity())
    self.add(f"{path}/bias", f"{key}.bias", identity())

  def stacked_norm(self, path: str, keys: list[str]) -> None:
    self.stack(f"{path}/scale", [[f"{k}.weight"] for k in keys], identity())
    self.stack(f"{path}/bias", [[f"{k}.bias"] for k in keys], identity())

  def stacked_linear(
      self, path: str, keys: list[str], kernel_shape, n_in: int = 1, with_bias: bool = True
  ) -> None:
    self.stack(f"{path}/kernel", [[f"{k}.weight"] for k in keys], linear(kernel_shape, n_in))
    if with_bias:
      out_shape = tuple(kernel_shape[n_in:])
      self.stack(f"{path}/bias", [[f"{k}.bias"] for k in keys], bias(out_shape))


@dataclasses.dataclass(frozen=True)
class Layout:
  """Key names of one checkpoint layout (reference 2.1-2.3)."""

  name: str
  llm: str  # prefix of the decoder (embed_tokens, layers.{i}, norm)
  lm_head: str
  siglip: str  # SigLIP prefix, 1.3B family
  siglip_hybrid: str  # SigLIP prefix, 7B family
  siglip_names: dict  # relative SigLIP names
  sam: str  # SAM encoder prefix
  sam_names: dict  # relative SAM block names
  neck: tuple[str, str, str, str]  # conv1, norm1, conv2, norm2 (relative to `sam`)
  neck_hd: tuple[str, str, str, str]  # absolute
  downsample: str  # absolute, formatted with n = 0, 1, ...
  hd_alpha: str  # absolute
  aligner: dict  # our aligner leaf -> key prefix; `linear` formatted with k1 = k + 1, two_k = 2k
  unused: tuple[str, ...]  # regexes of tensors the model never uses (skipped, reported)


_ORIG_SAM = "vision_model.vision_tower_high.vision_tower."
_HF_NECK = ("conv1", "layer_norm1", "conv2", "layer_norm2")


def _layouts(**fields) -> tuple[Layout, Layout]:
  """(HF, ORIGINAL) from Layout fields given as (hf, original) pairs, also inside dicts."""

  def column(value, i):
    return {k: column(v, i) for k, v in value.items()} if isinstance(value, dict) else value[i]

  hf, original = (
      Layout(name=name, **{k: column(v, i) for k, v in fields.items()})
      for i, name in enumerate(("hf", "original"))
  )
  return hf, original


# Every field is (hf, original), side by side.
HF, ORIGINAL = _layouts(
    llm=("model.language_model.", "language_model.model."),
    lm_head=("lm_head.weight", "language_model.lm_head.weight"),
    siglip=("model.vision_model.", "vision_model.vision_tower."),
    siglip_hybrid=("model.vision_model.", "vision_model.vision_tower_low.vision_tower."),
    siglip_names=dict(
        patch=("embeddings.patch_embedding", "patch_embed.proj"),
        pos=("embeddings.position_embedding.weight", "pos_embed"),
        block=("encoder.layers.{i}.", "blocks.{i}."),
        qkv=(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("attn.qkv",)),
        proj=("self_attn.out_proj", "attn.proj"),
        norm1=("layer_norm1", "norm1"),
        norm2=("layer_norm2", "norm2"),
        final=("post_layernorm", "norm"),
    ),
    sam=("model.high_res_vision_model.vision_encoder.", _ORIG_SAM),
    sam_names=dict(
        patch=("patch_embed.projection", "patch_embed.proj"),
        block=("layers.{i}.", "blocks.{i}."),
        norm1=("layer_norm1", "norm1"),
        norm2=("layer_norm2", "norm2"),
    ),
    neck=(tuple(f"neck.{n}" for n in _HF_NECK), tuple(f"neck.{n}" for n in range(4))),
    neck_hd=(
        tuple(f"model.high_res_vision_neck.{n}" for n in _HF_NECK),
        tuple(f"{_ORIG_SAM}neck_hd.{n}" for n in range(4)),
    ),
    downsample=("model.high_res_vision_proj.conv{n1}", _ORIG_SAM + "downsamples.{n}"),
    hd_alpha=("model.high_res_vision_alpha", _ORIG_SAM + "hd_alpha_downsamples"),
    # ORIG numbers nn.Sequential slots (GELUs take the odd ones); transformers names them.
    aligner=dict(
        linear=("model.aligner.linear{k1}", "aligner.layers.{two_k}"),
        high_up_proj=("model.aligner.high_res_vision_proj", "aligner.high_up_proj"),
        low_up_proj=("model.aligner.vision_proj", "aligner.low_up_proj"),
        proj=("model.aligner.proj", "aligner.layers.1"),
    ),
    # hf: SigLIP's attention-pool head, saved when vision_use_head=True (transformers'
    # SiglipVisionConfig default); DeepSeek-VL reads the last hidden state, like ORIG's
    # attn_pool. Either SigLIP prefix (HF_SIGLIP_PREFIXES), both families.
    unused=(
        (r".*rotary_emb\.inv_freq$", r"model\.vision_model\.(vision_model\.)?head\..*"),
        (
            r".*rotary_emb\.inv_freq$",
            r"vision_model\.(.*\.)?attn_pool\..*",
            r"vision_model\.(high|low)_layer_norm\..*",
        ),
    ),
)

LAYOUTS = {"hf": HF, "original": ORIGINAL}


def _llm_specs(b: _Builder, cfg: VLMConfig, lay: Layout) -> None:
  c = cfg.llm
  d, h, kvh, hd, f = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size
  layer = [f"{lay.llm}layers.{i}." for i in range(c.num_layers)]
  b.add("llm/embed_tokens/embedding", f"{lay.llm}embed_tokens.weight", identity())
  for name, shape in (("q_proj", (d, h, hd)), ("k_proj", (d, kvh, hd)), ("v_proj", (d, kvh, hd))):
    b.stacked_linear(
        f"llm/layers/{name}", [f"{p}self_attn.{name}" for p in layer], shape, with_bias=False
    )
  b.stacked_linear(
      "llm/layers/o_proj",
      [f"{p}self_attn.o_proj" for p in layer],
      (h, hd, d),
      n_in=2,
      with_bias=False,
  )
  for name, shape in (("gate_proj", (d, f)), ("up_proj", (d, f)), ("down_proj", (f, d))):
    b.stacked_linear(
        f"llm/layers/{name}", [f"{p}mlp.{name}" for p in layer], shape, with_bias=False
    )
  b.stack(
      "llm/layers/input_norm/scale", [[f"{p}input_layernorm.weight"] for p in layer], identity()
  )
  b.stack(
      "llm/layers/post_attention_norm/scale",
      [[f"{p}post_attention_layernorm.weight"] for p in layer],
      identity(),
  )
  b.add("llm/norm/scale", f"{lay.llm}norm.weight", identity())
  if not c.tie_embeddings:
    b.add("llm/lm_head/kernel", lay.lm_head, linear((d, c.vocab_size)))


def _siglip_specs(b: _Builder, cfg: VLMConfig, lay: Layout, prefix: str) -> None:
  s, n = cfg.siglip, lay.siglip_names
  d, h, hd = s.width, s.num_heads, s.width // s.num_heads
  root = "vision/siglip"
  layer = [prefix + n["block"].format(i=i) for i in range(s.num_blocks)]
  b.add(f"{root}/patch_embed/kernel", f"{prefix}{n['patch']}.weight", conv())
  b.add(f"{root}/patch_embed/bias", f"{prefix}{n['patch']}.bias", identity())
  pos_shape = (s.num_tokens, d) if lay is HF else (1, s.num_tokens, d)
  b.add(f"{root}/pos_embed", prefix + n["pos"], reshape((s.num_tokens, d), pos_shape))
  if len(n["qkv"]) == 3:  # transformers splits q, k, v
    b.stack(
        f"{root}/blocks/attn/qkv/kernel",
        [[f"{p}{q}.weight" for q in n["qkv"]] for p in layer],
        split_qkv_kernel(d, h, hd),
    )
    b.stack(
        f"{root}/blocks/attn/qkv/bias",
        [[f"{p}{q}.bias" for q in n["qkv"]] for p in layer],
        split_qkv_bias(h, hd),
    )
  else:  # fused, rows [q | k | v], head-major within each
    b.stacked_linear(f"{root}/blocks/attn/qkv", [p + n["qkv"][0] for p in layer], (d, 3, h, hd))
  b.stacked_linear(f"{root}/blocks/attn/proj", [p + n["proj"] for p in layer], (h, hd, d), n_in=2)
  b.stacked_norm(f"{root}/blocks/norm1", [p + n["norm1"] for p in layer])
  b.stacked_norm(f"{root}/blocks/norm2", [p + n["norm2"] for p in layer])
  b.stacked_linear(f"{root}/blocks/mlp/fc1", [f"{p}mlp.fc1" for p in layer], (d, s.mlp_dim))
  b.stacked_linear(f"{root}/blocks/mlp/fc2", [f"{p}mlp.fc2" for p in layer], (s.mlp_dim, d))
  b.norm(f"{root}/norm", prefix + n["final"])


def _sam_specs(b: _Builder, cfg: VLMConfig, lay: Layout) -> None:
  s, n, enc = cfg.sam, lay.sam_names, lay.sam
  d, h, hd = s.width, s.num_heads, s.width // s.num_heads
  root = "vision/sam"
  b.add(f"{root}/patch_embed/kernel", f"{enc}{n['patch']}.weight", conv())
  b.add(f"{root}/patch_embed/bias", f"{enc}{n['patch']}.bias", identity())
  b.add(
      f"{root}/pos_embed", f"{enc}pos_embed", reshape((s.grid, s.grid, d), (1, s.grid, s.grid, d))
  )
  p = block_period(s)
  for sub in range(p):
    blk = f"{root}/blocks/block_{sub}"
    layer = [enc + n["block"].format(i=g * p + sub) for g in range(s.depth // p)]
    b.stacked_linear(f"{blk}/attn/qkv", [f"{x}attn.qkv" for x in layer], (d, 3, h, hd))
    b.stacked_linear(f"{blk}/attn/proj", [f"{x}attn.proj" for x in layer], (h, hd, d), n_in=2)
    for t in ("rel_pos_h", "rel_pos_w"):
      b.stack(f"{blk}/attn/{t}", [[f"{x}attn.{t}"] for x in layer], identity())
    b.stacked_norm(f"{blk}/norm1", [x + n["norm1"] for x in layer])
    b.stacked_norm(f"{blk}/norm2", [x + n["norm2"] for x in layer])
    b.stacked_linear(f"{blk}/mlp/lin1", [f"{x}mlp.lin1" for x in layer], (d, s.mlp_dim))
    b.stacked_linear(f"{blk}/mlp/lin2", [f"{x}mlp.lin2" for x in layer], (s.mlp_dim, d))
  necks = [("neck", tuple(enc + k for k in lay.neck))]
  if s.hd_branch:
    necks.append(("neck_hd", lay.neck_hd))
  for name, (conv1, norm1, conv2, norm2) in necks:
    b.add(f"{root}/{name}/conv1/kernel", f"{conv1}.weight", conv())
    b.add(f"{root}/{name}/conv2/kernel", f"{conv2}.weight", conv())
    b.norm(f"{root}/{name}/norm1", norm1)
    b.norm(f"{root}/{name}/norm2", norm2)
  for i in range(len(s.downsample_channels)):
    b.add(f"{root}/downsample_{i}/kernel", lay.downsample.format(n=i, n1=i + 1) + ".weight", conv())
  if s.hd_branch:
    b.add(f"{root}/hd_alpha", lay.hd_alpha, identity())


def _aligner_specs(b: _Builder, cfg: VLMConfig, lay: Layout) -> None:
  d = cfg.llm.hidden_size

  def dense(leaf, din, dout):
    b.add(f"aligner/{leaf}/kernel", f"{lay.aligner[leaf]}.weight", linear((din, dout)))
    b.add(f"aligner/{leaf}/bias", f"{lay.aligner[leaf]}.bias", identity())

  if cfg.hybrid:
    dense("high_up_proj", cfg.sam.output_dim, d // 2)
    dense("low_up_proj", cfg.siglip.width, d // 2)
    dense("proj", d, d)
    return
  if lay is HF and cfg.aligner.depth != 2:
    raise ConversionError(
        "the transformers layout has a 2-layer aligner "
        f"(linear1, linear2); this model has depth {cfg.aligner.depth}"
    )
  for k in range(cfg.aligner.depth):
    key = lay.aligner["linear"].format(k1=k + 1, two_k=2 * k)
    b.add(
        f"aligner/linear_{k}/kernel",
        f"{key}.weight",
        linear((cfg.siglip.width if k == 0 else d, d)),
    )
    b.add(f"aligner/linear_{k}/bias", f"{key}.bias", identity())


HF_SIGLIP_PREFIXES = ("model.vision_model.vision_model.", "model.vision_model.")


def param_specs(
    cfg: VLMConfig, layout: str = "hf", *, siglip_prefix: str | None = None
) -> list[ParamSpec]:
  """All ParamSpecs of `cfg` for a checkpoint layout ('hf' or 'original').

  siglip_prefix (hf only): transformers 4.x wrote 'model.vision_model.vision_model.',
  5.x writes 'model.vision_model.'; `state_dict_to_params` detects which one a file uses.
  """
  if layout not in LAYOUTS:
    raise ValueError(f"unknown checkpoint layout {layout!r}; known: {sorted(LAYOUTS)}")
  lay = LAYOUTS[layout]
  if siglip_prefix is None:
    siglip_prefix = lay.siglip_hybrid if cfg.hybrid else lay.siglip
  b = _Builder()
  _llm_specs(b, cfg, lay)
  _siglip_specs(b, cfg, lay, siglip_prefix)
  if cfg.hybrid:
    _sam_specs(b, cfg, lay)
  _aligner_specs(b, cfg, lay)
  return b.specs


def unused_patterns(cfg: VLMConfig, layout: str, siglip_prefix: str | None = None) -> list[str]:
  """Regexes of tensors a checkpoint may carry that this model does not use."""
  lay = LAYOUTS[layout]
  if siglip_prefix is None:
    siglip_prefix = lay.siglip_hybrid if cfg.hybrid else lay.siglip
  pats = list(lay.unused)
  # Blocks past select_layer are built by neither reference's forward (ORIG never
  # builds them; transformers' converter copies them from the full checkpoint).
  block = re.escape(siglip_prefix + lay.siglip_names["block"]).replace(r"\{i\}", "{i}")
  if cfg.siglip.num_blocks < cfg.siglip.depth:
    pats.append(block.format(i=r"(\d+)") + ".*")
  return pats


def _set(tree: dict, path: Path, value: Any) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: Path) -> Any:
  for p in path:
    tree = tree[p]
  return tree

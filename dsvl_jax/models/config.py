"""Typed, validated model configuration built from ml_collections data.

Configs under `configs/` are plain `ml_collections.ConfigDict` data. Modules take the
frozen dataclasses below instead: they are hashable (Flax module attributes must be),
typed, and validated once, at start-up, with errors that name the offending field.
`VLMConfig.from_dict(config.model)` is the single conversion point.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Literal, Mapping

from dsvl_jax.config.presets import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD
from dsvl_jax.config.schema import build_dataclass, choices
from dsvl_jax.config.schema import check as _check

# The choices of the compute fields; schema.build_dataclass refuses any other value.
Dtype = Literal["float32", "bfloat16", "float16"]
Precision = Literal["default", "high", "highest"]
RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]  # models/layers.py policies
AttentionImpl = Literal["auto", "xla", "blocked", "chunked", "cudnn", "splash"]  # attention.py
AlignerType = Literal["mlp_gelu", "low_high_hybrid_split_mlp_gelu"]
QuantKind = Literal["none", "int8", "int4", "nf4"]  # models/quant.py
KVCacheDtype = Literal["auto", "int8"]

REMAT_POLICIES = choices(RematPolicy)
ATTENTION_IMPLS = choices(AttentionImpl)  # models/attention.py IMPLS is this tuple
DTYPES = choices(Dtype)
PRECISIONS = choices(Precision)
ALIGNER_TYPES = choices(AlignerType)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapters (LoRA, Hu et al. 2021) on the Dense kernels whose module path
  matches a pattern of `targets`: y = x W + (alpha / rank) (x A) B, with A [*in, rank]
  random and B [rank, *out] zero, so an adapter starts as the identity (models/lora.py).
  Paths are module paths with '/' ("llm/layers/q_proj"; "llm/layers_3/q_proj" when the
  layers are not scanned); patterns are fnmatch's (`*` crosses '/')."""

  rank: int = 0  # 0 = no adapters
  alpha: float = 16.0  # the update is scaled by alpha / rank
  # The LLM's attention and MLP projections. Also adaptable: "vision/siglip/*" (SigLIP's
  # blocks), "vision/sam/blocks/*", "aligner/*".
  targets: tuple[str, ...] = ("llm/layers*/*_proj",)
  # QLoRA: the adapted (frozen) kernels stored as 4-bit NormalFloat, int8 or int4 codes
  # with a float32 scale per block of `quant_block` values (models/quant.py); "none" = as
  # is. The same representation as `ComputeConfig.quant` on those kernels.
  base_quant: QuantKind = "none"
  quant_block: int = 64
  # Dropout on an adapter's input in training (peft's lora_dropout); the base path and
  # inference never drop.
  dropout: float = 0.0
  # Serving many adapters over one base (infer/slots.py): lora_a / lora_b hold this many
  # adapters on a leading axis, each batch row picking its own by index (index 0 is
  # all zeros: the base). 0 = one adapter, no such axis.
  stacked: int = 0

  def validate(self, prefix: str) -> None:
    _check(self.rank >= 0, f"{prefix}.rank", f"must be >= 0 (0 = off), got {self.rank}")
    _check(0 <= self.dropout < 1, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")
    _check(
        self.stacked == 0 or (self.stacked >= 2 and self.rank > 0),
        f"{prefix}.stacked",
        f"0, or >= 2 adapters (the base's zeros and one or more) with a rank; got {self.stacked}",
    )
    _check(self.quant_block >= 2, f"{prefix}.quant_block", "must be >= 2")
    _check(
        self.base_quant == "none" or self.rank > 0,
        f"{prefix}.base_quant",
        "quantises the adapted kernels: set a rank",
    )
    _check(self.alpha > 0, f"{prefix}.alpha", f"must be > 0, got {self.alpha}")
    _check(not self.rank or bool(self.targets), f"{prefix}.targets", "no pattern given")

  def adapts(self, path: str) -> bool:
    """Whether the Dense at module path `path` carries an adapter."""
    return self.rank > 0 and any(fnmatch.fnmatchcase(path, t) for t in self.targets)


def _overlap(a: tuple[str, ...], b: tuple[str, ...]) -> list[tuple[str, str]]:
  """Pattern pairs of which one matches the other as a path: targets that share kernels
  in any model (a cheap, incomplete test; Dense checks every path it builds)."""
  return [(x, y) for x in a for y in b if fnmatch.fnmatchcase(x, y) or fnmatch.fnmatchcase(y, x)]


@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """Weight-only quantisation of Dense kernels (inference): every Dense whose module path
  matches a pattern of `targets` holds `kernel_q` {'codes', 'scale'} instead of `kernel`,
  codes with a float32 scale per block of `block` values along the stored kernel's last
  axis (models/quant.py), dequantised in the compute dtype inside its matmul.

  Paths and patterns are LoraConfig's ("llm/layers/q_proj" under nn.scan; `*` crosses
  '/'). Only Dense kernels are quantised: the token embedding (nn.Embed), the norms,
  biases, position tables and the convolutions (patch embeddings, SAM's neck and
  downsampling) stay as they are whatever a pattern matches. The LM head is a Dense,
  "llm/lm_head", which neither the default nor the patterns below match."""

  kind: QuantKind = "none"  # none | int8 | int4 | nf4
  # Values per scale along a kernel's last axis (the whole axis when it is shorter); it
  # must divide that axis, which only the kernels' shapes tell: a kernel it does not fit
  # is named when it is quantised (at init or by quant_tree.quantize_tree).
  block: int = 64
  # The LLM's attention and MLP projections. Also quantisable: "vision/siglip/*"
  # (SigLIP's blocks), "vision/sam/*" (SAM's blocks), "aligner/*".
  targets: tuple[str, ...] = ("llm/layers*/*_proj",)

  def validate(self, prefix: str) -> None:
    _check(self.block >= 2, f"{prefix}.block", f"must be >= 2, got {self.block}")
    _check(
        self.kind not in ("int4", "nf4") or self.block % 2 == 0,
        f"{prefix}.block",
        f"{self.kind} packs two codes a byte: the block must be even, got {self.block}",
    )
    _check(self.kind == "none" or bool(self.targets), f"{prefix}.targets", "no pattern given")

  def applies(self, path: str) -> bool:
    """Whether the Dense at module path `path` holds its kernel quantised."""
    return self.kind != "none" and any(fnmatch.fnmatchcase(path, t) for t in self.targets)


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
  """How the model computes, independent of its architecture."""

  dtype: Dtype = "float32"  # activation / compute dtype
  param_dtype: Dtype = "float32"  # storage dtype of parameters
  precision: Precision = "default"  # matmul precision ('highest' for exact fp32 on GPU/TPU)
  remat_policy: RematPolicy = "none"  # activation checkpointing of repeated blocks
  attention_impl: AttentionImpl = "xla"  # attention backend, see models/attention.py
  attention_block: int = 512  # keys per block of the 'chunked' backend
  # LLM layers under nn.scan (training: compile time flat in depth); False runs a
  # Python loop over per-layer weights (decoding; params via llm.unstack_layers).
  scan_layers: bool = True
  # LLM layers per scan iteration (1 = a rolled loop; num_layers = fully unrolled, the same
  # stacked parameters). Unrolling lets XLA fuse across layers: a 4-layer model's CPU
  # train step runs ~10% faster, at the cost of compile time that grows with depth.
  scan_unroll: int = 1
  # The LLM blocks' kernels stored [*out, *in] (PyTorch's order) instead of [*in, *out]:
  # how the generators hold them on a CPU, where a decode step of 8 rows reads them
  # 1.6x faster (infer/generate.py inference_params). Training keeps [*in, *out].
  llm_kernels_out_major: bool = False
  # Low-rank adapters on chosen kernels (rank 0 = none). Here, not in the architecture
  # fields, because compute is what reaches every Dense; an adapter checkpoint's model
  # config carries it, so whatever loads the checkpoint builds the same tree.
  lora: LoraConfig = LoraConfig()
  # Weight-only quantisation of chosen kernels for inference (kind "none" = off).
  quant: QuantConfig = QuantConfig()
  # The decoding KV cache: "auto" holds keys and values in the compute dtype; "int8"
  # holds int8 codes with a float32 absmax scale per token and head (models/llm.py).
  kv_cache_dtype: KVCacheDtype = "auto"

  def validate(self, prefix: str) -> None:
    _check(self.attention_block >= 1, f"{prefix}.attention_block", "must be >= 1")
    _check(self.scan_unroll >= 1, f"{prefix}.scan_unroll", "must be >= 1")
    self.lora.validate(f"{prefix}.lora")
    self.quant.validate(f"{prefix}.quant")
    _check(
        self.quant.kind == "none" or self.lora.base_quant == "none",
        f"{prefix}.quant.kind",
        "one representation per kernel: lora.base_quant already quantises the adapted "
        "kernels (QLoRA); set one of the two",
    )
    shared = _overlap(self.quant.targets, self.lora.targets) if self.lora.rank else []
    _check(
        self.quant.kind == "none" or not shared,
        f"{prefix}.quant.targets",
        f"{shared[0][0]!r} names kernels lora.targets {shared[0][1]!r} adapts: a quantised "
        "kernel under an adapter is QLoRA, set lora.base_quant for it instead"
        if shared
        else "",
    )

  def kernel_quant(self, path: str) -> tuple[QuantKind, int] | None:
    """(kind, block) of the Dense kernel at module path `path` if it is stored quantised
    (compute.quant, or lora.base_quant on an adapted kernel), else None."""
    if self.quant.applies(path):
      _check(
          not self.lora.adapts(path),
          "model.compute.quant.targets",
          f"{path} is also adapted (lora.targets): a quantised kernel under an adapter is "
          "QLoRA, set lora.base_quant for it instead",
      )
      return self.quant.kind, self.quant.block
    if self.lora.base_quant != "none" and self.lora.adapts(path):
      return self.lora.base_quant, self.lora.quant_block
    return None


@dataclasses.dataclass(frozen=True)
class LLMConfig:
  """DeepSeek-LLM (LLaMA architecture) hyper-parameters (reference 1.2)."""

  vocab_size: int = 102400
  hidden_size: int = 2048
  num_layers: int = 24
  num_heads: int = 16
  num_kv_heads: int = 16
  head_dim: int = 128
  intermediate_size: int = 5632
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  max_position_embeddings: int = 16384
  tie_embeddings: bool = False

  def validate(self, prefix: str) -> None:
    for f in (
        "vocab_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "intermediate_size",
    ):
      _check(getattr(self, f) > 0, f"{prefix}.{f}", "must be positive")
    _check(
        self.num_heads % self.num_kv_heads == 0,
        f"{prefix}.num_kv_heads",
        f"{self.num_kv_heads} does not divide num_heads={self.num_heads}",
    )
    _check(self.head_dim % 2 == 0, f"{prefix}.head_dim", "rotary embeddings need an even head_dim")
    _check(self.rms_norm_eps > 0, f"{prefix}.rms_norm_eps", "must be positive")


def _check_vit(cfg: "SiglipConfig | SamConfig", prefix: str) -> None:
  """What both vision towers need: whole patches and whole heads."""
  _check(
      cfg.image_size % cfg.patch_size == 0,
      f"{prefix}.patch_size",
      f"{cfg.patch_size} does not divide image_size={cfg.image_size}",
  )
  _check(
      cfg.width % cfg.num_heads == 0,
      f"{prefix}.num_heads",
      f"{cfg.num_heads} does not divide width={cfg.width}",
  )


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
  """SigLIP ViT hyper-parameters (reference 1.3)."""

  image_size: int = 384
  patch_size: int = 16
  width: int = 1024
  depth: int = 24
  num_heads: int = 16
  mlp_dim: int = 4096
  layer_norm_eps: float = 1e-6
  # ORIG semantics: build depth + select_layer + 1 blocks, always apply the final norm.
  select_layer: int = -1
  pixel_mean: tuple[float, ...] = SIGLIP_MEAN
  pixel_std: tuple[float, ...] = SIGLIP_STD

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_tokens(self) -> int:
    return self.grid * self.grid

  @property
  def num_blocks(self) -> int:
    return self.depth + self.select_layer + 1

  def validate(self, prefix: str) -> None:
    _check_vit(self, prefix)
    _check(
        -self.depth <= self.select_layer <= -1,
        f"{prefix}.select_layer",
        f"{self.select_layer} must be in [-depth, -1] (ORIG semantics)",
    )
    _check(
        len(self.pixel_mean) == 3 and len(self.pixel_std) == 3,
        f"{prefix}.pixel_mean",
        "pixel_mean and pixel_std need 3 values",
    )


@dataclasses.dataclass(frozen=True)
class SamConfig:
  """SAM-B ViTDet plus DeepSeek's neck/resize/downsample/HD additions (reference 1.4)."""

  image_size: int = 1024
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  layer_norm_eps: float = 1e-6
  window_size: int = 14
  global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
  neck_channels: int = 256
  resize_to: int = 96  # bilinear 64x64 -> 96x96 after the neck
  downsample_channels: tuple[int, ...] = (512, 1024)  # bias-free stride-2 3x3 convs
  hd_branch: bool = True  # DeepSeek's sam_hd: first global block -> neck_hd -> same convs
  pixel_mean: tuple[float, ...] = CLIP_MEAN
  pixel_std: tuple[float, ...] = CLIP_STD

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def out_grid(self) -> int:
    return self.resize_to // (2 ** len(self.downsample_channels))

  @property
  def output_dim(self) -> int:
    return self.downsample_channels[-1]

  @property
  def hd_tap(self) -> int:
    """Index of the block whose output feeds the HD branch (the first global block)."""
    return self.global_attn_indexes[0]

  def validate(self, prefix: str) -> None:
    _check_vit(self, prefix)
    _check(
        len(self.global_attn_indexes) > 0
        and all(0 <= i < self.depth for i in self.global_attn_indexes),
        f"{prefix}.global_attn_indexes",
        f"{self.global_attn_indexes} must be non-empty and within [0, depth={self.depth})",
    )
    _check(self.window_size > 0, f"{prefix}.window_size", "must be positive")
    _check(
        len(self.downsample_channels) >= 1,
        f"{prefix}.downsample_channels",
        "need at least one downsample conv",
    )
    _check(
        self.resize_to % (2 ** len(self.downsample_channels)) == 0,
        f"{prefix}.resize_to",
        f"{self.resize_to} must be divisible by 2**len(downsample_channels)",
    )


@dataclasses.dataclass(frozen=True)
class AlignerConfig:
  """Vision-language adaptor (reference 1.6)."""

  type: AlignerType = "mlp_gelu"
  depth: int = 2

  def validate(self, prefix: str) -> None:
    _check(self.depth >= 1, f"{prefix}.depth", "must be >= 1")
    if self.type == "low_high_hybrid_split_mlp_gelu":
      _check(self.depth == 2, f"{prefix}.depth", "the hybrid split aligner is defined for depth 2")


@dataclasses.dataclass(frozen=True)
class VLMConfig:
  """The whole DeepSeek-VL model. `sam is None` means the 1.3B (SigLIP-only) family."""

  llm: LLMConfig = LLMConfig()
  siglip: SiglipConfig = SiglipConfig()
  sam: SamConfig | None = None
  aligner: AlignerConfig = AlignerConfig()
  compute: ComputeConfig = ComputeConfig()
  image_token_id: int = 100015
  bos_token_id: int = 100000
  eos_token_id: int = 100001
  pad_token_id: int = 100001

  @property
  def hybrid(self) -> bool:
    return self.sam is not None

  @property
  def image_size(self) -> int:
    """Side of the square [0, 1] image the model takes (1024 hybrid, 384 otherwise)."""
    return self.sam.image_size if self.sam is not None else self.siglip.image_size

  @property
  def num_image_tokens(self) -> int:
    return self.siglip.num_tokens

  def validate(self) -> "VLMConfig":
    self.llm.validate("model.llm")
    self.siglip.validate("model.siglip")
    self.aligner.validate("model.aligner")
    self.compute.validate("model.compute")
    if self.sam is not None:
      self.sam.validate("model.sam")
      _check(
          self.aligner.type == "low_high_hybrid_split_mlp_gelu",
          "model.aligner.type",
          "a model with a SAM tower needs the 'low_high_hybrid_split_mlp_gelu' aligner",
      )
      _check(
          self.sam.out_grid == self.siglip.grid,
          "model.sam.resize_to",
          f"SAM emits a {self.sam.out_grid}x{self.sam.out_grid} grid but SigLIP a "
          f"{self.siglip.grid}x{self.siglip.grid} one; resize_to must be "
          f"{self.siglip.grid * 2 ** len(self.sam.downsample_channels)}",
      )
      _check(
          self.llm.hidden_size % 2 == 0,
          "model.llm.hidden_size",
          "the hybrid aligner splits hidden_size in two",
      )
    else:
      _check(
          self.aligner.type == "mlp_gelu",
          "model.aligner.type",
          "a SigLIP-only model needs the 'mlp_gelu' aligner",
      )
    for f in ("image_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
      _check(
          0 <= getattr(self, f) < self.llm.vocab_size,
          f"model.{f}",
          f"{getattr(self, f)} outside the vocabulary [0, {self.llm.vocab_size})",
      )
    return self

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "VLMConfig":
    """Builds and validates a config from a (nested) mapping, e.g. `config.model`."""
    return _build(cls, d, "model").validate()

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def replace(self, **kw) -> "VLMConfig":
    return dataclasses.replace(self, **kw)


_NESTED = {
    (VLMConfig, "llm"): LLMConfig,
    (VLMConfig, "siglip"): SiglipConfig,
    (VLMConfig, "sam"): SamConfig,
    (VLMConfig, "aligner"): AlignerConfig,
    (VLMConfig, "compute"): ComputeConfig,
    (ComputeConfig, "lora"): LoraConfig,
    (ComputeConfig, "quant"): QuantConfig,
}


def _build(cls, d: Mapping[str, Any], prefix: str):
  return build_dataclass(cls, d, prefix, _NESTED)

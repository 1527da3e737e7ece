"""Layers shared by the language model and the vision towers.

Every parameter's initialiser is wrapped in `nn.with_logical_partitioning`, so it carries
logical axis names; `dsvl_jax/runtime/sharding.py` maps those names to mesh axes. Compute dtype, parameter dtype and matmul precision come from
`ComputeConfig`; no layer casts behind the caller's back except where the reference
does (RMSNorm in float32, LayerNorm statistics in float32, softmax in float32).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from dsvl_jax.models import quant
from dsvl_jax.models.config import ComputeConfig

Axes = tuple[str | None, ...]


def dtype_of(name: str) -> jnp.dtype:
  return jnp.dtype(name)


def precision_of(name: str) -> jax.lax.Precision | None:
  return {"default": None, "high": jax.lax.Precision.HIGH, "highest": jax.lax.Precision.HIGHEST}[
      name
  ]


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as torch's nn.GELU(); JAX's default is the tanh approximation."""
  return jax.nn.gelu(x, approximate=False)


def constrain(x: jax.Array, axes: Axes) -> jax.Array:
  """Logical sharding constraint on an activation (a no-op outside a rules context)."""
  return nn.with_logical_constraint(x, axes)


OUT_MAJOR_MAX_ROWS = 64  # rows up to which an out-major Dense computes kernel . x^T


class Dense(nn.Module):
  """y = x . kernel (+ bias), contracting `n_in` trailing axes of x.

  kernel [*in_dims, *out_dims] and bias [*out_dims] carry logical axis names. (Flax's
  DenseGeneral creates multi-dimensional kernels flat and reshapes them, which breaks
  logical sharding constraints on them under a mesh.) out_major: the kernel is stored
  [*out_dims, *in_dims] instead (ComputeConfig.llm_kernels_out_major). A kernel that
  compute.kernel_quant names (compute.quant's targets, QLoRA's adapted kernels) is
  stored as `kernel_q` {'codes', 'scale'}, blocks along the stored kernel's last axis.
  """

  compute: ComputeConfig
  features: tuple[int, ...]
  kernel_axes: Axes
  n_in: int = 1
  use_bias: bool = True
  out_major: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, adapter: jax.Array | None = None) -> jax.Array:
    """x [*batch, *in] -> [*batch, *out]. adapter [B] int32: with stacked adapters
    (compute.lora.stacked), the adapter each row of x (its leading axis) applies."""
    n_in, n_out = self.n_in, len(self.features)
    in_shape = x.shape[x.ndim - n_in :]
    ins, outs = tuple(range(n_in)), tuple(range(n_in, n_in + n_out))
    shape, axes = in_shape + self.features, self.kernel_axes
    if self.out_major:
      ins, outs = tuple(range(n_out, n_out + n_in)), tuple(range(n_out))
      shape, axes = self.features + in_shape, axes[n_in:] + axes[:n_in]
    init = nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=ins, out_axis=outs
    )
    pdtype, dtype = dtype_of(self.compute.param_dtype), dtype_of(self.compute.dtype)
    path = "/".join(self.scope.path)
    adapted = self.compute.lora.adapts(path)
    stored = self.compute.kernel_quant(path)  # compute.quant, or QLoRA's adapted kernels
    if stored is not None:
      kernel = self._quantized_kernel(path, *stored, init, shape, axes, pdtype, dtype)
    else:
      kernel = self.param("kernel", nn.with_logical_partitioning(init, axes), shape, pdtype)
    x_in = tuple(range(x.ndim - n_in, x.ndim))
    prec = precision_of(self.compute.precision)
    rows = math.prod(x.shape[: x.ndim - n_in])
    if self.out_major and rows <= OUT_MAJOR_MAX_ROWS:
      # kernel . x^T, then transposed: XLA:CPU streams an [out, in] matrix against a few
      # rows at memory speed this way round (decoding); x . kernel^T reads it 2x slower.
      y = jax.lax.dot_general(
          kernel.astype(dtype), x.astype(dtype), ((ins, x_in), ((), ())), precision=prec
      )
      y = jnp.moveaxis(y, tuple(range(n_out)), tuple(range(y.ndim - n_out, y.ndim)))
    else:
      y = jax.lax.dot_general(
          x.astype(dtype), kernel.astype(dtype), ((x_in, ins), ((), ())), precision=prec
      )
    if self.use_bias:
      b = self.param(
          "bias",
          nn.with_logical_partitioning(nn.initializers.zeros_init(), self.kernel_axes[n_in:]),
          self.features,
          pdtype,
      )
      y = y + b.astype(dtype)
    if adapted:
      y = y + self._adapter(x, x_in, in_shape, adapter)
    return y

  def _quantized_kernel(self, path, kind, block, init, shape, axes, pdtype, dtype) -> jax.Array:
    """The kernel (`shape`, as stored: out-major included) from `kernel_q` {'codes',
    'scale'} of `kind` in blocks of `block` along its last axis (models/quant.py),
    dequantised in `dtype`; a random init quantises a random kernel."""

    field = "quant.block" if self.compute.quant.applies(path) else "lora.quant_block"

    def init_stored(rng):
      try:
        stored = quant.quantize(init(rng, shape, pdtype), kind, block)
      except ValueError as e:  # at trace time: the shape does not fit the block
        raise ValueError(f"{path}: {e}; see model.compute.{field}") from None
      return {k: nn.Partitioned(v, names=axes) for k, v in stored.items()}

    return quant.dequantize(self.param("kernel_q", init_stored), kind, dtype)

  def _adapter(self, x, x_in, in_shape, adapter) -> jax.Array:
    """(alpha / rank) * (x . lora_a) . lora_b: lora_a [*in, rank] as peft draws lora_A
    (uniform, bound 1/sqrt(fan_in)), lora_b [rank, *out] zeros, so y is unchanged at the
    start. Stacked (lora.stacked = N): lora_a [N, *in, rank], lora_b [N, rank, *out],
    row b of x through adapter[b]. Dropout on x where training passes a 'dropout' rng."""
    lora, n_in, axes = self.compute.lora, self.n_in, self.kernel_axes
    pdtype, dtype = dtype_of(self.compute.param_dtype), dtype_of(self.compute.dtype)
    stack, stack_axes = ((lora.stacked,), ("lora_adapters",)) if lora.stacked else ((), ())
    first_in = len(stack)
    a_init = nn.initializers.variance_scaling(
        1 / 3, "fan_in", "uniform", in_axis=tuple(range(first_in, first_in + n_in)), out_axis=-1
    )
    a = self.param(
        "lora_a",
        nn.with_logical_partitioning(a_init, stack_axes + axes[:n_in] + ("lora_rank",)),
        stack + in_shape + (lora.rank,),
        pdtype,
    )
    b = self.param(
        "lora_b",
        nn.with_logical_partitioning(
            nn.initializers.zeros_init(), stack_axes + ("lora_rank",) + axes[n_in:]
        ),
        stack + (lora.rank,) + self.features,
        pdtype,
    )
    if lora.dropout > 0 and self.has_rng("dropout"):
      x = nn.Dropout(lora.dropout, deterministic=False)(x)
    prec = precision_of(self.compute.precision)
    a_in = tuple(range(first_in, first_in + n_in))
    h = jax.lax.dot_general(
        x.astype(dtype), a.astype(dtype), ((x_in, a_in), ((), ())), precision=prec
    )  # [*batch, (N,) rank]
    if lora.stacked:
      # Every row through all N adapters' A (read once), each row's own kept by a
      # one-hot mask, contracted with B over (N, rank): no per-row copy of the adapters,
      # which made XLA:CPU fault in a fresh buffer every step (BUILD.md, "Many adapters").
      if adapter is None:  # init creates the leaves; a forward pass must say whose
        if not self.is_initializing():
          raise ValueError(f"{'/'.join(self.scope.path)}: stacked adapters need a row index")
        adapter = jnp.zeros(x.shape[:1], jnp.int32)
      pick = jax.nn.one_hot(adapter, lora.stacked, dtype=dtype)
      h = h * pick.reshape(pick.shape[:1] + (1,) * (h.ndim - 3) + pick.shape[1:] + (1,))
      contract = ((h.ndim - 2, h.ndim - 1), (0, 1))
    else:
      contract = ((h.ndim - 1,), (0,))
    h = jax.lax.dot_general(h, b.astype(dtype), (contract, ((), ())), precision=prec)
    return h * jnp.asarray(lora.alpha / lora.rank, dtype)


def dense(
    compute: ComputeConfig,
    features: int | Sequence[int],
    kernel_axes: Axes,
    *,
    n_in: int = 1,
    use_bias: bool = True,
    out_major: bool = False,
    name: str | None = None,
) -> Dense:
  """A Dense with kernel [in..., out...] named by `kernel_axes` (bias: the out part);
  out_major: stored [out..., in...]."""
  features = (features,) if isinstance(features, int) else tuple(features)
  if len(kernel_axes) != n_in + len(features):
    raise ValueError(
        f"kernel_axes {kernel_axes} do not match {n_in} input and {len(features)} output dims"
    )
  return Dense(compute, features, tuple(kernel_axes), n_in, use_bias, out_major, name=name)


def conv(
    compute: ComputeConfig,
    features: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: int = 0,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.Conv:
  """NHWC Conv with torch-style explicit symmetric padding; kernel [kh, kw, in, out]."""
  return nn.Conv(
      features=features,
      kernel_size=(kernel, kernel),
      strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      use_bias=use_bias,
      dtype=dtype_of(compute.dtype),
      param_dtype=dtype_of(compute.param_dtype),
      precision=precision_of(compute.precision),
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), ("conv_h", "conv_w", "conv_in", "conv_out")
      ),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
      name=name,
  )


def patch_embed(
    module: nn.Module,
    compute: ComputeConfig,
    pixels: jax.Array,
    width: int,
    patch: int,
    pos_shape: tuple[int, ...],
    pos_axes: Axes,
) -> jax.Array:
  """A ViT's stem inside `module`: the patchify conv `patch_embed` plus the learned
  position table `pos_embed` [*pos_shape] (held as the checkpoint holds it, added in the
  grid's row-major order). pixels [B, S, S, 3] -> [B, S/P, S/P, width]."""
  x = conv(compute, width, patch, stride=patch, name="patch_embed")(pixels)
  pos = module.param(
      "pos_embed",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), pos_axes),
      pos_shape,
      dtype_of(compute.param_dtype),
  )
  return x + pos.reshape(x.shape[1:]).astype(x.dtype)


def layer_norm(
    compute: ComputeConfig, eps: float, axis_name: str = "norm", name: str | None = None
) -> nn.LayerNorm:
  """torch-compatible LayerNorm: two-pass variance (not E[x^2]-E[x]^2), stats in fp32."""
  return nn.LayerNorm(
      epsilon=eps,
      use_fast_variance=False,
      dtype=dtype_of(compute.dtype),
      param_dtype=dtype_of(compute.param_dtype),
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis_name,)),
      name=name,
  )


class RMSNorm(nn.Module):
  """LLaMA RMSNorm: normalise in float32, cast back to the input dtype, then scale.

  x: [..., D] -> [..., D] in the compute dtype.
  """

  compute: ComputeConfig
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param(
        "scale",
        nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        (x.shape[-1],),
        dtype_of(self.compute.param_dtype),
    )
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    dtype = dtype_of(self.compute.dtype)
    return y.astype(x.dtype).astype(dtype) * scale.astype(dtype)


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def maybe_remat(module_cls: Any, remat_policy: str) -> Any:
  """Wraps a block class in nn.remat according to a ComputeConfig.remat_policy name."""
  if remat_policy == "none":
    return module_cls
  # prevent_cse=False is safe (and faster) because every block runs under nn.scan.
  return nn.remat(module_cls, policy=_REMAT_POLICIES[remat_policy], prevent_cse=False)


def scan_blocks(
    block_cls: Any,
    length: int,
    *,
    in_axes: tuple,
    name: str,
    remat_policy: str,
    unroll: int = 1,
    **block_kwargs,
) -> nn.Module:
  """`length` copies of a block under nn.scan: one compiled body whatever the depth.

  The block's __call__ is (carry, *xs) -> (carry, ys); its parameters get a leading
  'layers' axis. `in_axes` gives, per x, 0 (sliced per layer) or nn.broadcast.
  `unroll`: blocks per loop iteration (lax.scan's unroll; the parameters stay stacked).
  """
  block_cls = maybe_remat(block_cls, remat_policy)
  return nn.scan(
      block_cls,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=in_axes,
      length=length,
      unroll=unroll,
      metadata_params={nn.PARTITION_NAME: "layers"},
  )(name=name, **block_kwargs)

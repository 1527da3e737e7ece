"""Parameter creation: concrete, abstract (shapes only) and logical-axis trees.

Parameters are a plain pytree (nested dicts of arrays); the logical axis names that
Flax's boxed metadata carries at init are returned separately, as a tree of
`jax.sharding.PartitionSpec` over logical names, for `dsvl_jax.runtime.sharding` to resolve.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from dsvl_jax.models import lora
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.vlm import DeepseekVL


def example_inputs(cfg: VLMConfig) -> tuple[jax.Array, jax.Array]:
  """One sample with one image: enough to create every parameter."""
  ids = jnp.full((1, cfg.num_image_tokens), cfg.image_token_id, jnp.int32)
  images = jnp.zeros((1, 3, cfg.image_size, cfg.image_size), jnp.float32)
  return ids, images


def _boxed_init(cfg: VLMConfig, rng: jax.Array) -> Any:
  ids, images = example_inputs(cfg)
  return DeepseekVL(cfg).init(rng, ids, images)["params"]


# XLA:CPU spends most of an initialiser's compile time optimising its code (one unrolled
# threefry hash per parameter: ~22k operations for the demo's 1.4M-parameter model, 13 s),
# which runs once. LLVM's -O0 compiles it in a third of the time; the integer hash is
# the same, the float transforms of the draws may differ in the last bit from -O3.
_CPU_INIT_OPTIONS = {"xla_backend_optimization_level": 0}


def _jit_init(cfg: VLMConfig, shardings: Any = None) -> Any:
  return jax.jit(lambda r: nn.unbox(_boxed_init(cfg, r)), out_shardings=shardings)


def _compile_init(fn: Any, rng: Any, platform: str) -> Any:
  options = _CPU_INIT_OPTIONS if platform == "cpu" else None
  return fn.lower(rng).compile(compiler_options=options)


@functools.lru_cache(maxsize=16)
def _unsharded_init(cfg: VLMConfig, rng: jax.ShapeDtypeStruct) -> Any:
  """The compiled initialiser of one config (tests initialise the same config often)."""
  return _compile_init(_jit_init(cfg), rng, jax.default_backend())


def init_params(cfg: VLMConfig, rng: jax.Array, shardings: Any = None) -> dict:
  """Randomly initialised parameters (plain pytree); `shardings` (a tree like the
  params) makes each device create only its own shards."""
  if isinstance(rng, jax.core.Tracer):  # inside a transformation (eval_shape, jit)
    return _jit_init(cfg, shardings)(rng)
  if shardings is None:
    return _unsharded_init(cfg, jax.ShapeDtypeStruct(rng.shape, rng.dtype))(rng)
  device = next(iter(jax.tree.leaves(shardings)[0].device_set))
  return _compile_init(_jit_init(cfg, shardings), rng, device.platform)(rng)


def init_adapters(cfg: VLMConfig, rng: jax.Array, shardings: Any = None) -> dict:
  """Fresh adapters (lora.split's first part) of a config with compute.lora, for a base
  read from a checkpoint: the base's own initialisers are dead code and compile away."""
  fn = jax.jit(lambda r: lora.split(nn.unbox(_boxed_init(cfg, r)))[0], out_shardings=shardings)
  platform = jax.default_backend() if shardings is None else None
  if platform is None:
    platform = next(iter(jax.tree.leaves(shardings)[0].device_set)).platform
  return _compile_init(fn, rng, platform)(rng)


def abstract_params(cfg: VLMConfig) -> dict:
  """ShapeDtypeStructs of every parameter; allocates nothing."""
  return nn.unbox(jax.eval_shape(functools.partial(_boxed_init, cfg), jax.random.key(0)))


def logical_axes(cfg: VLMConfig) -> dict:
  """PartitionSpec of logical axis names for every parameter (same tree as params)."""
  boxed = jax.eval_shape(functools.partial(_boxed_init, cfg), jax.random.key(0))
  return nn.get_partition_spec(boxed)


def count_params(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def lower_llm(
    cfg: VLMConfig, num_layers: int, grad: bool = False, batch: int = 2, seq: int = 32
) -> jax.stages.Lowered:
  """Lowers the LLM forward (or the gradient of its mean output) at `num_layers` from
  abstract inputs: nothing is allocated. For compile-cost checks and benchmarks."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  from dsvl_jax.models.llm import LLM  # pylint: disable=g-import-not-at-top

  llm_cfg = dataclasses.replace(cfg.llm, num_layers=num_layers)
  model = LLM(llm_cfg, cfg.compute)
  embeds = jax.ShapeDtypeStruct((batch, seq, llm_cfg.hidden_size), jnp.float32)
  positions = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
  params = jax.eval_shape(functools.partial(model.init, jax.random.key(0)), embeds, positions)

  def forward(p, e, pos):
    return model.apply(p, e, pos)[0]

  fn = jax.grad(lambda p, e, pos: jnp.mean(forward(p, e, pos))) if grad else forward
  return jax.jit(fn).lower(params, embeds, positions)

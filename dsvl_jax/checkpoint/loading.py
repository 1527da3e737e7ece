"""`dsvl_jax.load`: one call from any checkpoint directory to a model that runs.

Accepts our orbax checkpoint (float or quantised), a transformers (deepseek-community)
directory or an original DeepSeek release directory; with a mesh, parameters are placed
sharded by the logical-axis rules as they are read. `quantize` stores a float
checkpoint's targeted kernels quantised (models/quant.py) as it loads.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.init import abstract_params, logical_axes
from dsvl_jax.models.vlm import DeepseekVL, check_image_tokens
from dsvl_jax.runtime import sharding


@dataclasses.dataclass
class LoadedModel:
  config: VLMConfig
  module: DeepseekVL
  params: Any
  mesh: jax.sharding.Mesh | None = None

  @functools.cached_property
  def _forward(self):
    def forward(params, ids, mask, images):
      return self.module.apply({"params": params}, ids, images, attention_mask=mask)["logits"]

    return jax.jit(forward)

  def logits(self, input_ids, attention_mask=None, images=None) -> jax.Array:
    """[B, T] ids (+ [B, T] mask, + [N, 3, S, S] images in [0, 1]) -> [B, T, V] float32.

    Image-token positions are filled with the images in batch-major order.
    """
    input_ids = np.asarray(input_ids, np.int32)
    n = 0 if images is None else len(images)
    check_image_tokens(input_ids, n, self.config)
    mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask)
    images = None if n == 0 else np.asarray(images, np.float32)
    if self.mesh is None:
      return self._forward(self.params, input_ids, mask, images)
    with jax.set_mesh(self.mesh), sharding.activation_rules():
      return self._forward(self.params, input_ids, mask, images)


def load(
    path: str,
    dtype: str = "float32",
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
    quantize: str = "none",
    quant_block: int = 64,
) -> LoadedModel:
  """Loads a checkpoint directory of any supported kind (see module docstring).

  A quantised checkpoint (`python -m convert import --quantize`) loads as it is stored.
  quantize (int8 | int4 | nf4), quant_block: a float checkpoint's kernels that
  compute.quant.targets names quantised after reading (a PyTorch directory's as each is
  read), from their values at `dtype`; a checkpoint quantised already is refused
  (ValueError). With a mesh, leaves are placed by the logical-axis rules of the config
  they belong to (the quantised one's for codes and scales).
  """
  from dsvl_jax.checkpoint.formats import read_any  # pylint: disable=g-import-not-at-top

  def shardings_fn(cfg):
    return sharding.logical_to_mesh(logical_axes(cfg), mesh, shapes=abstract_params(cfg))

  cfg, params = read_any(
      path,
      dtype=dtype,
      shardings_fn=shardings_fn if mesh else None,
      progress=progress,
      quantize=quantize,
      quant_block=quant_block,
  )
  return LoadedModel(cfg, DeepseekVL(cfg), params, mesh)

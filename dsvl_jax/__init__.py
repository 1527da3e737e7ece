"""dsvl_jax: DeepSeek-VL in JAX/Flax."""

__version__ = "0.1.0"


def load(path: str, dtype: str = "float32", mesh=None, progress: bool = False):
  """Loads our checkpoint, a transformers directory or an original-release directory.

  Returns an object with .config, .module, .params and .logits(input_ids,
  attention_mask=None, images=None). See dsvl_jax/loading.py.
  """
  from dsvl_jax.loading import load as _load  # pylint: disable=g-import-not-at-top
  return _load(path, dtype=dtype, mesh=mesh, progress=progress)

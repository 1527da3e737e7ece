"""dsvl_jax: DeepSeek-VL in JAX/Flax."""

__version__ = "0.1.0"

"""Flax (linen) modules of DeepSeek-VL; see BUILD.md for why linen."""

from dsvl_jax.config.schema import ConfigError
from dsvl_jax.models.config import (
    AlignerConfig,
    ComputeConfig,
    LLMConfig,
    SamConfig,
    SiglipConfig,
    VLMConfig,
)
from dsvl_jax.models.llm import LLM, init_cache, positions_from_mask
from dsvl_jax.models.vlm import DeepseekVL

__all__ = [
    "AlignerConfig",
    "ComputeConfig",
    "ConfigError",
    "LLMConfig",
    "SamConfig",
    "SiglipConfig",
    "VLMConfig",
    "LLM",
    "init_cache",
    "positions_from_mask",
    "DeepseekVL",
]

"""Checkpoint conversion between PyTorch safetensors layouts and dsvl_jax parameters.

CLI: python -m convert {import,export} --help
"""

from dsvl_jax.checkpoint.convert import (
    detect_layout,
    from_params,
    params_to_state_dict,
    state_dict_to_params,
    to_params,
)
from dsvl_jax.checkpoint.mapping import ConversionError, param_specs

__all__ = [
    "ConversionError",
    "detect_layout",
    "from_params",
    "param_specs",
    "params_to_state_dict",
    "state_dict_to_params",
    "to_params",
]

"""Checkpoint conversion between PyTorch safetensors layouts and dsvl_jax parameters."""

from convert.mapping import (ConversionError, param_specs, params_to_state_dict,
                             state_dict_to_params)

__all__ = ["ConversionError", "param_specs", "params_to_state_dict", "state_dict_to_params"]

"""Parameter counts of the real 1.3B and 7B configs equal transformers' models.

Ours come from jax.eval_shape (nothing allocated); transformers' model is built from
the same hyper-parameters on the meta device.
"""

import hf_reference as ref
import pytest
import torch

from dsvl_jax.config.files import load_config
from dsvl_jax.models import VLMConfig
from dsvl_jax.models.init import abstract_params, count_params

# Sums of the per-module counts in reference section 1.2 (LLM + towers + aligner).
REFERENCE_TOTALS = {
    "deepseek_vl_1_3b": 1.653e9 + 303.7e6 + 6.3e6,
    "deepseek_vl_7b": 6.910e9 + 96.4e6 + 303.7e6 + 21.0e6,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_TOTALS))
def test_param_count_matches_transformers(name):
  cfg = VLMConfig.from_dict(load_config(f"configs/{name}.py").model)
  ours = count_params(abstract_params(cfg))
  with torch.device("meta"):
    hf_model = ref.model_class(cfg)(ref.hf_config(cfg))
  theirs = sum(p.numel() for p in hf_model.parameters())
  print(f"{name}: ours {ours:,}, transformers {theirs:,}")
  assert ours == theirs
  assert abs(ours - REFERENCE_TOTALS[name]) / REFERENCE_TOTALS[name] < 0.005

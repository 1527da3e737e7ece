"""DeepSeek-VL 1.3B (base/chat): SigLIP-L/16@384 + mlp_gelu aligner + DeepSeek-LLM-1.3B
(the "1.3b" preset of dsvl_jax/config/presets.py).

--config=configs/deepseek_vl_1_3b.py          inference (chat, serve, web, eval)
--config=configs/deepseek_vl_1_3b.py:stage2   the paper's stage 1, 2 or 3 (train/recipe.py)
"""

from dsvl_jax.config import presets
from dsvl_jax.config.args import parse_arg
from dsvl_jax.train import recipe

STAGES = {None: None, "stage1": 1, "stage2": 2, "stage3": 3}  # arg -> the paper's stage
ARGS = tuple(STAGES)  # every valid arg (tests render each)

# Micro-batches per step, fitted ahead of time (experiments/aot_compile.py, BUILD.md
# "Scale"): stage 2's 1024 rows in one pass (v5p-64: 16 rows per chip, 18 GiB of 95;
# v5e-256: 4 rows per chip, 4.3 GiB of 16).
GRAD_ACCUM_STEPS = {1: 1, 2: 1, 3: 1}


def get_config(arg=None):
  stage = parse_arg(arg, STAGES, __file__, what="stage")
  config = recipe.base_config(presets.model("1.3b"))
  if stage is None:
    return config
  return recipe.with_stage(config, "1.3b", stage, GRAD_ACCUM_STEPS[stage])

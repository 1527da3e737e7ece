"""DeepSeek-VL 1.3B (base/chat): SigLIP-L/16@384 + mlp_gelu aligner + DeepSeek-LLM-1.3B
(the "1.3b" preset of dsvl_jax/config/presets.py).

--config=configs/deepseek_vl_1_3b.py          inference (chat, serve, web, eval)
--config=configs/deepseek_vl_1_3b.py:stage2   the paper's stage 1, 2 or 3 (train/recipe.py)
"""

from dsvl_jax.train import recipe

ARGS = tuple(recipe.STAGE_ARGS)  # every valid arg (tests render each)

# Micro-batches per step, fitted ahead of time (experiments/aot_compile.py, BUILD.md
# "Scale"): stage 2's 1024 rows in one pass (v5p-64: 16 rows per chip, 18 GiB of 95;
# v5e-256: 4 rows per chip, 4.3 GiB of 16).
GRAD_ACCUM_STEPS = {1: 1, 2: 1, 3: 1}

get_config = recipe.paper_get_config("1.3b", GRAD_ACCUM_STEPS, __file__)

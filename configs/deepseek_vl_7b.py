"""DeepSeek-VL 7B (base/chat): hybrid SigLIP-L@384 + SAM-B@1024 tower, hybrid split
aligner, DeepSeek-LLM-7B (the "7b" preset of dsvl_jax/config/presets.py).

--config=configs/deepseek_vl_7b.py          inference (chat, serve, web, eval)
--config=configs/deepseek_vl_7b.py:stage2   the paper's stage 1, 2 or 3 (train/recipe.py)
"""

from dsvl_jax.train import recipe

ARGS = tuple(recipe.STAGE_ARGS)  # every valid arg (tests render each)

# Micro-batches per step, fitted ahead of time (experiments/aot_compile.py, BUILD.md
# "Scale"): stage 2's 2304 rows in 9 micro-batches (v5p-64: 36 rows per chip, 4 per
# micro-batch; v6e-256: 9 per chip, 1 per micro-batch); stage 3's 256 rows in one pass.
GRAD_ACCUM_STEPS = {1: 1, 2: 9, 3: 1}

get_config = recipe.paper_get_config("7b", GRAD_ACCUM_STEPS, __file__)

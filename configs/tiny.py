"""Tiny random DeepSeek-VL models for tests and the CPU demo (seconds, not hours).

--config=configs/tiny.py            SigLIP-only family (1.3B architecture)
--config=configs/tiny.py:hybrid     SigLIP + SAM family (7B architecture)
The models are the "tiny" and "tiny_hybrid" presets of dsvl_jax/config/presets.py;
a few steps of stage-2-style training on the built-in dataset (no files).
"""

from dsvl_jax.config import presets
from dsvl_jax.config.args import parse_arg
from dsvl_jax.data.config import default_config as data_config
from dsvl_jax.train import recipe
from dsvl_jax.train.config import (
    default_mesh_config,
    default_optimizer_config,
    default_train_config,
)

FAMILIES = {None: "tiny", "siglip": "tiny", "hybrid": "tiny_hybrid"}  # arg -> preset
ARGS = (None, "hybrid")  # every valid arg (tests render each); "siglip" is the same as None


def get_config(arg=None):
  config = recipe.base_config(
      presets.model(parse_arg(arg, FAMILIES, __file__, "family")), mode="train"
  )
  config.data = data_config(  # drawn scenes and text (data/synthetic.py)
      pack=True,  # several samples per row
      seq_len=512,  # bytes are tokens here (built-in byte tokenizer)
      global_batch_size=8,  # rows per step, all hosts
      max_images_per_row=4,  # image slots per multimodal row
      schedule="warmup",  # language share 1.0 at step 0 down to the paper's 7:3 ...
      warmup_steps=20,  # ... over these steps
      sources=dict(  # SourceConfig's defaults: synthetic, weight 1, 10,000 records, seed 0
          shapes=dict(modality="multimodal", synthetic_kinds=("caption", "interleaved", "chat")),
          words=dict(modality="text", synthetic_seed=1, synthetic_kinds=("text", "text_chat")),
      ),
  )
  # Stage 2 style (towers frozen); small vocabulary: whole rows projected at once.
  config.train = default_train_config(
      steps=20, log_every=5, checkpoint_every=10, keep_checkpoints=2
  )
  config.optimizer = default_optimizer_config(warmup_steps=2)  # cosine from 1e-3
  config.mesh = default_mesh_config(shape=(1, -1, 1), num_devices=0)  # (data, fsdp, tensor)
  return config

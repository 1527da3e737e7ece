"""Training configs for tests (no pytest import: the SIGTERM test's subprocess uses it)."""

from dsvl_jax.config.files import load_config


def run_config(family="siglip", **fields):
  """configs/tiny.py trimmed for tests: short packed rows, 4 rows, one device, a metric
  line per step. `fields` override dotted keys: run_config(**{"train.steps": 3})."""
  c = load_config(f"configs/tiny.py:{family}")
  c.data.seq_len = 192
  c.data.global_batch_size = 4
  c.data.max_images_per_row = 2
  c.data.system_prompt = ""
  c.data.warmup_steps = 2
  c.train.update(
      steps=6,
      log_every=1,
      checkpoint_every=100,
      progress=False,
      tensorboard=True,
      peak_flops=1e11,
      async_checkpoints=False,
  )
  c.mesh.num_devices = 1
  for key, value in fields.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c

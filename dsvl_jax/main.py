"""Entry point: python -m dsvl_jax.main --config=configs/<file>.py[:arg] [--workdir=DIR].

`config.mode` selects the job; every config field can be overridden on the command
line (--config.model.llm.num_layers=4). The config is validated before any work.
"""

from __future__ import annotations

import importlib

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where jobs write checkpoints and logs.")

# mode -> module with run(config, workdir); imported on use.
MODES = {"demo": "dsvl_jax.demo", "chat": "dsvl_jax.infer.chat"}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/tiny.py")
  if config.mode not in MODES:
    raise app.UsageError(f"config field 'mode': {config.mode!r} not in {sorted(MODES)}")
  importlib.import_module(MODES[config.mode]).run(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)

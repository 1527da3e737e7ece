"""Entry point: python -m dsvl_jax.main --config=configs/<file>.py[:arg] [--workdir=DIR].

`config.mode` selects the job (train, eval, chat, serve, web, demo); every config field can be
overridden on the command line (--config.optimizer.lr=1e-4). The config is validated
before any work; a bad field prints one line naming it and exits with status 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from dsvl_jax.config.files import loaded_or_exit
from dsvl_jax.config.schema import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a configs/*.py file[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where jobs write checkpoints and logs.")

# mode -> "module:function(config, workdir)"; the module is imported on use.
MODES = {
    "demo": "dsvl_jax.recipes.demo:run",
    "chat": "dsvl_jax.infer.chat:run",
    "train": "dsvl_jax.train.trainer:run",
    "eval": "dsvl_jax.eval.run:run",
    "serve": "dsvl_jax.serve.server:run",
    "web": "dsvl_jax.serve.server:run_web",
}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/tiny.py")
  loaded_or_exit(config, "mode")  # a config file that failed to load: one line, exit 2
  if not flags.FLAGS["verbosity"].present:  # library INFO chatter (orbax) off by default
    logging.set_verbosity(logging.WARNING)
  try:
    if config.get("mode") not in MODES:
      raise ConfigError(f"config field 'mode': {config.get('mode')!r} not in {sorted(MODES)}")
    from dsvl_jax.runtime import compile_cache, distributed  # pylint: disable=g-import-not-at-top

    for setting in distributed.prepare_host():  # before any device is touched
      logging.info("host set-up: %s", setting)
      if setting.startswith("JAX_PLATFORMS="):  # JAX read the variable at import
        import jax  # pylint: disable=g-import-not-at-top

        jax.config.update("jax_platforms", setting.split("=", 1)[1])
    distributed.initialize(config)  # before any device is touched (multi-host jobs)
    compile_cache.setup(config.get("compile_cache"))
    module, function = MODES[config.mode].split(":")
    getattr(importlib.import_module(module), function)(config, _WORKDIR.value)
  # One line, no traceback: the fix is in the command line (a field, or a path it names:
  # a data manifest, a checkpoint, a tokenizer that is not there).
  except (ConfigError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every command-line mistake as one line and exit 2: an
  override of a field the config does not have (ml_collections raises AttributeError
  while parsing, before main runs), a value of the wrong type."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # a config file that raised: its traceback is in the message
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    message = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
  except (AttributeError, KeyError) as e:
    inner: Any = e
    while isinstance(inner, BaseException) and inner.args:  # AttributeError(KeyError(str))
      inner = inner.args[0]
    message = (
        f"a --config override names a field the config does not have: "
        f"{' '.join(str(inner).split())}"
    )
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

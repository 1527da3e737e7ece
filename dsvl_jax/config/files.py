"""Loading `configs/*.py` files outside absl flags (tests, notebooks, tools).

`load_config("configs/tiny.py:hybrid")` is what `--config=configs/tiny.py:hybrid` gives
main.py: the file's `get_config(arg)`.
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]  # dsvl_jax/config/files.py -> the repo


def load_config(spec: str) -> ml_collections.ConfigDict:
  path, _, arg = spec.partition(":")
  file = pathlib.Path(path)
  if not file.is_absolute() and not file.exists():
    file = REPO_ROOT / file
  if not file.exists():
    raise FileNotFoundError(f"config file {path!r} not found")
  module_spec = importlib.util.spec_from_file_location(f"_dsvl_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def loaded_or_exit(config: ml_collections.ConfigDict, key: str) -> None:
  """Reads `key` of a config given by --config (its file loads lazily, on first read):
  a file that failed to load ends the program with one line and exit status 2 (the
  failure's last line, not its traceback)."""
  import sys  # pylint: disable=g-import-not-at-top

  try:
    config.get(key)
  except OSError as e:
    reason = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
    print(f"error: cannot load the config file: {reason}", file=sys.stderr)
    sys.exit(2)

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

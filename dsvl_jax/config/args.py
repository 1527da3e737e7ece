"""The argument of a config file (`--config=configs/deepseek_vl_7b.py:stage2`), parsed once.

A config file (or train/recipe.py for it) names what each argument selects, `None`
being no argument:

  VARIANTS = {None: None, "accurate": "accurate"}  # arg -> the run's variant
  ARGS = tuple(VARIANTS)  # every valid arg (tests render each)

  def get_config(arg=None):
    variant = parse_arg(arg, VARIANTS, __file__)

An argument the file does not take fails at load time with one line naming the file,
the argument and the ones it takes (main.py prints the line and exits 2).
"""

from __future__ import annotations

import pathlib
from typing import Mapping, TypeVar

T = TypeVar("T")


def parse_arg(
    arg: str | None, choices: Mapping[str | None, T], file: str, what: str = "argument"
) -> T:
  """What `arg` selects in `choices` ("" is no argument); else a ValueError."""
  key = arg or None
  if key in choices:
    return choices[key]
  path = pathlib.Path(file)
  names = [repr(c) for c in choices if c is not None] + (["none"] if None in choices else [])
  raise ValueError(
      f"{path.parent.name}/{path.name}: unknown {what} {arg!r}; use one of: {', '.join(names)}"
  )

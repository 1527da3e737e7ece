"""Tiny fixtures of every benchmark, written in its public release layout from PIL-drawn
images with known answers (one module per benchmark: `build(root) -> path`)."""

import importlib
import pathlib

NAMES = (
    "mmbench",
    "seedbench",
    "pope",
    "scienceqa",
    "mmmu",
    "ocrbench",
    "cmmmu",
    "mathvista",
    "textmc",
)


def build_all(root: pathlib.Path) -> dict[str, str]:
  """{benchmark: path to pass as '<benchmark>:<path>'}, each under root/<benchmark>."""
  return {
      name: str(importlib.import_module(f"benchmark_fixtures.{name}").build(root / name))
      for name in NAMES
  }

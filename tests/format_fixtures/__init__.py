"""Tiny fixtures of the public training-data formats, written in their release layouts
(one module per format; dsvl_jax/data/formats/).

Each module has
  build(root, **variant) -> dict       writes the files under root and returns the
                                        SourceConfig fields that read them
                                        ({"type", "modality", "paths", ...})
  expected_records(root, **variant)    what the reader yields, in its order: a record of
                                        our schema (sources.py; absolute image paths), or
                                        {"skip": reason} where it raises FormatError(reason)
with the same keyword arguments (each has defaults: the multimodal variant).
"""

from __future__ import annotations

import importlib

NAMES = ("llava", "parquet", "webdataset", "image_folder", "mmc4")


def module(name: str):
  return importlib.import_module(f"format_fixtures.{name}")


def good(expected: list[dict]) -> list[dict]:
  """The records of `expected` that become samples (no "skip")."""
  return [e for e in expected if "skip" not in e]

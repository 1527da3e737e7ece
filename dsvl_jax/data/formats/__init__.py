"""Public training-data formats read as they are released (BUILD.md "Training on your
data"): each module holds one format's reader, a `Source` (sources.py) whose
`__getitem__` returns the record in our schema (a dict: "text" or "messages", "images"
as absolute paths or encoded bytes, image placeholders in order), so the encoder,
shuffling, bad-data accounting and resuming are the jsonl source's.

  llava         LLaVA-style conversation JSON / jsonl (LLaVA-Instruct, ShareGPT4V, ...)
  parquet       Hugging Face datasets parquet shards (images as bytes / {"bytes", "path"})
  webdataset    tar shards: <key>.jpg|png|webp + <key>.json|txt
  image_folder  images with a .txt caption beside each, or a captions.tsv
  mmc4          MMC4 interleaved documents (text_list + image_info)

A record that cannot become a sample raises `common.FormatError` with its reason (the
skip counter's key); the reader itself holds only paths and offsets, so it pickles
cheaply to grain workers.
"""

from __future__ import annotations

import importlib

MODULES = {
    "llava": "dsvl_jax.data.formats.llava",
    "parquet": "dsvl_jax.data.formats.parquet",
    "webdataset": "dsvl_jax.data.formats.webdataset",
    "image_folder": "dsvl_jax.data.formats.image_folder",
    "mmc4": "dsvl_jax.data.formats.mmc4",
}


def open_format(src):
  """The reader of a configured source (data.config.SourceConfig) of a public format:
  each module's `open_source(src)`."""
  return importlib.import_module(MODULES[src.type]).open_source(src)

"""Shared builders for the data-pipeline tests: configs, manifests on disk, decoding."""

from __future__ import annotations

import json
import pathlib

import numpy as np
from conftest import tiny_config
from PIL import Image

from dsvl_jax.data.config import DataConfig
from dsvl_jax.data.pipeline import TrainDataset
from dsvl_jax.processor.layout import TokenLayout
from dsvl_jax.processor.tokenizer import EOS_TOKEN, IMAGE_TOKEN, Tokenizer

SYNTHETIC = {
    "shapes": dict(
        type="synthetic",
        modality="multimodal",
        weight=3.0,
        synthetic_kinds=["caption", "interleaved", "chat"],
    ),
    "words": dict(
        type="synthetic", modality="text", synthetic_seed=1, synthetic_kinds=["text", "text_chat"]
    ),
}


def layout(family: str = "siglip") -> TokenLayout:
  return TokenLayout.of(tiny_config(family))


def data_config(**overrides) -> DataConfig:
  d = dict(
      stage=2,
      pack=False,
      seq_len=512,
      global_batch_size=4,
      max_images_per_row=2,
      seed=0,
      multimodal_share=0.5,
      process_index=0,
      process_count=1,
      sources=SYNTHETIC,
  )
  d.update(overrides)
  return DataConfig.from_dict(d)


def take(
    cfg: DataConfig,
    n: int,
    family: str = "siglip",
    state=None,
    process_index: int | None = None,
    process_count: int | None = None,
):
  """n batches (and the iterator's state after them) from a fresh pipeline."""
  it = iter(TrainDataset(cfg, layout(family), process_index, process_count))
  try:
    if state is not None:
      it.set_state(state)
    batches = [next(it) for _ in range(n)]
    return batches, it.get_state(), it.metrics()
  finally:
    it.close()


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x["modality"] == y["modality"] and x["step"] == y["step"]
    assert set(x) == set(y)
    for k in x:
      if isinstance(x[k], np.ndarray):
        assert x[k].dtype == y[k].dtype, k
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def byte_tokenizer(family: str = "siglip") -> Tokenizer:
  return Tokenizer.builtin_bytes(layout(family))


def write_image(path: pathlib.Path, seed: int, size=(40, 30)) -> str:
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path)
  return path.name


def write_manifest(directory: pathlib.Path, records: list, name="data.jsonl") -> pathlib.Path:
  """Records are dicts (written as JSON lines) or raw strings (written verbatim)."""
  path = directory / name
  lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
  path.write_text("\n".join(lines) + "\n")
  return path


def good_records(directory: pathlib.Path, n: int = 6) -> list[dict]:
  """Captions and a two-image chat with image files next to the manifest."""
  out = []
  for i in range(n):
    img = write_image(directory / f"img{i}.png", i)
    if i % 3 == 2:
      img2 = write_image(directory / f"img{i}b.jpg", 100 + i, (25, 50))
      out.append(
          {
              "kind": "chat",
              "images": [img, img2],
              "messages": [
                  {"role": "user", "content": f"{IMAGE_TOKEN}What is {i}?"},
                  {"role": "assistant", "content": f"It is {i}."},
                  {"role": "user", "content": f"And {IMAGE_TOKEN}this one?"},
                  {"role": "assistant", "content": f"That is {i + 1}."},
              ],
          }
      )
    else:
      out.append({"kind": "caption", "images": [img], "text": f"{IMAGE_TOKEN}Picture {i}."})
  return out


__all__ = [
    "EOS_TOKEN",
    "IMAGE_TOKEN",
    "SYNTHETIC",
    "assert_same_batches",
    "byte_tokenizer",
    "data_config",
    "good_records",
    "layout",
    "take",
    "write_image",
    "write_manifest",
]

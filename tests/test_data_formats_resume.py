"""Every public-format source resumes exactly: the batches after `set_state` are the
ones an uninterrupted pipeline gives, bit for bit, without workers (each format alone)
and with two grain workers (all formats mixed in one pipeline), and what a worker
skipped is counted by reason in the restored iterator's metrics as well."""

from __future__ import annotations

import importlib

import pytest
from data_fixtures import assert_same_batches, data_config, take

FORMATS = ("llava", "parquet", "webdataset", "image_folder", "mmc4")


def _source(name: str, root) -> dict:
  fields = importlib.import_module(f"format_fixtures.{name}").build(root / name)
  return {**fields, "modality": "multimodal"}


def _config(sources: dict, **overrides):
  base = dict(
      sources=sources,
      multimodal_share=1.0,
      global_batch_size=2,
      max_images_per_row=4,
      seq_len=1024,
  )
  return data_config(**{**base, **overrides})


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_resumes_exactly_without_workers(name, tmp_path):
  cfg = _config({name: _source(name, tmp_path)})
  expected, _, _ = take(cfg, 6)
  first, state, _ = take(cfg, 3)
  assert_same_batches(expected[:3], first)
  rest, _, _ = take(cfg, 3, state=state)
  assert_same_batches(expected[3:], rest)


def test_all_formats_mixed_resume_exactly_with_two_workers(tmp_path):
  sources = {name: _source(name, tmp_path) for name in FORMATS}
  cfg = _config(sources, num_workers=2)
  expected, _, uninterrupted = take(cfg, 8)
  assert all(uninterrupted[f"data/samples/{n}"] > 0 for n in FORMATS)
  assert uninterrupted["data/skipped"] > 0  # the fixtures hold bad records
  first, state, _ = take(cfg, 4)
  assert_same_batches(expected[:4], first)
  rest, _, resumed = take(cfg, 4, state=state)
  assert_same_batches(expected[4:], rest)
  assert resumed == uninterrupted  # samples per source and skips by reason included

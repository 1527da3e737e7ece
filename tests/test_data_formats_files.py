"""Public formats read from files as released: LLaVA JSON/jsonl, image-caption folders,
MMC4 shards (dsvl_jax/data/formats/{llava,image_folder,mmc4}.py).

The fixtures (tests/format_fixtures/) are written in each release's layout, with the field
names and nesting their documentation gives (cited in each fixture module: LLaVA's
docs/Finetune_Custom_Data.md and train.py, ShareGPT4V's dataset card, img2dataset's README,
allenai/mmc4's README). Each record must become exactly the sample that the equivalent
record-schema jsonl line (written by hand in the fixture) gives: same ids, loss mask and
pixels, through the pipeline's encoder and through TrainDataset batches; bad records are
counted by reason.
"""

from __future__ import annotations

import collections
import json
import pickle

import numpy as np
import pytest
from data_fixtures import (
    IMAGE_TOKEN,
    assert_same_batches,
    byte_tokenizer,
    data_config,
    layout,
    take,
    write_manifest,
)
from format_fixtures import good, module

from dsvl_jax.data import formats
from dsvl_jax.data.encoding import SampleEncoder, Skipped, TrainSample
from dsvl_jax.data.formats.common import FormatError
from dsvl_jax.data.formats.llava import LlavaSource
from dsvl_jax.data.sources import JsonlSource

VARIANTS = [
    ("llava", {"layout": "json"}),
    ("llava", {"layout": "jsonl"}),
    ("llava", {"layout": "json", "modality": "text"}),
    ("llava", {"layout": "jsonl", "modality": "text"}),
    ("image_folder", {"layout": "txt"}),
    ("image_folder", {"layout": "tsv"}),
    ("mmc4", {}),
    ("mmc4", {"modality": "text"}),
]
IDS = [f"{n}-" + "-".join(v.values()) if v else n for n, v in VARIANTS]


def _cfg(fields: dict, **overrides):
  """One source, read in order, one sample a row: batch k holds the k-th good record."""
  text = fields.get("modality") == "text"
  d = dict(
      sources={"src": fields},
      multimodal_share=0.0 if text else 1.0,
      seq_len=1024,
      global_batch_size=1,
      max_images_per_row=2,
      shuffle=False,
  )
  return data_config(**{**d, **overrides})


def _open(fields: dict):
  cfg = _cfg(fields)
  return formats.open_format(dict(cfg.sources)["src"]), cfg


def _build(tmp_path, name, variant):
  fx = module(name)
  fields = fx.build(tmp_path, **variant)
  expected = fx.expected_records(tmp_path, **variant)
  manifest = write_manifest(tmp_path, good(expected), "expected.jsonl")
  return fields, expected, manifest


@pytest.mark.parametrize("name,variant", VARIANTS, ids=IDS)
def test_each_record_is_the_sample_of_its_record_schema_line(tmp_path, name, variant):
  fields, expected, manifest = _build(tmp_path, name, variant)
  reader, cfg = _open(fields)
  assert len(reader) == len(expected)
  modality = fields["modality"]
  encoder = SampleEncoder(
      cfg, layout(), {"fmt": reader, "ref": JsonlSource(manifest)}, modality, byte_tokenizer()
  )
  j = 0
  for i, want in enumerate(expected):
    got = encoder(("fmt", i))
    if "skip" in want:
      assert isinstance(got, Skipped) and got.reason == want["skip"], (i, got)
      with pytest.raises(FormatError):
        reader[i]
      continue
    assert reader[i] == want, i  # the record itself, kind and absolute paths included
    ref = encoder(("ref", j))
    j += 1
    assert isinstance(got, TrainSample) and isinstance(ref, TrainSample), (i, got, ref)
    np.testing.assert_array_equal(got.ids, ref.ids, err_msg=f"record {i}")
    np.testing.assert_array_equal(got.loss_mask, ref.loss_mask, err_msg=f"record {i}")
    assert got.images.shape[0] == len(want.get("images", ())) == ref.images.shape[0]
    np.testing.assert_array_equal(got.images, ref.images, err_msg=f"record {i}")
  assert j == len(good(expected)) > 0


@pytest.mark.parametrize("name,variant", VARIANTS, ids=IDS)
def test_batches_equal_the_jsonl_ones_and_skips_are_counted_by_reason(tmp_path, name, variant):
  fields, expected, manifest = _build(tmp_path, name, variant)
  steps = len(good(expected)) + 2  # one pass and into the second epoch
  batches, _, metrics = take(_cfg(fields), steps)
  ref_fields = {"type": "jsonl", "modality": fields["modality"], "paths": [str(manifest)]}
  ref_batches, _, ref_metrics = take(_cfg(ref_fields), steps)
  assert_same_batches(batches, ref_batches)
  # Row 0 reads the records in order, cycling; every bad one before the last good counts.
  want, seen, i = collections.Counter(), 0, 0
  while seen < steps:
    record = expected[i % len(expected)]
    i += 1
    if "skip" in record:
      want[f"data/skipped/{record['skip']}"] += 1
    else:
      seen += 1
  assert want  # each variant has bad records
  skipped = {k: v for k, v in metrics.items() if k.startswith("data/skipped/")}
  assert skipped == {k: float(v) for k, v in want.items()}
  assert metrics["data/skipped"] == sum(want.values()) and ref_metrics["data/skipped"] == 0
  assert metrics["data/samples/src"] == steps


def test_llava_describe_names_the_file_the_record_and_its_id(tmp_path):
  json_reader, _ = _open(module("llava").build(tmp_path, layout="json"))
  assert json_reader.describe(0) == "llava_v1_5_mix665k.json record 0 id '000000033471'"
  assert json_reader.describe(1) == "llava_v1_5_mix665k.json record 2 id 'sa_15468'"
  assert json_reader.describe(5) == "llava_v1_5_mix665k.json record 6"  # not an object
  lines, _ = _open(module("llava").build(tmp_path, layout="jsonl"))
  assert lines.describe(0) == "llava_v1_5_mix665k.jsonl line 1 id '000000033471'"
  assert lines.describe(1) == "llava_v1_5_mix665k.jsonl line 4"  # the truncated line
  assert lines.describe(2) == "llava_v1_5_mix665k.jsonl line 5 id 'sa_15468'"
  mmc4, _ = _open(module("mmc4").build(tmp_path))
  assert mmc4.describe(4) == "docs_shard_1_v2.jsonl line 2"
  folder, _ = _open(module("image_folder").build(tmp_path, layout="tsv"))
  assert folder.describe(0) == "captions.tsv line 3"
  assert folder.describe(2) == "extra/d.jpg"


def test_a_json_array_reader_holds_offsets_and_pickles_small(tmp_path):
  """3,000 records (a tenth text-only), non-ASCII text throughout: the reader keeps byte
  spans, not records, so it pickles to a fraction of the file and reads the same after."""

  def record(i):
    if i % 10 == 0:
      return {"id": f"t{i}", "conversations": [{"from": "human", "value": "¿Qué?"}] * 1}
    return {
        "id": f"r{i}",
        "image": f"img/{i % 7}.jpg",
        "conversations": [
            {"from": "human", "value": f"<image>\nQuestion {i}: « {'é' * (i % 5)} » what is it?"},
            {"from": "gpt", "value": "日本の写真です。" * 8 + str(i)},
        ],
    }

  records = [record(i) for i in range(3000)]
  path = tmp_path / "big.json"
  path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
  reader = LlavaSource(path, str(tmp_path), "multimodal")
  kept = [r for r in records if "image" in r]
  assert len(reader) == len(kept) == 2700
  size = path.stat().st_size
  assert len(pickle.dumps(reader)) < size / 15, (len(pickle.dumps(reader)), size)
  reader[0]  # opens the file: the handle must not travel
  clone = pickle.loads(pickle.dumps(reader))
  for k in (0, 1, 1234, 2699):
    turns = kept[k]["conversations"]
    assert (
        clone[k]
        == reader[k]
        == {
            "kind": "chat",
            "images": [str(tmp_path / kept[k]["image"])],
            "messages": [
                {"role": "user", "content": turns[0]["value"].replace("<image>", IMAGE_TOKEN)},
                {"role": "assistant", "content": turns[1]["value"]},
            ],
        }
    )
  assert len(LlavaSource(path, "", "text")) == 300


def test_llava_image_field_decides_the_modality(tmp_path):
  """null / [] "image": a text chat; a non-path "image" or a broken line: kept by both
  sources (each counts it as malformed); a JSON array that does not parse fails at open."""
  chat = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]
  lines = [
      json.dumps({"image": None, "conversations": chat}),
      json.dumps({"image": [], "conversations": chat}),
      json.dumps({"image": 5, "conversations": chat}),
      json.dumps({"image": "a.png", "conversations": chat}),  # no marker, one image
      '{"image": "a.png", "convers',
  ]
  path = tmp_path / "mixed.jsonl"
  path.write_text("\n".join(lines) + "\n")
  text, images = LlavaSource(path, "", "text"), LlavaSource(path, "", "multimodal")
  assert len(text) == 4 and len(images) == 3
  assert (
      text[0]
      == text[1]
      == {
          "kind": "text_chat",
          "messages": [
              {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello."},
          ],
      }
  )
  for reader, bad in ((text, (2, 3)), (images, (0, 1, 2))):
    for k in bad:
      with pytest.raises(FormatError) as e:
        reader[k]
      assert e.value.reason == "malformed"
  broken = tmp_path / "broken.json"
  broken.write_text('[{"id": 1, "conversations": []}, {"id": ')
  with pytest.raises(ValueError, match="not a JSON array"):
    LlavaSource(broken)


def test_an_image_folder_source_must_be_multimodal(tmp_path):
  fields = module("image_folder").build(tmp_path)
  with pytest.raises(ValueError, match="modality"):
    _open({**fields, "modality": "text"})
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no images or captions"):
    _open({"type": "image_folder", "paths": [str(tmp_path / "empty")]})

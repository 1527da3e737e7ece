"""The shard formats, read as released: Hugging Face parquet (`type="parquet"`) and
WebDataset tars (`type="webdataset"`).

Fixtures (tests/format_fixtures/parquet.py, webdataset.py; their docstrings cite the
layouts): HuggingFaceH4/llava-instruct-mix-vsft (README dataset_info: messages with
content parts, images a Sequence(Image) = list<struct<bytes, path>> as
huggingface/datasets src/datasets/features/image.py writes it), lmms-lab/LLaVA-NeXT-Data
(conversations {from, value}, image an Image struct), img2dataset's parquet and tar output
(rom1504/img2dataset img2dataset/writer.py), wikimedia/wikipedia, and WebDataset's key
convention (webdataset/webdataset webdataset/tariterators.py). Each record must become
exactly the sample its hand-written record-schema jsonl line gives (ids, loss mask,
pixels), and each refused one a skip with its reason.
"""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_fixtures import (
    assert_same_batches,
    byte_tokenizer,
    data_config,
    layout,
    take,
    write_manifest,
)
from format_fixtures import parquet as parquet_fixture
from format_fixtures import webdataset as webdataset_fixture

from dsvl_jax.data.encoding import SampleEncoder, Skipped, TrainSample
from dsvl_jax.data.formats.common import FormatError
from dsvl_jax.data.pipeline import open_source
from dsvl_jax.data.sources import JsonlSource

OK = "ok"
# (fixture, variant) -> what the pipeline makes of each record, by hand: a sample ("ok")
# or the skip reason (the reader's FormatError, or the encoder's own check)
CASES = {
    ("parquet", "vsft", "multimodal"): [
        OK, OK, OK, "modality", OK, "bad_image", "missing_image", "malformed", OK
    ],
    ("parquet", "llava_next", "multimodal"): [OK, "modality", "malformed", OK],
    ("parquet", "llava_next", "text"): ["modality", OK, "malformed", "modality"],
    ("parquet", "img2dataset", "multimodal"): [OK, "empty", OK],
    ("parquet", "wikipedia", "text"): [OK, OK],
    ("webdataset", None, "multimodal"): [
        OK, OK, "missing_member", "missing_member", OK, OK, OK, "malformed", OK, OK,
        "bad_image", "missing_member", OK,
    ],
    ("webdataset", None, "text"): [OK, OK],
}  # fmt: skip
FIXTURES = {"parquet": parquet_fixture, "webdataset": webdataset_fixture}


def _variant(_, layout_name, modality):
  return {"modality": modality, **({"layout": layout_name} if layout_name else {})}


def _config(sources, modality, **overrides):
  share = 1.0 if modality == "multimodal" else 0.0
  return data_config(sources=sources, multimodal_share=share, stage=3, **overrides)


def _open(fields: dict):
  """The pipeline's reader of one configured source (validated as configs are)."""
  return open_source(dict(_config({"f": fields}, fields["modality"]).sources)["f"], 0)


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join(filter(None, c)))
def test_each_record_is_the_sample_of_its_record_schema_line(case, tmp_path):
  name, layout_name, modality = case
  fixture, variant = FIXTURES[name], _variant(*case)
  fields = fixture.build(tmp_path / "release", **variant)
  expected = fixture.expected_records(tmp_path / "release", **variant)
  lines = [e for e in expected if "skip" not in e]  # the equivalent jsonl, by hand
  manifest = write_manifest(tmp_path, lines)
  cfg = _config({"fmt": fields, "ref": {"type": "jsonl", "paths": [str(manifest)]}}, modality)
  reader = open_source(dict(cfg.sources)["fmt"], 0)
  assert len(reader) == len(expected) == len(CASES[case])
  encoder = SampleEncoder(
      cfg, layout(), {"fmt": reader, "ref": JsonlSource(manifest)}, modality, byte_tokenizer()
  )
  outcomes, line = [], 0
  for i, want in enumerate(expected):
    got = encoder(("fmt", i))
    outcomes.append(OK if isinstance(got, TrainSample) else got.reason)
    if "skip" in want:
      with pytest.raises(FormatError) as e:
        reader[i]
      assert e.value.reason == want["skip"]
      continue
    record = reader[i]  # the record itself: text or messages verbatim, the same image bytes
    assert {k: v for k, v in record.items() if k != "images"} == {
        k: v for k, v in want.items() if k != "images"
    }
    assert len(record["images"]) == len(want["images"])
    for image, path in zip(record["images"], want["images"]):  # a path, or that file's bytes
      assert image == (path if isinstance(image, str) else open(path, "rb").read())
    ref = encoder(("ref", line))
    line += 1
    assert type(got) is type(ref)
    if isinstance(got, Skipped):
      assert got.reason == ref.reason
    else:
      assert len(got.images) == len(want["images"])
      np.testing.assert_array_equal(got.ids, ref.ids)
      np.testing.assert_array_equal(got.loss_mask, ref.loss_mask)
      np.testing.assert_array_equal(got.images, ref.images)
  assert outcomes == CASES[case]


@pytest.mark.parametrize(
    "name,layout_name,skips",
    [
        ("parquet", "vsft", {"modality": 1, "bad_image": 1, "missing_image": 1, "malformed": 1}),
        ("webdataset", None, {"missing_member": 3, "malformed": 1, "bad_image": 1}),
    ],
)
def test_batches_are_the_jsonl_ones_and_skips_are_counted_by_reason(
    name, layout_name, skips, tmp_path
):
  """One epoch in order through TrainDataset: the format's batches are the equivalent
  jsonl's bit for bit, and its metrics count every refused record by reason."""
  fixture, variant = FIXTURES[name], _variant(name, layout_name, "multimodal")
  fields = fixture.build(tmp_path / "release", **variant)
  lines = [e for e in fixture.expected_records(tmp_path / "release", **variant) if "skip" not in e]
  manifest = write_manifest(tmp_path, lines)
  n = CASES[(name, layout_name, "multimodal")].count(OK)
  opts = dict(shuffle=False, global_batch_size=1)
  batches, _, metrics = take(_config({"f": fields}, "multimodal", **opts), n)
  ref = {"f": {"type": "jsonl", "paths": [str(manifest)]}}
  assert_same_batches(batches, take(_config(ref, "multimodal", **opts), n)[0])
  assert metrics["data/samples/f"] == n
  assert {k: v for k, v in metrics.items() if k.startswith("data/skipped/")} == {
      f"data/skipped/{k}": v for k, v in skips.items()
  }


@pytest.mark.parametrize("name", ["parquet", "webdataset"])
def test_readers_pickle_small_and_read_alike_after(name, tmp_path):
  """Grain sends the reader to every worker: it holds paths and offsets only (no rows,
  no file handles, not the last row group it read), and a copy reads the same records."""
  fixture = FIXTURES[name]
  reader = _open(fixture.build(tmp_path))
  before = pickle.dumps(reader)
  records = [reader[i] for i in (0, 1, len(reader) - 1)]
  after = pickle.dumps(reader)
  assert len(after) == len(before) < 4096  # the images it read are ~30 KB
  copy = pickle.loads(after)
  assert [copy[i] for i in (0, 1, len(reader) - 1)] == records


def test_parquet_reads_each_row_group_once_and_only_its_columns(tmp_path, monkeypatch):
  reads = []
  original = pq.ParquetFile.read_row_group

  def counting(self, i, columns=None, **kw):
    reads.append((i, tuple(columns)))
    return original(self, i, columns=columns, **kw)

  monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
  reader = _open(parquet_fixture.build(tmp_path / "vsft"))
  for i in range(len(reader)):
    try:
      reader[i]
    except FormatError:
      pass
  # 9 rows in 2 + 3 row groups of 2 rows: each group read once, in order
  assert [i for i, _ in reads] == [0, 1, 0, 1, 2]
  assert reader.describe(6) == "train-00001-of-00002.parquet row group 1 row 0"
  reads.clear()
  reader = _open(parquet_fixture.build(tmp_path / "i2d", layout="img2dataset"))
  reader[2]
  assert reads == [(0, ("txt", "jpg"))]  # not key, url, status, width, height


def test_parquet_column_errors_name_the_file_and_the_column(tmp_path):
  def opened(**fields):
    return _open(fields)

  vsft = parquet_fixture.build(tmp_path / "vsft")
  wiki = parquet_fixture.build(tmp_path / "wiki", layout="wikipedia")
  shard = "train-00000-of-00002.parquet"
  with pytest.raises(ValueError, match=rf"{shard}: no column 'conversations' .* or 'caption'"):
    opened(**vsft, messages_column="conversations", text_column="caption")
  with pytest.raises(ValueError, match=r"train-00000-of-00041.parquet: no column 'images'"):
    opened(**wiki)  # a multimodal source needs images
  assert len(opened(**{**wiki, "modality": "text"})) == 2  # a text source does not
  with pytest.raises(ValueError, match=rf"{shard}: column 'messages' is list.*not an image"):
    opened(**vsft, images_column="messages")
  with pytest.raises(ValueError, match=r"column 'images' is list.*not a string"):
    opened(**vsft, text_column="images", messages_column="none")
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "x.parquet").write_text("not parquet")
  with pytest.raises(ValueError, match=r"x.parquet: not a parquet file"):
    opened(**{**vsft, "paths": [str(tmp_path / "bad")]})


def test_webdataset_describes_keys_and_refuses_compressed_shards(tmp_path):
  fields = webdataset_fixture.build(tmp_path)
  reader = _open(fields)
  assert reader.describe(4) == "00001.tar key 'part/000000004'"
  assert [reader.key(i) for i in (7, 8, 9, 10, 11)] == [
      "000000007", "000000008", "000000009", "000000010", "000000012"
  ]  # fmt: skip
  shard = tmp_path / "shards" / "00000.tar"
  (tmp_path / "gz").mkdir()
  (tmp_path / "gz" / "00000.tar").write_bytes(gzip.compress(shard.read_bytes()))
  with pytest.raises(ValueError, match=r"00000.tar: not an uncompressed tar"):
    _open({**fields, "paths": [str(tmp_path / "gz")]})

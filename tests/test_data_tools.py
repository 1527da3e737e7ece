"""The data tools: `convert_dataset` (any source -> jsonl / ArrayRecord) and `inspect`."""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from data_fixtures import IMAGE_TOKEN, data_config, layout, write_image, write_manifest
from PIL import Image

from dsvl_jax.config.files import REPO_ROOT, load_config
from dsvl_jax.data import convert_dataset, synthetic
from dsvl_jax.data import inspect as inspect_tool
from dsvl_jax.data.config import SourceConfig
from dsvl_jax.data.encoding import SampleEncoder, TrainSample
from dsvl_jax.data.formats import open_format
from dsvl_jax.data.formats.common import FormatError
from dsvl_jax.data.mixing import MULTIMODAL, TEXT
from dsvl_jax.data.sources import (
    ArrayRecordSource,
    InMemorySource,
    JsonlSource,
    RecordError,
    SyntheticSource,
    parse_record,
)
from dsvl_jax.processor.tokenizer import EOS_TOKEN

CFG = data_config(stage=3, seq_len=2048, max_images_per_row=4)
LAYOUT = layout()  # the tiny SigLIP family: 32 x 32 images, 16 tokens each


def encode_all(source) -> list[TrainSample]:
  """Every record of a source as the pipeline encodes it (by the encoder of its kind)."""
  encoders = {m: SampleEncoder(CFG, LAYOUT, {"s": source}, m) for m in (TEXT, MULTIMODAL)}
  out = []
  for i in range(len(source)):
    images = parse_record(source[i], source.base_dir).images
    sample = encoders[MULTIMODAL if images else TEXT](("s", i))
    assert isinstance(sample, TrainSample), sample
    out.append(sample)
  return out


def assert_same_samples(a: list[TrainSample], b: list[TrainSample]) -> None:
  assert len(a) == len(b) > 0
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.ids, y.ids)
    np.testing.assert_array_equal(x.loss_mask, y.loss_mask)
    assert x.images.dtype == y.images.dtype == np.uint8
    np.testing.assert_array_equal(x.images, y.images)


def dealt(paths: list[pathlib.Path], n: int) -> list[int]:
  """The record order of ArrayRecordSource(paths) for n records dealt round-robin."""
  return [j for s in range(len(paths)) for j in range(s, n, len(paths))]


def image_bytes(fmt: str, seed: int, size=(36, 20)) -> bytes:
  rng = np.random.default_rng(seed)
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(buf, fmt)
  return buf.getvalue()


def chat(*turns: str) -> list[dict[str, str]]:
  return [{"role": ("user", "assistant")[k % 2], "content": t} for k, t in enumerate(turns)]


def mixed_records(folder: pathlib.Path) -> list[dict]:
  """Record-schema lines: a caption, a two-image chat, a document and a text chat."""
  a, b = write_image(folder / "a.png", 1), write_image(folder / "b.jpg", 2, (25, 50))
  return [
      {"kind": "caption", "images": [a], "text": f"{IMAGE_TOKEN}A noisy picture."},
      {
          "kind": "chat",
          "images": [a, b],
          "messages": chat(f"{IMAGE_TOKEN}What is it?", "Noise.", f"And {IMAGE_TOKEN}?", "More."),
      },
      {"kind": "text", "text": "A plain document."},
      {"kind": "text_chat", "messages": chat("What is 2 plus 3?", "5.")},
  ]


# ----------------------------------------------------------------- convert_dataset


def test_a_jsonl_manifest_round_trips_to_jsonl_and_array_record(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  manifest = write_manifest(data, mixed_records(data))
  original = encode_all(JsonlSource(manifest))
  src = SourceConfig(type="jsonl", paths=(str(manifest),))

  counts = convert_dataset.convert(src, tmp_path / "out" / "far.jsonl")
  assert counts == {"written": 4, "skipped": 0, "images": 3, "written/multimodal": 2,
                    "written/text": 2}  # fmt: skip
  far = [json.loads(line) for line in (tmp_path / "out" / "far.jsonl").read_text().splitlines()]
  assert far[1]["images"] == [str(data / "a.png"), str(data / "b.jpg")]  # outside: absolute
  assert_same_samples(encode_all(JsonlSource(tmp_path / "out" / "far.jsonl")), original)

  # Beside its images: relative paths, so the folder can move as a whole.
  convert_dataset.convert(src, data / "sub" / "near.jsonl")
  near = [json.loads(line) for line in (data / "sub" / "near.jsonl").read_text().splitlines()]
  assert near[1]["images"] == [str(data / "a.png"), str(data / "b.jpg")]  # not inside sub/
  convert_dataset.convert(src, data / "near.jsonl")
  near = [json.loads(line) for line in (data / "near.jsonl").read_text().splitlines()]
  assert near[1]["images"] == ["a.png", "b.jpg"] and "images" not in near[2]
  moved = tmp_path / "moved"
  shutil.move(data, moved)
  assert_same_samples(encode_all(JsonlSource(moved / "near.jsonl")), original)

  src = SourceConfig(type="jsonl", paths=(str(moved / "data.jsonl"),))
  counts = convert_dataset.convert(src, tmp_path / "ar" / "x.array_record", shards=2)
  assert counts["written"] == 4 and counts["images"] == 3
  shards = sorted((tmp_path / "ar").iterdir())
  assert [p.name for p in shards] == [
      "x-00000-of-00002.array_record",
      "x-00001-of-00002.array_record",
  ]
  converted = encode_all(ArrayRecordSource([str(p) for p in shards]))
  assert_same_samples(converted, [original[j] for j in dealt(shards, 4)])
  # ... and back: the embedded image files come out as files again, byte for byte.
  src = SourceConfig(type="array_record", paths=tuple(map(str, shards)))
  assert convert_dataset.convert(src, tmp_path / "back.jsonl")["written"] == 4
  assert_same_samples(encode_all(JsonlSource(tmp_path / "back.jsonl")), converted)
  files = {p.name: p.read_bytes() for p in (tmp_path / "back_images").iterdir()}
  assert files == {  # the chat went to shard 1, the caption to shard 0
      "00000000_0.png": (moved / "a.png").read_bytes(),
      "00000002_0.png": (moved / "a.png").read_bytes(),
      "00000002_1.jpg": (moved / "b.jpg").read_bytes(),
  }


def test_byte_and_pil_images_land_as_files_with_identical_bytes(tmp_path):
  png, jpg, webp = image_bytes("PNG", 1), image_bytes("JPEG", 2), image_bytes("WEBP", 3)
  drawn = synthetic.sample(0, 1, 48, "caption")  # a PIL image
  records = [
      {"kind": "caption", "images": [png], "text": f"{IMAGE_TOKEN}Bytes."},
      {"kind": "text", "text": "No image here."},
      {"kind": "chat", "images": [jpg, webp], "messages": chat(f"{IMAGE_TOKEN}{IMAGE_TOKEN}?", "Two.")},
      drawn,
  ]  # fmt: skip
  src = InMemorySource(records)
  original = encode_all(src)

  counts = convert_dataset.convert(src, tmp_path / "conv.jsonl")
  assert counts["written"] == 4 and counts["images"] == 4 and counts["skipped"] == 0
  folder = tmp_path / "conv_images"
  assert sorted(p.name for p in folder.iterdir()) == [
      "00000000_0.png",
      "00000002_0.jpg",
      "00000002_1.webp",
      "00000003_0.png",
  ]
  assert (folder / "00000000_0.png").read_bytes() == png
  assert (folder / "00000002_0.jpg").read_bytes() == jpg  # as given: no re-encoding
  assert (folder / "00000002_1.webp").read_bytes() == webp
  lines = [json.loads(x) for x in (tmp_path / "conv.jsonl").read_text().splitlines()]
  assert lines[2]["images"] == ["conv_images/00000002_0.jpg", "conv_images/00000002_1.webp"]
  assert_same_samples(encode_all(JsonlSource(tmp_path / "conv.jsonl")), original)

  convert_dataset.convert(src, tmp_path / "conv.array_record")
  framed = ArrayRecordSource(str(tmp_path / "conv.array_record"))
  assert parse_record(framed[2]).images == (jpg, webp)
  assert_same_samples(encode_all(framed), original)


def test_a_synthetic_source_config_converts_to_the_same_samples(tmp_path):
  kinds = ("caption", "interleaved", "chat")
  src = SourceConfig(synthetic_size=6, synthetic_kinds=kinds).validate("s")
  original = encode_all(SyntheticSource(0, 6, 32, kinds))
  assert convert_dataset.convert(src, tmp_path / "s.array_record", image_size=32)["written"] == 6
  assert_same_samples(encode_all(ArrayRecordSource(str(tmp_path / "s.array_record"))), original)
  assert convert_dataset.convert(src, tmp_path / "s.jsonl", image_size=32)["written"] == 6
  assert_same_samples(encode_all(JsonlSource(tmp_path / "s.jsonl")), original)


class _Reader:
  """A format reader's stand-in: records (dicts or raw lines), or FormatErrors to raise."""

  base_dir = None

  def __init__(self, items):
    self.items = items

  def __len__(self):
    return len(self.items)

  def __getitem__(self, i):
    if isinstance(self.items[i], Exception):
      raise self.items[i]
    return self.items[i]

  def describe(self, i):
    return f"item {i}"


def _bad_and_good(folder: pathlib.Path) -> list:
  a = str(folder / write_image(folder / "a.png", 1))
  return [
      {"images": [a], "text": f"{IMAGE_TOKEN}Good."},
      "{not json",  # malformed
      {"images": [str(folder / "gone.png")], "text": f"{IMAGE_TOKEN}Gone."},  # missing_image
      {"images": [a], "text": "No placeholder."},  # malformed
      {"images": [b"not an image"], "text": f"{IMAGE_TOKEN}Bytes."},  # bad_image
      FormatError("missing_member", "key 7 has no text"),  # a reader's own reason
      {"text": "Good too."},
  ]


@pytest.mark.parametrize("suffix", [".jsonl", ".array_record"])
def test_bad_records_are_counted_by_reason_and_strict_stops(tmp_path, suffix):
  src = _Reader(_bad_and_good(tmp_path))
  out = tmp_path / f"out{suffix}"
  counts = convert_dataset.convert(src, out)
  assert counts == {
      "written": 2,
      "images": 1,
      "written/multimodal": 1,
      "written/text": 1,
      "skipped": 5,
      "skipped/malformed": 2,
      "skipped/missing_image": 1,
      "skipped/bad_image": 1,
      "skipped/missing_member": 1,
  }
  line = convert_dataset.summary(counts, out)
  assert "wrote 2 records" in line
  assert "skipped 5 (bad_image 1, malformed 2, missing_image 1, missing_member 1)" in line
  out.unlink()
  with pytest.raises(RecordError, match=r"record 1 \(item 1\): malformed: .*--strict"):
    convert_dataset.convert(src, out, strict=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # nothing half-written


def test_modality_passes_write_each_record_once(tmp_path):
  """`all` over a reader that filters nothing (as parquet's): text records from the text
  pass, image records from the multimodal pass, a bad record counted once."""
  a = str(tmp_path / write_image(tmp_path / "a.png", 1))
  items = [
      {"images": [a], "text": f"{IMAGE_TOKEN}Image one."},
      {"text": "Text one."},
      FormatError("malformed", "broken"),
      {"images": [a], "text": f"{IMAGE_TOKEN}Image two."},
  ]
  reader = _Reader(items)
  passes = [(reader, TEXT), (reader, MULTIMODAL)]
  counts = convert_dataset.convert_passes(passes, tmp_path / "all.jsonl")
  assert (counts["written"], counts["skipped"], counts["skipped/malformed"]) == (3, 1, 1)
  assert "other_modality" not in counts
  texts = [json.loads(x)["text"] for x in (tmp_path / "all.jsonl").read_text().splitlines()]
  assert texts == ["Text one.", f"{IMAGE_TOKEN}Image one.", f"{IMAGE_TOKEN}Image two."]
  counts = convert_dataset.convert(reader, tmp_path / "t.jsonl", modality=TEXT)
  assert (counts["written"], counts["other_modality"], counts["skipped"]) == (1, 2, 1)


def test_command_line_summary_strict_and_usage_errors(tmp_path, capsys):
  folder = tmp_path / "d"
  folder.mkdir()
  manifest = write_manifest(folder, _bad_and_good(folder)[:4])
  out = tmp_path / "o.jsonl"
  assert convert_dataset.main(["--format=jsonl", str(manifest), str(out)]) == 0
  stdout = capsys.readouterr().out.strip()
  assert stdout == (
      f"wrote 1 records (1 multimodal, 0 text; 1 image(s)) to {out}; skipped 3 "
      f"(malformed 2, missing_image 1)"
  )
  out.unlink()
  assert convert_dataset.main(["--format=jsonl", "--strict", str(manifest), str(out)]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith("error: record 1 (data.jsonl line 2): malformed") and not out.exists()
  for argv in (
      ["--format=nope", str(manifest), str(out)],
      ["--format=jsonl", str(manifest), str(tmp_path / "o.txt")],
      ["--format=jsonl", "--shards=2", str(manifest), str(out)],
      ["--format=jsonl", str(tmp_path / "missing.jsonl"), str(out)],
      ["--format=jsonl", str(out)],
      ["--format=image_folder", "--modality=text", str(folder), str(out)],
  ):
    with pytest.raises(SystemExit) as e:
      convert_dataset.main(argv)
    assert e.value.code == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)


# A real format through the generic path. Layout of LLaVA-Instruct-150K's json files
# (haotian-liu/LLaVA docs/Finetune_Custom_Data.md): a JSON array of {"id", "image",
# "conversations": [{"from": "human" | "gpt", "value"}]}, "<image>" marking the image.
def test_a_llava_file_converts_every_record_once(tmp_path, capsys):
  write_image(tmp_path / "x.png", 1)
  write_image(tmp_path / "y.png", 2)
  turns = lambda q, a: [{"from": "human", "value": q}, {"from": "gpt", "value": a}]  # noqa: E731
  llava = [
      {"id": "1", "image": "x.png", "conversations": turns("<image>\nWhat is it?", "Noise.")},
      {"id": "2", "conversations": turns("Hi?", "Hello.")},
      {"id": "3", "image": ["x.png", "y.png"], "conversations": turns("<image><image>Both?", "Yes.")},
      {"id": "4", "image": "x.png", "conversations": turns("No marker", "Bad.")},
  ]  # fmt: skip
  (tmp_path / "llava.json").write_text(json.dumps(llava))
  argv = ["--format=llava", str(tmp_path / "llava.json"), str(tmp_path / "c.jsonl")]
  assert convert_dataset.main(argv) == 0
  assert "wrote 3 records (2 multimodal, 1 text; 3 image(s))" in capsys.readouterr().out
  lines = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
  assert [line["kind"] for line in lines] == ["text_chat", "chat", "chat"]  # text pass first
  assert lines[2]["images"] == ["x.png", "y.png"]  # beside the output: relative
  assert lines[2]["messages"][0]["content"] == f"{IMAGE_TOKEN}{IMAGE_TOKEN}Both?"
  # Each converted record encodes as the llava source of its modality reads it.
  src = SourceConfig(type="llava", paths=(str(tmp_path / "llava.json"),))
  direct = []
  for m in (TEXT, MULTIMODAL):
    reader = open_format(dataclasses.replace(src, modality=m))
    encoder = SampleEncoder(CFG, LAYOUT, {"s": reader}, m)
    direct += [s for i in range(len(reader)) if isinstance(s := encoder(("s", i)), TrainSample)]
  assert_same_samples(encode_all(JsonlSource(tmp_path / "c.jsonl")), direct)


# WebDataset shards as img2dataset writes them (rom1504/img2dataset docs: "0.jpg" with
# "0.txt" the caption and "0.json" metadata per key, in a plain tar).
def test_webdataset_image_bytes_land_as_files_with_identical_bytes(tmp_path):
  jpg, png = image_bytes("JPEG", 5), image_bytes("PNG", 6)
  members = [
      ("000.jpg", jpg),
      ("000.txt", b"A noisy photo."),
      ("001.png", png),
      ("001.json", json.dumps({"caption": "Another one.", "key": "001"}).encode()),
      ("002.txt", b"Only text."),
  ]
  with tarfile.open(tmp_path / "shard-0.tar", "w") as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  out = tmp_path / "out" / "wds.jsonl"
  counts = convert_dataset.convert(
      SourceConfig(type="webdataset", paths=(str(tmp_path / "shard-0.tar"),)), out
  )
  assert (counts["written"], counts["skipped"], counts["images"]) == (3, 0, 2)
  folder = tmp_path / "out" / "wds_images"
  assert (folder / "00000001_0.jpg").read_bytes() == jpg
  assert (folder / "00000002_0.png").read_bytes() == png
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  assert lines[0] == {"kind": "text", "text": "Only text."}
  assert lines[1]["text"].endswith("A noisy photo.") and lines[1]["images"] == [
      "wds_images/00000001_0.jpg"
  ]


# ------------------------------------------------------------------------- inspect


def _inspect_config(tmp_path):
  """configs/tiny.py at stage 3 with its image source a jsonl of chats (a bad line first)."""
  write_image(tmp_path / "a.png", 1, (40, 30))
  manifest = write_manifest(
      tmp_path,
      [
          "{broken",
          {"images": ["a.png"], "messages": chat(f"{IMAGE_TOKEN}What is it?", "Noise.")},
          {"images": ["a.png"], "messages": chat(f"Again {IMAGE_TOKEN}?", "Still noise.")},
      ],
  )
  config = load_config("configs/tiny.py")
  config.data.stage = 3
  config.data.sources.shapes.type = "jsonl"
  config.data.sources.shapes.paths = (str(manifest),)
  return config


def test_inspect_marks_the_supervised_answers_and_draws_the_first_batches(tmp_path, capsys):
  out = tmp_path / "inspect.png"
  report, batches = inspect_tool.run(_inspect_config(tmp_path), samples=2, out=str(out), rows=4)
  assert capsys.readouterr().out.startswith(report)
  lines = report.splitlines()
  assert any(x.startswith("shapes[0] (data.jsonl line 1): skipped: malformed") for x in lines)
  # The image: 40x30 on disk, resized to 32x24, padded to 32x32; the user turn unmarked,
  # the answer from its leading space through EOS supervised (stage 3).
  assert "  User: <image 1: 40x30 -> 32x24 in 32x32>What is it?" in lines
  assert f"  Assistant:[[ Noise.{EOS_TOKEN}]]" in lines
  assert "  User: Again <image 1: 40x30 -> 32x24 in 32x32>?" in lines
  assert f"  Assistant:[[ Still noise.{EOS_TOKEN}]]" in lines
  assert sum("[[" in x for x in lines if x.startswith("  User:")) == 0
  words = report[report.index("== source 'words'") :]  # stage 3 documents: all supervised
  assert words.count("[[") == 2 and "<｜begin▁of▁sentence｜>[[" in words

  # tiny.py's warmup: step 0 is a text step; the first multimodal one follows.
  assert [b["modality"] for b in batches] == [TEXT, MULTIMODAL]
  picture = np.asarray(Image.open(out).convert("RGB"))
  # Width: 800 (MIN_WIDTH > 8 + 4 slots * (96 + 8)); height: 8, then per batch a 24 px
  # title and 4 rows of 6 * 16 + 2 * 8 px of text, image rows 96 + 8 px more.
  assert picture.shape == (8 + (24 + 4 * 112) + (24 + 4 * (112 + 104)), 800, 3)
  mm = batches[1]
  top = 8 + (24 + 4 * 112) + 24  # the first image row
  for k in range(int(mm["num_images"][0])):  # the model's pixels, each enlarged 3 x 3
    want = np.round(mm["images"][0, k] * 255).astype(np.uint8).transpose(1, 2, 0)
    left = 8 + k * 104
    got = picture[top : top + 96, left : left + 96]
    np.testing.assert_array_equal(got, want.repeat(3, 0).repeat(3, 1))
  assert picture.std() > 20  # text and images, not a blank page
  dark = picture[8 + 24 : 8 + 24 + 112].min(axis=2) < 128  # text of the first row
  assert dark.mean() > 0.02


def test_inspect_command_line(tmp_path):
  out = tmp_path / "x.png"
  cmd = [
      sys.executable,
      "-m",
      "dsvl_jax.data.inspect",
      "--config=configs/tiny.py",
      "--config.data.stage=3",
      "--config.data.sources.shapes.synthetic_kinds=('chat',)",
      "--samples=1",
      "--rows=2",
      f"--out={out}",
  ]
  run = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr
  assert "  Assistant:[[ " in run.stdout and f"wrote {out}" in run.stdout
  assert Image.open(out).size[0] == 800
  bad = subprocess.run(
      cmd[:4] + ["--config.data.nope=1"], cwd=REPO_ROOT, capture_output=True, text=True
  )
  assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope" in bad.stderr

"""Image-caption folders in the two layouts the image_folder reader takes.

layout "txt": img2dataset's `output_format="files"` (github.com/rom1504/img2dataset README
and img2dataset/writer.py FilesSampleWriter: per shard folder <out>/00000/, each downloaded
sample as <key>.jpg, <key>.txt with its caption ("" when it had none) and <key>.json
metadata; failed downloads leave no file; <shard>.parquet and <shard>_stats.json beside
the shard folders), under root/img2dataset, plus .png images (other caption-folder
tools), an image whose .txt is missing, one whose .txt is empty, and a .txt whose image
was deleted afterwards (say by a later filter).

layout "tsv": root/coco_tsv with captions.tsv ("file_name<TAB>text" header, one line per
caption: COCO-style, an image with two captions), a line naming an image that is not
there, a line without a TAB, and an image no line names.
"""

from __future__ import annotations

import json
import pathlib

from data_fixtures import IMAGE_TOKEN, write_image

# img2dataset "files": (key path without suffix, image suffix or None, caption or None)
TXT_SAMPLES = (
    ("00000/000000000", ".jpg", "A red double-decker bus crossing a bridge.\n"),
    ("00000/000000001", ".png", "  A cat asleep on a sunny windowsill. \n"),
    ("00000/000000002", ".jpg", None),  # caption lost: missing_caption
    ("00000/000000003", None, "A lighthouse on a rocky shore."),  # image gone: missing_image
    ("00001/000010000", ".png", "Three apples in a wooden bowl."),
    ("00001/000010001", ".jpg", ""),  # img2dataset's empty caption: missing_caption
)
TSV_IMAGES = (
    ("train2017/000000000139.jpg", (44, 33)),
    ("b.png", (30, 30)),
    ("extra/d.jpg", (20, 40)),
)
TSV_LINES = (
    "file_name\ttext",
    "train2017/000000000139.jpg\tA living room with a television and two chairs.",
    "b.png\tTwo people walking on a beach.",
    "train2017/000000000139.jpg\tA room with a TV, a fireplace and a lamp.",
    "gone.jpg\tThis image was never downloaded.",
    "c.png",
)


def _folder(root: pathlib.Path, layout: str) -> pathlib.Path:
  return root / ("img2dataset" if layout == "txt" else "coco_tsv")


def build(root: pathlib.Path, layout: str = "txt") -> dict:
  folder = _folder(root, layout)
  if layout == "txt":
    for n, (key, suffix, caption) in enumerate(TXT_SAMPLES):
      (folder / key).parent.mkdir(parents=True, exist_ok=True)
      if suffix:
        write_image(folder / (key + suffix), 20 + n, (36 + 4 * n, 28))
      if caption is not None:
        (folder / (key + ".txt")).write_text(caption)
      if suffix:
        meta = {"url": f"https://example.com/{n}", "caption": caption, "key": key[-9:]}
        (folder / (key + ".json")).write_text(json.dumps({**meta, "status": "success"}))
    (folder / "00000_stats.json").write_text(json.dumps({"count": 5, "successes": 5}))
    (folder / "00000.parquet").write_bytes(b"PAR1")  # img2dataset's per-shard metadata
    (folder / "00000" / ".DS_Store").write_bytes(b"\0\1")
  else:
    for n, (rel, size) in enumerate(TSV_IMAGES):
      (folder / rel).parent.mkdir(parents=True, exist_ok=True)
      write_image(folder / rel, 40 + n, size)
    (folder / "captions.tsv").write_text("\n".join(TSV_LINES) + "\n")
  return {"type": "image_folder", "modality": "multimodal", "paths": [str(folder)]}


def expected_records(root: pathlib.Path, layout: str = "txt") -> list[dict]:
  folder = _folder(root, layout)
  caption = lambda rel, text: {
      "kind": "caption",
      "text": IMAGE_TOKEN + text,
      "images": [str(folder / rel)],
  }
  if layout == "txt":  # sorted by path
    return [
        caption("00000/000000000.jpg", "A red double-decker bus crossing a bridge."),
        caption("00000/000000001.png", "A cat asleep on a sunny windowsill."),
        {"skip": "missing_caption"},  # 00000/000000002.jpg
        {"skip": "missing_image"},  # 00000/000000003.txt
        caption("00001/000010000.png", "Three apples in a wooden bowl."),
        {"skip": "missing_caption"},  # 00001/000010001.jpg: empty .txt
    ]
  return [  # sorted by image path, an image's lines in file order
      caption("b.png", "Two people walking on a beach."),
      {"skip": "malformed"},  # "c.png": no TAB
      {"skip": "missing_caption"},  # extra/d.jpg
      {"skip": "missing_image"},  # gone.jpg
      caption("train2017/000000000139.jpg", "A living room with a television and two chairs."),
      caption("train2017/000000000139.jpg", "A room with a TV, a fireplace and a lamp."),
  ]

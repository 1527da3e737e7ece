"""A tiny CMMMU release in its two public layouts, images drawn with PIL.

`build(root)`: the Hugging Face layout (m-a-p/CMMMU, whose file tree is
`<category>/{dev,val,test}-00000-of-00001.parquet`): `<root>/CMMMU/<category>/<split>-
00000-of-00001.parquet`, the 29 columns of the dataset card (lmms-lab/CMMMU README.md
@ba85ed9, the same rows merged) in that order with their Arrow types: strings, image_k the
datasets Image struct {bytes, path}, the options and image_k / image_k_filename null
where the row has none, subfield and img_type list texts.

`build_jsonl(root)`: the CMMMU repository's layout (CMMMU-Benchmark/CMMMU @e1ba883,
cmmmu-data-dev/science/science.jsonl is an example): `<root>/CMMMU-github/cmmmu-data-
<split>/<category>/<category>.jsonl`, one JSON object per line (integer id, options only
on 选择 rows, `img_list` sorted by name, subfield and img_type lists), the images as
files beside it.

val (7 items; id, type, category):
  101 选择 science     one image (a pentagon) tagged in the question; answer C
  102 填空 science     one image printing "12"; answer "12"
  103 判断 science     two images: image_1 q_00103_001 (a red circle), image_2
                       q_00103_002 (a blue square), tagged square first; answer 对
  104 选择 science     the question's image (a green circle) and two option images
                       (option A a blue circle, B a red square); img_list puts the
                       a_* option files first; answer A
  201 判断 art_and_design  one image; answer 错
  202 选择 art_and_design  one image (red and blue squares); answer "AC" (two letters)
  301 填空 business   one image no tag names; answer "甲"
dev (1 item): 901 选择 science, answer B.
"""

from __future__ import annotations

import io
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
NUM_IMAGES = 5
TEXT_COLUMNS_BEFORE = ["id", "type", "source_type", "source", "question"] + [
    f"option{k}" for k in range(1, 5)
]
IMAGE_COLUMNS = [f"image_{k}" for k in range(1, NUM_IMAGES + 1)]
TEXT_COLUMNS_AFTER = [
    "answer",
    "analysis",
    "distribution",
    "difficulty_level",
    "subcategory",
    "category",
    "subfield",
    "img_type",
] + [f"image_{k}_filename" for k in range(1, NUM_IMAGES + 1)]
SCHEMA = pa.schema(
    [(c, pa.string()) for c in TEXT_COLUMNS_BEFORE]
    + [(c, IMAGE_TYPE) for c in IMAGE_COLUMNS]
    + [(c, pa.string()) for c in TEXT_COLUMNS_AFTER]
)
HF_FEATURES = {c: {"dtype": "string", "_type": "Value"} for c in SCHEMA.names}
HF_FEATURES.update({c: {"_type": "Image"} for c in IMAGE_COLUMNS})

FOLDERS = {"科学": "science", "艺术与设计": "art_and_design", "商业": "business"}
RED, BLUE, GREEN = (220, 30, 30), (30, 60, 220), (30, 160, 60)


def _png(draw_fn, size=(96, 96)) -> bytes:
  image = Image.new("RGB", size, "white")
  draw_fn(ImageDraw.Draw(image))
  buf = io.BytesIO()
  image.save(buf, format="PNG")
  return buf.getvalue()


def circle(color=RED) -> bytes:
  return _png(lambda d: d.ellipse((16, 16, 80, 80), fill=color))


def square(color=BLUE) -> bytes:
  return _png(lambda d: d.rectangle((20, 20, 76, 76), fill=color))


def two_squares() -> bytes:
  def draw(d):
    d.rectangle((4, 30, 44, 70), fill=RED)
    d.rectangle((52, 30, 92, 70), fill=BLUE)

  return _png(draw)


def pentagon() -> bytes:
  return _png(lambda d: d.polygon([(48, 10), (86, 38), (72, 84), (24, 84), (10, 38)], fill=GREEN))


def text(word: str) -> bytes:
  return _png(lambda d: d.text((10, 40), word, fill="black"), size=(120, 96))


def tag(name: str) -> str:
  return f'<img="{name}">'


def row(id, qtype, category, subcategory, question, answer, images, options=None):
  """One release row as the CMMMU repository's jsonl writes it; images: {file name:
  PNG bytes} (img_list is their names sorted)."""
  r = {
      "id": id,
      "type": qtype,
      "source_type": "website",
      "source": "https://example.org/q",
      "question": question,
  }
  if options is not None:
    r.update({f"option{k}": o for k, o in enumerate(options, 1)})
  r.update(
      {
          "answer": answer,
          "analysis": None,
          "distribution": "本科",
          "difficulty_level": "easy",
          "img_list": sorted(images),
          "subcategory": subcategory,
          "category": category,
          "subfield": ["图形"],
          "img_type": ["草图"],
      }
  )
  return r, images


def val_rows() -> list[tuple[dict, dict[str, bytes]]]:
  return [
      row(
          101,
          "选择",
          "科学",
          "数学",
          f"如图{tag('q_00101_001.png')}所示的图形是（）",
          "C",
          {"q_00101_001.png": pentagon()},
          ["三角形", "正方形", "五边形", "圆形"],
      ),
      row(
          102,
          "填空",
          "科学",
          "数学",
          f"{tag('q_00102_001.png')}中印的数字是_",
          "12",
          {"q_00102_001.png": text("12")},
      ),
      row(
          103,
          "判断",
          "科学",
          "数学",
          f"{tag('q_00103_002.png')}中的图形比{tag('q_00103_001.png')}中的图形大。（）",
          "对",
          {"q_00103_001.png": circle(RED), "q_00103_002.png": square(BLUE)},
      ),
      row(
          104,
          "选择",
          "科学",
          "数学",
          f"与{tag('q_00104_001.png')}形状相同的是（）",
          "A",
          {
              "q_00104_001.png": circle(GREEN),
              "a_00104_001.png": circle(BLUE),
              "a_00104_002.png": square(RED),
          },
          [tag("a_00104_001.png"), tag("a_00104_002.png"), "都不是", "都是"],
      ),
      row(
          201,
          "判断",
          "艺术与设计",
          "设计",
          f"{tag('q_00201_001.png')}中的圆是蓝色的。（）",
          "错",
          {"q_00201_001.png": circle(RED)},
      ),
      row(
          202,
          "选择",
          "艺术与设计",
          "设计",
          f"{tag('q_00202_001.png')}中出现了哪些颜色？（）",
          "AC",
          {"q_00202_001.png": two_squares()},
          ["红色", "绿色", "蓝色", "黑色"],
      ),
      row(
          301,
          "填空",
          "商业",
          "会计",
          "上表中利润最高的是_公司",
          "甲",
          {"q_00301_001.png": text("甲 9 乙 3")},
      ),
  ]


def dev_rows() -> list[tuple[dict, dict[str, bytes]]]:
  return [
      row(
          901,
          "选择",
          "科学",
          "数学",
          f"{tag('q_00901_001.png')}是什么形状？（）",
          "B",
          {"q_00901_001.png": circle()},
          ["正方形", "圆形", "三角形", "五边形"],
      )
  ]


def parquet_row(r: dict, images: dict[str, bytes]) -> dict:
  """The row as the Hugging Face release stores it."""
  out = {c: None for c in SCHEMA.names}
  for key in TEXT_COLUMNS_BEFORE + TEXT_COLUMNS_AFTER:
    if key in r:
      out[key] = r[key]
  out["id"] = str(r["id"])
  out["subfield"] = repr(r["subfield"])
  out["img_type"] = repr(r["img_type"])
  for k, name in enumerate(r["img_list"], 1):
    out[f"image_{k}"] = {"bytes": images[name], "path": None}
    out[f"image_{k}_filename"] = name
  return out


def write_parquet(path: pathlib.Path, rows: list[dict], schema: pa.Schema = SCHEMA) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  meta = {
      b"huggingface": json.dumps(
          {"info": {"features": {c: HF_FEATURES[c] for c in schema.names}}}
      ).encode()
  }
  pq.write_table(pa.Table.from_pylist(rows, schema=schema.with_metadata(meta)), path)


def _by_folder(rows):
  out: dict[str, list] = {}
  for r, images in rows:
    out.setdefault(FOLDERS[r["category"]], []).append((r, images))
  return out


def build(root: pathlib.Path) -> pathlib.Path:
  """Writes the Hugging Face layout under root/CMMMU and returns that folder."""
  base = pathlib.Path(root) / "CMMMU"
  for split, rows in (("val", val_rows()), ("dev", dev_rows())):
    for folder, group in _by_folder(rows).items():
      write_parquet(
          base / folder / f"{split}-00000-of-00001.parquet",
          [parquet_row(r, images) for r, images in group],
      )
  return base


def build_jsonl(root: pathlib.Path) -> pathlib.Path:
  """Writes the CMMMU repository's layout under root/CMMMU-github and returns it."""
  base = pathlib.Path(root) / "CMMMU-github"
  for split, rows in (("val", val_rows()), ("dev", dev_rows())):
    for folder, group in _by_folder(rows).items():
      d = base / f"cmmmu-data-{split}" / folder
      d.mkdir(parents=True, exist_ok=True)
      lines = [json.dumps(r, ensure_ascii=False) for r, _ in group]
      (d / f"{folder}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
      for _, images in group:
        for name, data in images.items():
          (d / name).write_bytes(data)
  return base

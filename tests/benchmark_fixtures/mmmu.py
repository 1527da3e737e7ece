"""A tiny MMMU release in the Hugging Face layout: `<root>/MMMU/<Subject>/<split>-00000-
of-00001.parquet`, the 16 released columns with their Arrow types (image columns are the
datasets Image struct {bytes, path}), images drawn with PIL.

validation (5 items):
  validation_Math_1     multiple-choice, one image (a pentagon), answer C
  validation_Math_2     open, numeric answer "12" (the image prints 12)
  validation_Art_1      multiple-choice, two images, tags in the order <image 2> then
                        <image 1> (image_1 a red circle, image_2 a blue square), answer B
  validation_Art_2      multiple-choice, <image 1> in the question and <image 2>,
                        <image 3> as options A and B, answer A
  validation_Physics_1  open, one image never referenced by a tag, answers given as
                        the list literal "['north', 'n']"
dev (1 item): dev_Math_1, multiple-choice, answer A.
"""

from __future__ import annotations

import io
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

IMAGE_COLUMNS = [f"image_{k}" for k in range(1, 8)]
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("options", pa.string()),
        ("explanation", pa.string()),
    ]
    + [(c, IMAGE_TYPE) for c in IMAGE_COLUMNS]
    + [
        ("img_type", pa.string()),
        ("answer", pa.string()),
        ("topic_difficulty", pa.string()),
        ("question_type", pa.string()),
        ("subfield", pa.string()),
    ]
)
# What `datasets` writes into the schema metadata (the release files carry it).
HF_FEATURES = {c: {"dtype": "string", "_type": "Value"} for c in SCHEMA.names}
HF_FEATURES.update({c: {"_type": "Image"} for c in IMAGE_COLUMNS})

RED, BLUE, GREEN = (220, 30, 30), (30, 60, 220), (30, 160, 60)


def _png(draw_fn, size=(96, 96)) -> dict:
  image = Image.new("RGB", size, "white")
  draw_fn(ImageDraw.Draw(image))
  buf = io.BytesIO()
  image.save(buf, format="PNG")
  return {"bytes": buf.getvalue(), "path": None}


def circle(color=RED) -> dict:
  return _png(lambda d: d.ellipse((16, 16, 80, 80), fill=color))


def square(color=BLUE) -> dict:
  return _png(lambda d: d.rectangle((20, 20, 76, 76), fill=color))


def pentagon() -> dict:
  return _png(lambda d: d.polygon([(48, 10), (86, 38), (72, 84), (24, 84), (10, 38)], fill=GREEN))


def text(word: str) -> dict:
  return _png(lambda d: d.text((10, 40), word, fill="black"), size=(120, 96))


def row(id, question, options, answer, qtype, images, subfield="", img_type="['Diagrams']"):
  r = {
      "id": id,
      "question": question,
      "options": repr(options),
      "explanation": "",
      "img_type": img_type,
      "answer": answer,
      "topic_difficulty": "Easy",
      "question_type": qtype,
      "subfield": subfield,
  }
  for k, c in enumerate(IMAGE_COLUMNS):
    r[c] = images[k] if k < len(images) else None
  return r


def validation_rows() -> dict[str, list[dict]]:
  return {
      "Math": [
          row(
              "validation_Math_1",
              "Which shape is drawn in <image 1>?",
              ["triangle", "square", "pentagon", "circle"],
              "C",
              "multiple-choice",
              [pentagon()],
              "Geometry",
          ),
          row(
              "validation_Math_2",
              "What number is printed in <image 1>?",
              [],
              "12",
              "open",
              [text("12")],
              "Arithmetic",
          ),
      ],
      "Art": [
          row(
              "validation_Art_1",
              "<image 2> shows a square. What colour is the circle in <image 1>?",
              ["green", "red", "blue", "black"],
              "B",
              "multiple-choice",
              [circle(), square()],
              "Colour",
          ),
          row(
              "validation_Art_2",
              "Which option has the same shape as <image 1>?",
              ["<image 2>", "<image 3>", "neither"],
              "A",
              "multiple-choice",
              [circle(GREEN), circle(BLUE), square(RED)],
              "Shape",
          ),
      ],
      "Physics": [
          row(
              "validation_Physics_1",
              "Which direction does the arrow sign point to?",
              [],
              "['north', 'n']",
              "open",
              [text("NORTH")],
              "Mechanics",
          ),
      ],
  }


def dev_rows() -> dict[str, list[dict]]:
  return {
      "Math": [
          row(
              "dev_Math_1",
              "Is <image 1> a circle?",
              ["yes", "no"],
              "A",
              "multiple-choice",
              [circle()],
              "Geometry",
          )
      ]
  }


def write_parquet(path: pathlib.Path, rows: list[dict], schema: pa.Schema = SCHEMA) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  meta = {
      b"huggingface": json.dumps(
          {"info": {"features": {c: HF_FEATURES[c] for c in schema.names}}}
      ).encode()
  }
  table = pa.Table.from_pylist(rows, schema=schema.with_metadata(meta))
  pq.write_table(table, path)


def build(root: pathlib.Path) -> pathlib.Path:
  """Writes the release under root/MMMU and returns that folder."""
  base = pathlib.Path(root) / "MMMU"
  for split, by_subject in (("validation", validation_rows()), ("dev", dev_rows())):
    for subject, rows in by_subject.items():
      write_parquet(base / subject / f"{split}-00000-of-00001.parquet", rows)
  return base

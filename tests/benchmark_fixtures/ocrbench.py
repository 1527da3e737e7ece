"""A tiny OCRBench release in the official layout: `<root>/OCRBench/OCRBench.json` and the
images under `<root>/OCRBench_Images/<image_path>`, drawn with PIL (printed text).

Items (answers as the release writes them: a string or a list, HME100k answers in
spaced LaTeX ending in a newline):
  IIIT5K/7      Regular Text Recognition          "CENTRE"
  docVQA/3      Doc-oriented VQA                  ["$12.50", "12.50"]
  HME100k/41    Handwritten Mathematical ...      "x ^ { 2 } + 1 = 5\\n"
  textVQA/9     Scene Text-centric VQA            ["coca cola"]
  FUNSD/2       Key Information Extraction        "1/2/98"
"""

from __future__ import annotations

import json
import pathlib

from PIL import Image, ImageDraw

MATH_TYPE = "Handwritten Mathematical Expression Recognition"

RECORDS = [
    {
        "dataset_name": "IIIT5K",
        "id": 7,
        "image_path": "IIIT5K/test/7_1.png",
        "question": "what is written in the image?",
        "answers": "CENTRE",
        "type": "Regular Text Recognition",
    },
    {
        "dataset_name": "docVQA",
        "id": 3,
        "image_path": "docVQA/val/documents/doc_3.png",
        "question": "What is the total amount?",
        "answers": ["$12.50", "12.50"],
        "type": "Doc-oriented VQA",
    },
    {
        "dataset_name": "HME100k",
        "id": 41,
        "image_path": "HME100K/test/test_images/test_41.jpg",
        "question": "Please write out the expression of the formula in the image using "
        "LaTeX format.",
        "answers": "x ^ { 2 } + 1 = 5\n",
        "type": MATH_TYPE,
    },
    {
        "dataset_name": "textVQA",
        "id": 9,
        "image_path": "textVQA/train_images/9.jpg",
        "question": "what brand is on the sign?",
        "answers": ["coca cola"],
        "type": "Scene Text-centric VQA",
    },
    {
        "dataset_name": "FUNSD",
        "id": 2,
        "image_path": "FUNSD/testing_data/images/2.png",
        "question": "what is the date?",
        "answers": "1/2/98",
        "type": "Key Information Extraction",
    },
]

PRINTED = {
    "IIIT5K": "CENTRE",
    "docVQA": "Total: $12.50",
    "HME100k": "x^2+1=5",
    "textVQA": "Coca Cola",
    "FUNSD": "Date: 1/2/98",
}


def _draw(words: str, path: pathlib.Path) -> None:
  image = Image.new("RGB", (160, 48), "white")
  ImageDraw.Draw(image).text((8, 16), words, fill="black")
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path)  # the format follows the suffix (.png / .jpg), as in the release


def build(root: pathlib.Path) -> pathlib.Path:
  """Writes the release under root and returns the JSON file."""
  root = pathlib.Path(root)
  for r in RECORDS:
    _draw(PRINTED[r["dataset_name"]], root / "OCRBench_Images" / r["image_path"])
  json_file = root / "OCRBench" / "OCRBench.json"
  json_file.parent.mkdir(parents=True, exist_ok=True)
  json_file.write_text(json.dumps(RECORDS, indent=4, ensure_ascii=False), encoding="utf-8")
  return json_file

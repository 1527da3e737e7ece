"""A tiny MM-Vet release in the public layout (mm-vet.zip unzipped; README and
mm-vet_evaluator.py / inference/utils.py of github.com/yuweihao/MM-Vet @acde843):

  <root>/mm-vet/mm-vet.json      {"v1_0": {"imagename", "capability", "question", "answer"}, ...}
  <root>/mm-vet/images/v1_<i>.png / .jpg   drawn with PIL

6 questions, one image each, with the capability sets planted for the aggregation test
(rec+know+gen, ocr+spat+math, math+ocr, rec, ocr+spat, rec+ocr) and <AND> / <OR> gold
answers as the release writes them (no spaces around the markers). `build` returns the
mm-vet folder.
"""

from __future__ import annotations

import json
import pathlib

from PIL import Image, ImageDraw

# key -> (imagename, capability, question, answer), in file order
QUESTIONS = {
    "v1_0": (
        "v1_0.png",
        ["rec", "know", "gen"],
        "Can you explain this meme?",
        "The meme shows a red square pretending to be a circle.",
    ),
    "v1_1": ("v1_1.png", ["ocr", "spat", "math"], "What is x in the equation?", "-1<AND>-5"),
    "v1_2": ("v1_2.jpg", ["math", "ocr"], "What is the total price?", "14<OR>14.00"),
    "v1_3": ("v1_3.png", ["rec"], "What color is the square?", "red"),
    "v1_4": ("v1_4.jpg", ["ocr", "spat"], "Which word is on the left?", "STOP"),
    "v1_5": ("v1_5.png", ["rec", "ocr"], "What shape is drawn?", "circle<OR>round"),
}
COLORS = {  # imagename -> fill of the shape drawn on it
    "v1_0.png": (220, 30, 30),
    "v1_1.png": (30, 30, 30),
    "v1_2.jpg": (30, 160, 30),
    "v1_3.png": (220, 30, 30),
    "v1_4.jpg": (30, 30, 220),
    "v1_5.png": (200, 200, 30),
}


def _draw(color: tuple[int, int, int]) -> Image.Image:
  im = Image.new("RGB", (64, 48), (240, 240, 240))
  ImageDraw.Draw(im).rectangle([16, 12, 48, 36], fill=color)
  return im


def build(root: pathlib.Path) -> pathlib.Path:
  release = root / "mm-vet"
  (release / "images").mkdir(parents=True, exist_ok=True)
  for name, color in COLORS.items():
    _draw(color).save(release / "images" / name, quality=95)
  data = {
      key: {"imagename": image, "capability": caps, "question": question, "answer": answer}
      for key, (image, caps, question, answer) in QUESTIONS.items()
  }
  (release / "mm-vet.json").write_text(json.dumps(data, indent=4))
  return release

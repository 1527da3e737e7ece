"""A five-question MMBench dev TSV in the public layout, with drawn images.

`build(root)` writes root/MMBench_DEV_EN.tsv with one row per question (the layout of
the original release); `build(root, circular=True)` adds VLMEvalKit's circular copies:
rotation k of question i is row i + k * 1_000_000, its options shifted, its answer
letter following the right text, and its image cell holding the string i (a reference
to the original row's image, as VLMEvalKit files save space). Here rotation k shifts
options to the *right* (A moves to B), so a loader gets no help from a shared
convention.

QUESTIONS is the ground truth the tests compare against: texts, options, answer
letter, image size, and a probe pixel with its drawn colour.
"""

from __future__ import annotations

import base64
import csv
import io
import pathlib

from PIL import Image, ImageDraw

FILE_NAME = "MMBench_DEV_EN.tsv"
COLUMNS = (
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
)
STRIDE = 1_000_000
WHITE, RED, GREEN, BLUE = (255, 255, 255), (220, 30, 30), (30, 170, 60), (30, 60, 220)
GREY = (230, 230, 230)


def _circle(size, fill):
  im = Image.new("RGB", size, WHITE)
  w, h = size
  ImageDraw.Draw(im).ellipse([w // 2 - 18, h // 2 - 18, w // 2 + 18, h // 2 + 18], fill=fill)
  return im


def _two_squares(size, fill):
  im = Image.new("RGB", size, WHITE)
  d = ImageDraw.Draw(im)
  d.rectangle([8, 8, 32, 32], fill=fill)
  d.rectangle([48, 8, 72, 32], fill=fill)
  return im


def _word(size, fill):
  im = Image.new("RGB", size, GREY)
  ImageDraw.Draw(im).text((30, 14), "DSVL", fill=fill)
  return im


def _triangle(size, fill):
  im = Image.new("RGB", size, WHITE)
  ImageDraw.Draw(im).polygon([(28, 4), (52, 52), (4, 52)], fill=fill)
  return im


def _circle_left_square_right(size, fill):
  im = Image.new("RGB", size, WHITE)
  d = ImageDraw.Draw(im)
  d.ellipse([5, 5, 45, 45], fill=fill)
  d.rectangle([60, 10, 90, 40], fill=BLUE)
  return im


QUESTIONS = [
    dict(
        index=15,
        question="What color is the circle?",
        hint="",
        options=("red", "green", "blue", "yellow"),
        answer="A",
        category="attribute_recognition",
        l2="finegrained_perception (instance-level)",
        draw=_circle,
        fill=RED,
        size=(64, 48),
        fmt="PNG",
        probe=((32, 24), RED),
    ),
    dict(
        index=27,
        question="How many squares are in the image?",
        hint="Count only the filled shapes.",
        options=("1", "2", "3"),
        answer="B",
        category="object_localization",
        l2="finegrained_perception (instance-level)",
        draw=_two_squares,
        fill=GREEN,
        size=(80, 40),
        fmt="JPEG",
        probe=((20, 20), GREEN),
    ),
    dict(
        index=113,
        question="Which word is written in the image?",
        hint='The sign reads one "word".\nIt is in upper case.',
        options=("JAX", "TPU", "DSVL", "GPU"),
        answer="C",
        category="ocr",
        l2="finegrained_perception (cross-instance)",
        draw=_word,
        fill=(0, 0, 0),
        size=(96, 40),
        fmt="PNG",
        probe=((2, 2), GREY),
    ),
    dict(
        index=240,
        question="图中的三角形是什么颜色？",
        hint="请仔细观察图片。",
        options=("红色", "绿色", "蓝色", "黄色"),
        answer="C",
        category="attribute_recognition",
        l2="finegrained_perception (instance-level)",
        draw=_triangle,
        fill=BLUE,
        size=(56, 56),
        fmt="JPEG",
        probe=((28, 40), BLUE),
    ),
    dict(
        index=1001,
        question="Which shape is on the left side of the image?",
        hint="",
        options=("the square", "the circle"),
        answer="B",
        category="spatial_relationship",
        l2="logic_reasoning",
        draw=_circle_left_square_right,
        fill=RED,
        size=(100, 50),
        fmt="PNG",
        probe=((25, 25), RED),
    ),
]


def image_base64(q: dict) -> str:
  buf = io.BytesIO()
  q["draw"](q["size"], q["fill"]).save(buf, format=q["fmt"])
  return base64.b64encode(buf.getvalue()).decode("ascii")


def _row(q: dict, index: int, options, answer: str, image: str) -> list[str]:
  cells = list(options) + [""] * (4 - len(options))  # pandas writes NaN as ""
  return [
      str(index),
      q["question"],
      q["hint"],
      *cells,
      answer,
      q["category"],
      image,
      "fixture",
      q["l2"],
      "",
      "dev",
  ]


def shifted(options, answer: str, k: int):
  """Options moved k places to the right and the answer letter of the same text."""
  n = len(options)
  opts = tuple(options[(j - k) % n] for j in range(n))
  return opts, "ABCD"[("ABCD".index(answer) + k) % n]


def build(root: pathlib.Path, circular: bool = False) -> pathlib.Path:
  root.mkdir(parents=True, exist_ok=True)
  rows = [_row(q, q["index"], q["options"], q["answer"], image_base64(q)) for q in QUESTIONS]
  if circular:
    for k in range(1, 4):
      for q in QUESTIONS:
        if k < len(q["options"]):
          options, answer = shifted(q["options"], q["answer"], k)
          # the copy's image cell names the original row (VLMEvalKit's space saving)
          rows.append(_row(q, q["index"] + k * STRIDE, options, answer, str(q["index"])))
  path = root / FILE_NAME
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
  return path

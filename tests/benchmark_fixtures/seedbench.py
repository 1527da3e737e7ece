"""A six-question SEED-Bench release in the public layout, with drawn images.

`build(root)` writes root/SEED-Bench.json and root/SEED-Bench-image/<data_id> (JPEG),
and returns the JSON's path. Five questions are images (dimensions 1, 5, 5, 6, 9);
one is a video question (dimension 10, no file: a loader must skip it).

QUESTIONS is the ground truth the tests compare against.
"""

from __future__ import annotations

import json
import pathlib

from PIL import Image, ImageDraw

JSON_NAME = "SEED-Bench.json"
IMAGE_DIR = "SEED-Bench-image"
QUESTION_TYPE = {
    "Scene Understanding": 1,
    "Instance Identity": 2,
    "Instance Attributes": 3,
    "Instance Location": 4,
    "Instances Counting": 5,
    "Spatial Relation": 6,
    "Instance Interaction": 7,
    "Visual Reasoning": 8,
    "Text Understanding": 9,
    "Action Recognition": 10,
    "Action Prediction": 11,
    "Procedure Understanding": 12,
}
RED, BLUE, SKY = (220, 30, 30), (30, 60, 220), (120, 180, 240)


def _circles(n):
  def draw(size):
    im = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(im)
    for i in range(n):
      d.ellipse([4 + 24 * i, 20, 24 + 24 * i, 40], fill=RED)
    return im

  return draw


def _squares(size):
  im = Image.new("RGB", size, (255, 255, 255))
  ImageDraw.Draw(im).rectangle([10, 10, 40, 40], fill=BLUE)
  return im


def _sky(size):
  return Image.new("RGB", size, SKY)


def _word(size):
  im = Image.new("RGB", size, (255, 255, 255))
  ImageDraw.Draw(im).text((10, 10), "SEED", fill=(0, 0, 0))
  return im


def _square_left_of_circle(size):
  im = Image.new("RGB", size, (255, 255, 255))
  d = ImageDraw.Draw(im)
  d.rectangle([5, 15, 35, 45], fill=BLUE)
  d.ellipse([60, 15, 90, 45], fill=RED)
  return im


QUESTIONS = [
    dict(
        question_id="101669",
        question="How many circles are in the image?",
        choices=("One", "Two", "Three", "Four"),
        answer="C",
        type_id=5,
        data_id="1454426_2591111986.jpg",
        draw=_circles(3),
        size=(80, 60),
    ),
    dict(
        question_id="101670",
        question="What is the main colour of the scene?",
        choices=("Green", "Light blue", "Black", "Orange"),
        answer="B",
        type_id=1,
        data_id="1454427_2591111987.jpg",
        draw=_sky,
        size=(48, 32),
    ),
    dict(
        question_id="101671",
        question="Which word appears in the image?",
        choices=("SEAT", "SEND", "SEEN", "SEED"),
        answer="D",
        type_id=9,
        data_id="1454428_2591111988.jpg",
        draw=_word,
        size=(64, 32),
    ),
    dict(
        question_id="101672",
        question="Where is the square relative to the circle?",
        choices=("Left of it", "Right of it", "Above it", "Below it"),
        answer="A",
        type_id=6,
        data_id="1454429_2591111989.jpg",
        draw=_square_left_of_circle,
        size=(96, 60),
    ),
    dict(
        question_id="101673",
        question="How many squares are in the image?",
        choices=("One", "Two", "Three", "Four"),
        answer="A",
        type_id=5,
        data_id="1454430_2591111990.jpg",
        draw=_squares,
        size=(50, 50),
    ),
]
VIDEO_QUESTION = {
    "answer": "B",
    "choice_a": "throwing something in the air and letting it fall",
    "choice_b": "throwing something in the air and catching it",
    "choice_c": "lifting up one end of something, then letting it drop down",
    "choice_d": "poking something so that it falls over",
    "data_id": "94328.webm",
    "data_type": "video",
    "question": "What is the action being carried out in the video?",
    "question_id": "v1738",
    "question_type_id": 10,
}


def _record(q: dict) -> dict:
  a, b, c, d = q["choices"]
  return {
      "answer": q["answer"],
      "choice_a": a,
      "choice_b": b,
      "choice_c": c,
      "choice_d": d,
      "data_id": q["data_id"],
      "data_type": "image",
      "question": q["question"],
      "question_id": q["question_id"],
      "question_type_id": q["type_id"],
  }


def build(root: pathlib.Path) -> pathlib.Path:
  images = root / IMAGE_DIR
  images.mkdir(parents=True, exist_ok=True)
  for q in QUESTIONS:
    q["draw"](q["size"]).save(images / q["data_id"], format="JPEG", quality=95)
  records = [_record(q) for q in QUESTIONS[:3]] + [VIDEO_QUESTION]
  records += [_record(q) for q in QUESTIONS[3:]]
  path = root / JSON_NAME
  path.write_text(
      json.dumps({"questions": records, "question_type": QUESTION_TYPE}, indent=4), encoding="utf-8"
  )
  return path

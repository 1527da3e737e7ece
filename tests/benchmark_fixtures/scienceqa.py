"""A tiny ScienceQA release in the public layout (lupantech/ScienceQA data/scienceqa):

  <root>/scienceqa/problems.json     {pid: problem}, every field the release has
  <root>/scienceqa/pid_splits.json   {"train", "val", "test", "minival", ...: [pid]}
  <root>/scienceqa/images/<split>/<pid>/image.png   drawn with PIL

Test split: pids 1-4 have an image (the IMG subset), pid 5 has none (skipped); pid 6
is train and pid 7 val (both with images; skipped for split="test"; pid 7 is also the
whole minival split). `build` returns <root>/scienceqa.
"""

from __future__ import annotations

import json
import pathlib

from PIL import Image, ImageDraw


def _problem(question, choices, answer, split, subject, grade, image=True, hint=""):
  return {
      "question": question,
      "choices": choices,
      "answer": answer,
      "hint": hint,
      "image": "image.png" if image else None,
      "task": "closed choice",
      "grade": grade,
      "subject": subject,
      "topic": "t",
      "category": "c",
      "skill": "s",
      "lecture": "",
      "solution": "",
      "split": split,
  }


PROBLEMS = {
    "1": _problem(
        "Which color is the shape?",
        ["blue", "red", "green"],
        1,
        "test",
        "natural science",
        "grade2",
    ),
    "2": _problem(
        "Which animal's legs are adapted for running?",
        ["ostrich", "tortoise"],
        0,
        "test",
        "natural science",
        "grade4",
        hint="Ostriches live in grasslands.",
    ),
    "3": _problem(
        "Which country is highlighted?",
        ["Fiji", "Tonga", "Samoa", "Palau"],
        3,
        "test",
        "social science",
        "grade7",
    ),
    "4": _problem(
        "Which word would you find on a dictionary page with the guide words salt - sand?",
        ["salt water", "salt", "same"],
        2,
        "test",
        "language science",
        "grade8",
        hint="Look at the picture.",
    ),
    "5": _problem(
        "Which is a compound sentence?",
        ["It rained.", "It rained, so we left."],
        1,
        "test",
        "language science",
        "grade5",
        image=False,
    ),
    "6": _problem(
        "Which is heavier?", ["a rock", "a leaf"], 0, "train", "natural science", "grade1"
    ),
    "7": _problem(
        "What is the capital of Utah?",
        ["Provo", "Salt Lake City"],
        1,
        "val",
        "social science",
        "grade4",
    ),
}

PID_SPLITS = {
    "train": ["6"],
    "val": ["7"],
    "test": ["1", "2", "3", "4", "5"],
    "trainval": ["6", "7"],
    "minitrain": ["6"],
    "minival": ["7"],
    "minitest": ["1", "5"],
}


def _draw(pid: str) -> Image.Image:
  im = Image.new("RGB", (40 + 8 * int(pid), 32), (255, 255, 255))
  ImageDraw.Draw(im).rectangle([4, 4, 20, 20], fill=(220, 30, 30))
  return im


def build(root: pathlib.Path) -> pathlib.Path:
  sqa = root / "scienceqa"
  sqa.mkdir(parents=True, exist_ok=True)
  (sqa / "problems.json").write_text(json.dumps(PROBLEMS, indent=1))
  (sqa / "pid_splits.json").write_text(json.dumps(PID_SPLITS))
  for pid, p in PROBLEMS.items():
    if p["image"]:
      folder = sqa / "images" / p["split"] / pid
      folder.mkdir(parents=True, exist_ok=True)
      _draw(pid).save(folder / p["image"])
  return sqa

"""A tiny POPE release in the public layout (LLaVA's folder arrangement):

  <root>/pope/coco/coco_pope_{random,popular,adversarial}.json   one JSON object a line
  <root>/pope/val2014/COCO_val2014_<12-digit image_id>.jpg       drawn with PIL

8 questions on 2 images, 4 labelled yes and 4 no; question_id restarts at 0 per file
as in the release. `build` returns the question folder (<root>/pope/coco).
"""

from __future__ import annotations

import json
import pathlib

from PIL import Image, ImageDraw

IMAGE_IDS = (139, 285)  # 139: a brown "dog" box; 285: a red "ball"

# split -> [(image_id, object, label)], question_id = position in the list
QUESTIONS = {
    "random": [
        (139, "dog", "yes"),
        (139, "car", "no"),
        (285, "sports ball", "yes"),
        (285, "cat", "no"),
    ],
    "popular": [(139, "dog", "yes"), (285, "person", "no")],
    "adversarial": [(285, "sports ball", "yes"), (139, "frisbee", "no")],
}


def image_name(image_id: int) -> str:
  return f"COCO_val2014_{image_id:012d}.jpg"


def _draw(image_id: int) -> Image.Image:
  im = Image.new("RGB", (64, 48), (200, 220, 240))
  d = ImageDraw.Draw(im)
  if image_id == 139:
    d.rectangle([10, 20, 40, 40], fill=(120, 80, 40))
  else:
    d.ellipse([20, 10, 44, 34], fill=(220, 30, 30))
  return im


def question_text(obj: str) -> str:
  article = "an" if obj[0] in "aeiou" else "a"
  return f"Is there {article} {obj} in the image?"


def build(root: pathlib.Path) -> pathlib.Path:
  pope = root / "pope"
  (pope / "coco").mkdir(parents=True, exist_ok=True)
  (pope / "val2014").mkdir(exist_ok=True)
  for image_id in IMAGE_IDS:
    _draw(image_id).save(pope / "val2014" / image_name(image_id), quality=90)
  for split, rows in QUESTIONS.items():
    lines = [
        json.dumps(
            {
                "question_id": qid,
                "image": image_name(image_id),
                "image_id": image_id,
                "text": question_text(obj),
                "label": label,
            }
        )
        for qid, (image_id, obj, label) in enumerate(rows)
    ]
    (pope / "coco" / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")
  return pope / "coco"

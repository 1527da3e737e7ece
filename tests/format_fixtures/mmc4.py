"""Two MMC4 shards in the release layout (github.com/allenai/mmc4 README, v1.1: jsonl
shards docs_shard_{i}_v2.jsonl, a document a line with text_list, image_info [{image_name,
raw_url, matched_text_index, matched_sim, face_detections}], similarity_matrix [images x
sentences], url, could_have_url_duplicate), and the images as mmc4's
scripts/download_images.py leaves them: one flat folder of <image_name> files.

Read with min_similarity 0.24 (OpenFlamingo's --mmc4_textsim_threshold). Documents:
  shard 0, doc 0  the README's shape: 3 sentences, 2 images listed out of sentence order
          doc 1   4 sentences: two images on sentence 0, one below 0.24, one matched to a
                  sentence the document lacks, one with a null match: two kept
          doc 2   every image below 0.24: no_matched_image
  shard 1, doc 0  text_list is not a list: malformed
          doc 1   one image on the last sentence, just above the threshold
"""

from __future__ import annotations

import json
import pathlib

from data_fixtures import IMAGE_TOKEN, write_image

MIN_SIMILARITY = 0.24


def _image(name: str, index, sim) -> dict:
  return {
      "image_name": name,
      "raw_url": f"http://images.example.com/{name}",
      "matched_text_index": index,
      "matched_sim": sim,
      "face_detections": None,
  }


def _doc(sentences: list, images: list[dict], url: str) -> dict:
  n = len(sentences) if isinstance(sentences, list) else 1
  matrix = [[0.12] * n for _ in images]
  for row, im in zip(matrix, images):
    if isinstance(im["matched_text_index"], int) and im["matched_text_index"] < n:
      row[im["matched_text_index"]] = im["matched_sim"]
  return {
      "text_list": sentences,
      "image_info": images,
      "similarity_matrix": matrix,
      "url": url,
      "could_have_url_duplicate": 0,
  }


SHARDS = {
    "docs_shard_0_v2.jsonl": [
        _doc(
            [
                "When you lock the door with the tab, every door locks.",
                "Press the master switch to lock or unlock all doors.",
                "The tailgate follows the driver's door.",
            ],
            [_image("b9040a0dbb22.jpg", 2, 0.2769), _image("db1c21bc8474.jpg", 1, 0.3235)],
            "http://cars.example.com/locks.html",
        ),
        _doc(
            [
                "Preheat the oven.",
                "Mix the flour and the water.",
                "Knead for ten minutes.",
                "Bake until golden.",
            ],
            [
                _image("0a1b2c3d4e5f.jpg", 0, 0.31),
                _image("1f2e3d4c5b6a.jpg", 3, 0.18),  # below the threshold
                _image("2a2a2a2a2a2a.jpg", 7, 0.30),  # no sentence 7
                _image("3b3b3b3b3b3b.png", 0, 0.29),  # a second image on sentence 0
                _image("4c4c4c4c4c4c.jpg", None, 0.33),  # no match at all
            ],
            "http://bread.example.com/",
        ),
        _doc(
            ["A page about nothing in particular.", "It has two sentences."],
            [_image("5d5d5d5d5d5d.jpg", 0, 0.21), _image("6e6e6e6e6e6e.jpg", 1, 0.15)],
            "http://weak.example.com/",
        ),
    ],
    "docs_shard_1_v2.jsonl": [
        _doc("One string, not a list.", [_image("7f7f7f7f7f7f.jpg", 0, 0.3)], "http://x.example/"),
        _doc(
            ["Our garden in spring.", "The tulips came up first."],
            [_image("8a8a8a8a8a8a.jpg", 1, 0.2401)],
            "http://garden.example.com/",
        ),
    ],
}
IMAGES = (
    "b9040a0dbb22.jpg",
    "db1c21bc8474.jpg",
    "0a1b2c3d4e5f.jpg",
    "1f2e3d4c5b6a.jpg",
    "2a2a2a2a2a2a.jpg",
    "3b3b3b3b3b3b.png",
    "4c4c4c4c4c4c.jpg",
    "5d5d5d5d5d5d.jpg",
    "6e6e6e6e6e6e.jpg",
    "7f7f7f7f7f7f.jpg",
    "8a8a8a8a8a8a.jpg",
)


def build(root: pathlib.Path, modality: str = "multimodal") -> dict:
  (root / "mmc4").mkdir(parents=True, exist_ok=True)
  (root / "mmc4_images").mkdir(parents=True, exist_ok=True)
  for n, name in enumerate(IMAGES):
    write_image(root / "mmc4_images" / name, 60 + n, (30 + 3 * n, 34))
  for name, docs in SHARDS.items():
    (root / "mmc4" / name).write_text("".join(json.dumps(d) + "\n" for d in docs))
  return {
      "type": "mmc4",
      "modality": modality,
      "paths": [str(root / "mmc4")],
      "image_folder": str(root / "mmc4_images"),
      "min_similarity": MIN_SIMILARITY,
  }


def expected_records(root: pathlib.Path, modality: str = "multimodal") -> list[dict]:
  img = lambda name: str(root / "mmc4_images" / name)
  P = IMAGE_TOKEN
  if modality == "text":
    return [
        {
            "kind": "text",
            "text": "When you lock the door with the tab, every door locks. Press the master "
            "switch to lock or unlock all doors. The tailgate follows the driver's door.",
        },
        {
            "kind": "text",
            "text": "Preheat the oven. Mix the flour and the water. Knead for ten minutes. "
            "Bake until golden.",
        },
        {"kind": "text", "text": "A page about nothing in particular. It has two sentences."},
        {"skip": "malformed"},
        {"kind": "text", "text": "Our garden in spring. The tulips came up first."},
    ]
  return [
      {
          "kind": "interleaved",
          "text": f"When you lock the door with the tab, every door locks. {P}Press the master "
          f"switch to lock or unlock all doors. {P}The tailgate follows the driver's door.",
          "images": [img("db1c21bc8474.jpg"), img("b9040a0dbb22.jpg")],
      },
      {
          "kind": "interleaved",
          "text": f"{P}{P}Preheat the oven. Mix the flour and the water. Knead for ten "
          "minutes. Bake until golden.",
          "images": [img("0a1b2c3d4e5f.jpg"), img("3b3b3b3b3b3b.png")],
      },
      {"skip": "no_matched_image"},
      {"skip": "malformed"},
      {
          "kind": "interleaved",
          "text": f"Our garden in spring. {P}The tulips came up first.",
          "images": [img("8a8a8a8a8a8a.jpg")],
      },
  ]

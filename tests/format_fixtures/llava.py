"""A LLaVA-format SFT file in the release layout (haotian-liu/LLaVA
docs/Finetune_Custom_Data.md: a JSON list of {"id", "image", "conversations": [{"from":
"human" | "gpt", "value"}]}; llava_v1_5_mix665k.json also holds text-only ShareGPT chats
without "image"; LLaVA-NeXT's llava/train/train.py takes "image" as a list and .jsonl
files; ShareGPT4V's records, huggingface.co/datasets/Lin-Chen/ShareGPT4V, put the marker
at the end of the question).

Variants: layout "json" (one array, pretty-printed, at root/llava_v1_5_mix665k.json, images
under root/images = image_folder) or "jsonl" (root/images/llava_v1_5_mix665k.jsonl, no
image_folder: the file's folder; plus a blank line and a truncated line); modality
"multimodal" (the records with images) or "text" (the text-only chats).
"""

from __future__ import annotations

import json
import pathlib

from data_fixtures import IMAGE_TOKEN, write_image

# (relative path, seed, size) of every image the records use
IMAGES = (
    ("coco/train2017/000000033471.jpg", 1, (48, 36)),
    ("sam/images/sa_15468.jpg", 2, (30, 40)),
    ("m4/pair_a.png", 3, (32, 32)),
    ("m4/pair_b.jpg", 4, (50, 20)),
    ("coco/train2017/000000000009.jpg", 5, (40, 30)),
)

RECORDS = [
    {  # LLaVA-Instruct-150K: the marker opens the first question
        "id": "000000033471",
        "image": "coco/train2017/000000033471.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."},
        ],
    },
    {  # mix665k's ShareGPT part: a text-only chat, no "image"
        "id": "i6IyJda_0",
        "conversations": [
            {"from": "human", "value": "How do I reverse a list in Python?"},
            {"from": "gpt", "value": "Use xs[::-1] for a copy, or xs.reverse() in place."},
        ],
    },
    {  # ShareGPT4V: the marker ends the question
        "id": "sa_15468",
        "image": "sam/images/sa_15468.jpg",
        "conversations": [
            {"from": "human", "value": "What do you see happening in this image?\n<image>"},
            {"from": "gpt", "value": "A cyclist rides along a coastal road at dusk."},
        ],
    },
    {  # multi-image (LLaVA-NeXT list form), one marker in each of two turns
        "id": "m4_pair_0",
        "image": ["m4/pair_a.png", "m4/pair_b.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\nWhat shape is drawn here?"},
            {"from": "gpt", "value": "A square."},
            {"from": "human", "value": "And which colour fills <image> the most?"},
            {"from": "gpt", "value": "Blue."},
        ],
    },
    {  # two markers, one image: malformed
        "id": "000000000009",
        "image": "coco/train2017/000000000009.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\n<image>\nDescribe the meal."},
            {"from": "gpt", "value": "Rice, broccoli and bread."},
        ],
    },
    {  # a role LLaVA does not have: malformed
        "id": "000000000009_sys",
        "image": "coco/train2017/000000000009.jpg",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "Lunch."},
        ],
    },
    "not a record",  # neither kind: both sources keep it, as malformed
    {  # a second text-only chat, non-ASCII (byte offsets past multi-byte characters)
        "id": "zh_3",
        "conversations": [
            {"from": "human", "value": "“Café” in Japanese? — 日本語で"},
            {"from": "gpt", "value": "カフェ (kafe)."},
        ],
    },
]
TRUNCATED_LINE = '{"id": "cut", "image": "coco/train2017/000000033471.jpg", "conversa'
NAME = "llava_v1_5_mix665k"


def _file(root: pathlib.Path, layout: str) -> pathlib.Path:
  if layout == "json":
    return root / f"{NAME}.json"
  return root / "images" / f"{NAME}.jsonl"


def build(root: pathlib.Path, layout: str = "json", modality: str = "multimodal") -> dict:
  folder = root / "images"
  for rel, seed, size in IMAGES:
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    write_image(folder / rel, seed, size)
  path = _file(root, layout)
  if layout == "json":
    path.write_text(json.dumps(RECORDS, indent=2, ensure_ascii=False), encoding="utf-8")
    image_folder = str(folder)
  else:
    lines = [json.dumps(r, ensure_ascii=False) for r in RECORDS]
    lines[2:2] = ["", TRUNCATED_LINE]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    image_folder = ""
  return {"type": "llava", "modality": modality, "paths": [str(path)], "image_folder": image_folder}


def expected_records(
    root: pathlib.Path, layout: str = "json", modality: str = "multimodal"
) -> list[dict]:
  img = lambda rel: str(root / "images" / rel)
  malformed = {"skip": "malformed"}
  if modality == "text":
    return [
        {
            "kind": "text_chat",
            "messages": [
                {"role": "user", "content": "How do I reverse a list in Python?"},
                {
                    "role": "assistant",
                    "content": "Use xs[::-1] for a copy, or xs.reverse() in place.",
                },
            ],
        },
        *([malformed] if layout == "jsonl" else []),  # the truncated line
        malformed,  # "not a record"
        {
            "kind": "text_chat",
            "messages": [
                {"role": "user", "content": "“Café” in Japanese? — 日本語で"},
                {"role": "assistant", "content": "カフェ (kafe)."},
            ],
        },
    ]
  return [
      {
          "kind": "chat",
          "images": [img("coco/train2017/000000033471.jpg")],
          "messages": [
              {
                  "role": "user",
                  "content": f"{IMAGE_TOKEN}\nWhat are the colors of the bus in the image?",
              },
              {"role": "assistant", "content": "The bus in the image is white and red."},
              {"role": "user", "content": "What feature can be seen on the back of the bus?"},
              {"role": "assistant", "content": "The back of the bus features an advertisement."},
          ],
      },
      *([malformed] if layout == "jsonl" else []),  # the truncated line
      {
          "kind": "chat",
          "images": [img("sam/images/sa_15468.jpg")],
          "messages": [
              {
                  "role": "user",
                  "content": f"What do you see happening in this image?\n{IMAGE_TOKEN}",
              },
              {"role": "assistant", "content": "A cyclist rides along a coastal road at dusk."},
          ],
      },
      {
          "kind": "chat",
          "images": [img("m4/pair_a.png"), img("m4/pair_b.jpg")],
          "messages": [
              {"role": "user", "content": f"{IMAGE_TOKEN}\nWhat shape is drawn here?"},
              {"role": "assistant", "content": "A square."},
              {"role": "user", "content": f"And which colour fills {IMAGE_TOKEN} the most?"},
              {"role": "assistant", "content": "Blue."},
          ],
      },
      malformed,  # two markers, one image
      malformed,  # "from": "system"
      malformed,  # "not a record"
  ]

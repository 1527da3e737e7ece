"""WebDataset tar shards in the release layout (webdataset/webdataset README and
webdataset/tariterators.py: a sample's members share a key, the path up to the first dot
of the basename; the rest names the field). Shard 00000.tar is what img2dataset writes
(rom1504/img2dataset img2dataset/writer.py: <key>.jpg, <key>.txt the caption, <key>.json
its metadata with "caption", "url", "key", "status", ...), plus a LLaVA-Pretrain record in a
.json ({"id", "image", "conversations"}) and two keys with a member missing. Shard
00001.tar: a key under a folder, a .webp with its caption in the .json, a
LLaMA-Factory-style "messages" chat (hiyouga/LLaMA-Factory data/mllm_demo.json), a key
holding .jpg twice, two keys whose members interleave, a corrupt image, and a text-only
LLaVA chat.

Variant: modality "multimodal" (every key) or "text" (the keys without an image).
expected_records gives what the reader yields (images as absolute paths of files with the
same bytes), or {"skip": reason} where it raises FormatError(reason).
"""

from __future__ import annotations

import io
import json
import pathlib
import tarfile

from data_fixtures import IMAGE_TOKEN, write_image

PICTURES = {  # name -> (seed, size)
    "000000000.jpg": (31, (40, 30)),
    "000000001.jpg": (32, (30, 40)),
    "000000002.jpg": (33, (32, 32)),
    "000000004.png": (34, (36, 28)),
    "000000005.webp": (35, (28, 36)),
    "000000006.jpg": (36, (44, 22)),
    "000000007.jpg": (37, (22, 44)),
    "000000008.jpg": (38, (34, 34)),
    "000000009.png": (39, (26, 38)),
    "000000011.jpg": (41, (38, 26)),
}
CORRUPT = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2  # a JPEG header, then noise


def _meta(key: str, caption: str | None, status: str = "success") -> bytes:
  """img2dataset's .json (indent=4, as its writer dumps it)."""
  meta = {"url": f"https://example.com/{key}.jpg", "key": key, "status": status}
  if caption is not None:
    meta["caption"] = caption
  meta.update(error_message=None, width=40, height=30, original_width=400, original_height=300)
  return json.dumps(meta, indent=4).encode()


def _json(d: dict) -> bytes:
  return json.dumps(d).encode()


LLAVA_PRETRAIN = {
    "id": "000000001",
    "image": "00000/000000001.jpg",
    "conversations": [
        {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
        {"from": "gpt", "value": "grey noise on a square canvas"},
    ],
}
MESSAGES = {
    "messages": [
        {"role": "user", "content": "<image>Who made this?"},
        {"role": "assistant", "content": "A random number generator."},
    ]
}
TEXT_CHAT = {
    "id": "sharegpt_12",
    "conversations": [
        {"from": "human", "value": "Say hello."},
        {"from": "gpt", "value": "Hello."},
    ],
}


def _members(pics: pathlib.Path) -> dict[str, list[tuple[str, bytes]]]:
  def pic(name):
    return (pics / name).read_bytes()

  return {
      "00000.tar": [
          ("000000000.jpg", pic("000000000.jpg")),
          ("000000000.txt", b"A grey square of noise."),
          ("000000000.json", _meta("000000000", "A grey square of noise.")),
          ("000000001.jpg", pic("000000001.jpg")),
          ("000000001.json", _json(LLAVA_PRETRAIN)),
          ("000000002.jpg", pic("000000002.jpg")),  # no caption anywhere: missing_member
          ("000000002.json", _meta("000000002", None)),
          ("000000003.txt", "An orphan caption, café.".encode()),  # no image: missing_member
      ],
      "00001.tar": [
          ("part/000000004.png", pic("000000004.png")),
          ("part/000000004.txt", b"Speckles in a folder."),
          ("000000005.webp", pic("000000005.webp")),
          ("000000005.json", _json({"caption": "From the json.", "url": "https://x.org/5"})),
          ("000000006.jpg", pic("000000006.jpg")),
          ("000000006.json", _json(MESSAGES)),
          ("000000007.jpg", pic("000000007.jpg")),
          ("000000007.jpg", pic("000000007.jpg")),  # twice: malformed
          ("000000007.txt", b"Twice."),
          ("000000008.txt", b"Eight."),  # 8 and 9 interleave
          ("000000009.png", pic("000000009.png")),
          ("000000008.jpg", pic("000000008.jpg")),
          ("000000009.txt", b"Nine <image_placeholder> inside."),
          ("000000010.jpg", CORRUPT),  # bad_image, from the encoder
          ("000000010.txt", b"Corrupt."),
          ("000000012.json", _json(TEXT_CHAT)),  # no image: missing_member
          ("000000011.jpg", pic("000000011.jpg")),
          ("000000011.txt", b"The last one."),
      ],
  }


def build(root: pathlib.Path, modality: str = "multimodal") -> dict:
  """Writes root/shards/0000{0,1}.tar (and the pictures they hold, under root/pictures)."""
  pics, shards = root / "pictures", root / "shards"
  pics.mkdir(parents=True, exist_ok=True)
  shards.mkdir(parents=True, exist_ok=True)
  for name, (seed, size) in PICTURES.items():
    write_image(pics / name, seed, size)
  (pics / "corrupt.jpg").write_bytes(CORRUPT)
  for shard, members in _members(pics).items():
    with tarfile.open(shards / shard, "w") as tar:
      for name, data in members:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
        tar.addfile(info, io.BytesIO(data))
  return {"type": "webdataset", "modality": modality, "paths": [str(shards)]}


def expected_records(root: pathlib.Path, modality: str = "multimodal") -> list[dict]:
  """What the reader yields for build(root, modality), in its order."""
  pics = root.absolute() / "pictures"

  def caption(pic, text):
    return {"kind": "caption", "images": [str(pics / pic)], "text": text}

  orphan = {"kind": "text", "images": [], "text": "An orphan caption, café."}
  text_chat = {
      "kind": "text_chat",
      "images": [],
      "messages": [
          {"role": "user", "content": "Say hello."},
          {"role": "assistant", "content": "Hello."},
      ],
  }
  if modality == "text":
    return [orphan, text_chat]
  return [
      caption("000000000.jpg", f"{IMAGE_TOKEN}A grey square of noise."),
      {
          "kind": "chat",
          "images": [str(pics / "000000001.jpg")],
          "messages": [
              {
                  "role": "user",
                  "content": f"Render a clear and concise summary of the photo.\n{IMAGE_TOKEN}",
              },
              {"role": "assistant", "content": "grey noise on a square canvas"},
          ],
      },
      {"skip": "missing_member"},  # 000000002: no text
      {"skip": "missing_member"},  # 000000003: no image
      caption("000000004.png", f"{IMAGE_TOKEN}Speckles in a folder."),
      caption("000000005.webp", f"{IMAGE_TOKEN}From the json."),
      {
          "kind": "chat",
          "images": [str(pics / "000000006.jpg")],
          "messages": [
              {"role": "user", "content": f"{IMAGE_TOKEN}Who made this?"},
              {"role": "assistant", "content": "A random number generator."},
          ],
      },
      {"skip": "malformed"},  # 000000007: .jpg twice
      caption("000000008.jpg", f"{IMAGE_TOKEN}Eight."),
      caption("000000009.png", f"Nine {IMAGE_TOKEN} inside."),
      caption("corrupt.jpg", f"{IMAGE_TOKEN}Corrupt."),  # the encoder's bad_image
      {"skip": "missing_member"},  # 000000012: no image
      caption("000000011.jpg", f"{IMAGE_TOKEN}The last one."),
  ]

"""Hugging Face parquet shards in release layouts, written with pyarrow in the Arrow types
`datasets` gives its features (huggingface/datasets src/datasets/features/image.py:
Image = struct<bytes: binary, path: string>; a Sequence(Image) a list of them) and its
"huggingface" schema metadata.

Layouts (the `layout` variant):
  "vsft"         HuggingFaceH4/llava-instruct-mix-vsft (its README's dataset_info):
                 messages list<{content: list<{index, text, type}>, role}>, images
                 Sequence(Image); two files of 2-row groups under root/data: Hub rows
                 with embedded bytes (and the basename as path, which must not be used),
                 `to_parquet` rows of local files (bytes null, a path relative to the
                 file's folder or absolute), image parts indexed out of order, a
                 text-only chat, a missing file, an image with neither bytes nor path,
                 a "system" turn.
  "llava_next"   lmms-lab/LLaVA-NeXT-Data (README dataset_info): id, conversations
                 list<{from, value}>, data_source, image Image (null for text chats).
  "img2dataset"  rom1504/img2dataset --output_format parquet (img2dataset/writer.py):
                 key, jpg binary (null when the download failed), txt, url, status, ...
  "wikipedia"    wikimedia/wikipedia: id, url, title, text (a text source, no images).
expected_records gives what the reader yields (images as absolute paths of files holding
the same bytes), or {"skip": reason} where it raises FormatError(reason).
"""

from __future__ import annotations

import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
from data_fixtures import IMAGE_TOKEN, write_image

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PART = pa.struct([("index", pa.int64()), ("text", pa.string()), ("type", pa.string())])
_STR = {"dtype": "string", "_type": "Value"}

# name -> (seed, size) of the pictures the rows embed or reference (under root/pictures,
# except local/d.png, which sits beside the vsft shards as `to_parquet` would leave it)
PICTURES = {
    "a.png": (11, (40, 30)),
    "b.png": (12, (24, 36)),
    "c.png": (13, (36, 24)),
    "e.png": (15, (30, 30)),
    "f.png": (16, (44, 20)),
    "g.png": (17, (28, 40)),
    "h.png": (18, (40, 40)),
    "i.png": (19, (20, 30)),
    "j.png": (20, (30, 20)),
    "k.png": (21, (48, 32)),
    "l.png": (22, (32, 48)),
}


def _text(t):
  return {"index": None, "text": t, "type": "text"}


def _image(k):
  return {"index": k, "text": None, "type": "image"}


def _pictures(root: pathlib.Path) -> pathlib.Path:
  folder = root / "pictures"
  folder.mkdir(parents=True, exist_ok=True)
  for name, (seed, size) in PICTURES.items():
    write_image(folder / name, seed, size)
  return folder


def _embedded(root: pathlib.Path, name: str) -> dict:
  """A Hub row's image: the bytes, and the basename `embed_storage` leaves as path."""
  return {"bytes": (root / "pictures" / name).read_bytes(), "path": name}


def _write(path: pathlib.Path, columns: dict, schema: pa.Schema, features: dict, group: int):
  path.parent.mkdir(parents=True, exist_ok=True)
  meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
  table = pa.Table.from_pydict(columns, schema=schema.with_metadata(meta))
  pq.write_table(table, path, row_group_size=group)


# ------------------------------------------------------------------------- vsft

VSFT_SCHEMA = pa.schema(
    [
        ("messages", pa.list_(pa.struct([("content", pa.list_(PART)), ("role", pa.string())]))),
        ("images", pa.list_(IMAGE)),
    ]
)
VSFT_FEATURES = {
    "messages": [
        {
            "content": [
                {"index": {"dtype": "int64", "_type": "Value"}, "text": _STR, "type": _STR}
            ],
            "role": _STR,
        }
    ],
    "images": {"feature": {"decode": True, "id": None, "_type": "Image"}, "_type": "Sequence"},
}
# the shards' rows; images by picture name ("@..." = a path-only struct)
VSFT_ROWS = [
    [  # train-00000-of-00002.parquet
        (
            [
                ("user", [_image(0), _text("What is in the picture?")]),
                ("assistant", [_text("Noise, mostly.")]),
            ],
            ["a.png"],
        ),
        (
            [
                ("user", [_text("First: "), _image(0)]),
                ("assistant", [_text("Grey.")]),
                ("user", [_image(1), _text("And this one?")]),
                ("assistant", [_text("Also grey.")]),
            ],
            ["b.png", "c.png"],
        ),
        (
            [("user", [_image(0), _text("Describe.")]), ("assistant", [_text("Dots.")])],
            ["@local/d.png"],  # relative to the shard's folder
        ),
        (
            [("user", [_text("What is 2 plus 3?")]), ("assistant", [_text("5.")])],
            [],  # a text-only chat: the encoder's "modality" in a multimodal source
        ),
    ],
    [  # train-00001-of-00002.parquet
        (
            [
                ("user", [_image(1), _text(" left, "), _image(0), _text(" right. Brighter?")]),
                ("assistant", [_text("The left one.")]),
            ],
            ["e.png", "f.png"],
        ),
        (
            [("user", [_image(0), _text("Where?")]), ("assistant", [_text("Gone.")])],
            ["@ABS/gone.png"],  # an absolute path to no file: the encoder's "bad_image"
        ),
        (
            [("user", [_image(0), _text("Empty?")]), ("assistant", [_text("Yes.")])],
            [None],  # neither bytes nor path
        ),
        (
            [
                ("system", [_text("Be brief.")]),
                ("user", [_image(0), _text("What?")]),
                ("assistant", [_text("Noise.")]),
            ],
            ["g.png"],
        ),
        (
            [("user", [_image(0), _text("Caption this.")]), ("assistant", [_text("Static.")])],
            ["@ABS/pictures/h.png"],  # `to_parquet` of a local file: its absolute path
        ),
    ],
]


def _vsft_image(root: pathlib.Path, name):
  if name is None:
    return {"bytes": None, "path": None}
  if name.startswith("@"):
    return {"bytes": None, "path": name[1:].replace("ABS", str(root.absolute()))}
  return _embedded(root, name)


def _build_vsft(root: pathlib.Path) -> dict:
  data = root / "data"
  write_image(_mkdir(data / "local") / "d.png", 14, (26, 26))
  for n, rows in enumerate(VSFT_ROWS):
    columns = {
        "messages": [[{"content": c, "role": r} for r, c in turns] for turns, _ in rows],
        "images": [[_vsft_image(root, x) for x in images] for _, images in rows],
    }
    path = data / f"train-{n:05d}-of-{len(VSFT_ROWS):05d}.parquet"
    _write(path, columns, VSFT_SCHEMA, VSFT_FEATURES, group=2)
  return {"paths": [str(data)]}


def _expected_vsft(root: pathlib.Path) -> list[dict]:
  pics, root = root.absolute() / "pictures", root.absolute()
  p = lambda name: str(pics / name)  # noqa: E731
  return [
      {
          "kind": "chat",
          "images": [p("a.png")],
          "messages": [
              {"role": "user", "content": f"{IMAGE_TOKEN}What is in the picture?"},
              {"role": "assistant", "content": "Noise, mostly."},
          ],
      },
      {
          "kind": "chat",
          "images": [p("b.png"), p("c.png")],
          "messages": [
              {"role": "user", "content": f"First: {IMAGE_TOKEN}"},
              {"role": "assistant", "content": "Grey."},
              {"role": "user", "content": f"{IMAGE_TOKEN}And this one?"},
              {"role": "assistant", "content": "Also grey."},
          ],
      },
      {
          "kind": "chat",
          "images": [str(root / "data" / "local" / "d.png")],
          "messages": [
              {"role": "user", "content": f"{IMAGE_TOKEN}Describe."},
              {"role": "assistant", "content": "Dots."},
          ],
      },
      {
          "kind": "text_chat",
          "images": [],
          "messages": [
              {"role": "user", "content": "What is 2 plus 3?"},
              {"role": "assistant", "content": "5."},
          ],
      },
      {  # the parts index images 1 then 0
          "kind": "chat",
          "images": [p("f.png"), p("e.png")],
          "messages": [
              {"role": "user", "content": f"{IMAGE_TOKEN} left, {IMAGE_TOKEN} right. Brighter?"},
              {"role": "assistant", "content": "The left one."},
          ],
      },
      {
          "kind": "chat",
          "images": [str(root / "gone.png")],
          "messages": [
              {"role": "user", "content": f"{IMAGE_TOKEN}Where?"},
              {"role": "assistant", "content": "Gone."},
          ],
      },
      {"skip": "missing_image"},
      {"skip": "malformed"},
      {
          "kind": "chat",
          "images": [p("h.png")],
          "messages": [
              {"role": "user", "content": f"{IMAGE_TOKEN}Caption this."},
              {"role": "assistant", "content": "Static."},
          ],
      },
  ]


# ------------------------------------------------------------------- llava_next

LLAVA_NEXT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        ("data_source", pa.string()),
        ("image", IMAGE),
    ]
)
LLAVA_NEXT_FEATURES = {
    "id": _STR,
    "conversations": [{"from": _STR, "value": _STR}],
    "data_source": _STR,
    "image": {"decode": True, "id": None, "_type": "Image"},
}
LLAVA_NEXT_ROWS = [
    ("000000033471", [("human", "<image>\nWhat colour is it?"), ("gpt", "Grey.")], "i.png"),
    ("sharegpt_0", [("human", "Name a prime."), ("gpt", "7.")], None),  # text-only
    ("000000000009", [("human", "<image>\n<image>\nTwo?"), ("gpt", "One.")], "j.png"),
    ("sa_1", [("human", "Describe it.\n<image>"), ("gpt", "Speckles.")], "k.png"),
]


def _build_llava_next(root: pathlib.Path) -> dict:
  rows = LLAVA_NEXT_ROWS
  columns = {
      "id": [r[0] for r in rows],
      "conversations": [[{"from": f, "value": v} for f, v in r[1]] for r in rows],
      "data_source": ["fixture"] * len(rows),
      "image": [None if r[2] is None else _embedded(root, r[2]) for r in rows],
  }
  path = root / "data" / "train-00000-of-00001.parquet"
  _write(path, columns, LLAVA_NEXT_SCHEMA, LLAVA_NEXT_FEATURES, group=3)
  return {"paths": [str(path)], "messages_column": "conversations", "images_column": "image"}


def _expected_llava_next(root: pathlib.Path) -> list[dict]:
  pics = root.absolute() / "pictures"
  return [
      {
          "kind": "chat",
          "images": [str(pics / "i.png")],
          "messages": [
              {"role": "user", "content": f"{IMAGE_TOKEN}\nWhat colour is it?"},
              {"role": "assistant", "content": "Grey."},
          ],
      },
      {
          "kind": "text_chat",
          "images": [],
          "messages": [
              {"role": "user", "content": "Name a prime."},
              {"role": "assistant", "content": "7."},
          ],
      },
      {"skip": "malformed"},  # two markers, one image
      {
          "kind": "chat",
          "images": [str(pics / "k.png")],
          "messages": [
              {"role": "user", "content": f"Describe it.\n{IMAGE_TOKEN}"},
              {"role": "assistant", "content": "Speckles."},
          ],
      },
  ]


# ------------------------------------------------------------------ img2dataset

IMG2DATASET_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("jpg", pa.binary()),
        ("txt", pa.string()),
        ("url", pa.string()),
        ("status", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
    ]
)


def _build_img2dataset(root: pathlib.Path) -> dict:
  rows = [  # (key, picture, caption, status)
      ("000000000", "l.png", "A field of grey static.", "success"),
      ("000000001", None, None, "failed_to_download"),
      ("000000002", "a.png", "Speckled noise, 40 by 30.", "success"),
  ]
  pics = root / "pictures"
  columns = {
      "key": [r[0] for r in rows],
      "jpg": [None if r[1] is None else (pics / r[1]).read_bytes() for r in rows],
      "txt": [r[2] for r in rows],
      "url": [f"https://example.com/{r[0]}.jpg" for r in rows],
      "status": [r[3] for r in rows],
      "width": [None if r[1] is None else PICTURES[r[1]][1][0] for r in rows],
      "height": [None if r[1] is None else PICTURES[r[1]][1][1] for r in rows],
  }
  path = root / "00000.parquet"
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pydict(columns, schema=IMG2DATASET_SCHEMA), path)
  return {"paths": [str(path)], "text_column": "txt", "images_column": "jpg"}


def _expected_img2dataset(root: pathlib.Path) -> list[dict]:
  pics = root.absolute() / "pictures"
  return [
      {
          "kind": "caption",
          "images": [str(pics / "l.png")],
          "text": f"{IMAGE_TOKEN}A field of grey static.",
      },
      {"skip": "empty"},  # a failed download: no image, no caption
      {
          "kind": "caption",
          "images": [str(pics / "a.png")],
          "text": f"{IMAGE_TOKEN}Speckled noise, 40 by 30.",
      },
  ]


# -------------------------------------------------------------------- wikipedia

WIKIPEDIA_SCHEMA = pa.schema(
    [("id", pa.string()), ("url", pa.string()), ("title", pa.string()), ("text", pa.string())]
)
WIKIPEDIA_TEXTS = [
    ("12", "Anarchism", "Anarchism is a political philosophy."),
    ("25", "Autism", "Autism is a neurodevelopmental condition. <image> is no marker here."),
]


def _build_wikipedia(root: pathlib.Path) -> dict:
  columns = {
      "id": [r[0] for r in WIKIPEDIA_TEXTS],
      "url": [f"https://en.wikipedia.org/wiki?curid={r[0]}" for r in WIKIPEDIA_TEXTS],
      "title": [r[1] for r in WIKIPEDIA_TEXTS],
      "text": [r[2] for r in WIKIPEDIA_TEXTS],
  }
  path = root / "20231101.en" / "train-00000-of-00041.parquet"
  features = {k: _STR for k in WIKIPEDIA_SCHEMA.names}
  _write(path, columns, WIKIPEDIA_SCHEMA, features, group=1)
  return {"paths": [str(path.parent)]}


def _expected_wikipedia(root: pathlib.Path) -> list[dict]:
  return [{"kind": "text", "text": r[2], "images": []} for r in WIKIPEDIA_TEXTS]


# ----------------------------------------------------------------------- public

LAYOUTS = {
    "vsft": (_build_vsft, _expected_vsft),
    "llava_next": (_build_llava_next, _expected_llava_next),
    "img2dataset": (_build_img2dataset, _expected_img2dataset),
    "wikipedia": (_build_wikipedia, _expected_wikipedia),
}


def _mkdir(path: pathlib.Path) -> pathlib.Path:
  path.mkdir(parents=True, exist_ok=True)
  return path


def build(root: pathlib.Path, layout: str = "vsft", modality: str = "multimodal") -> dict:
  """Writes the layout's files under root; the SourceConfig fields that read them."""
  _pictures(_mkdir(root))
  fields = LAYOUTS[layout][0](root)
  return {"type": "parquet", "modality": modality, **fields}


def expected_records(
    root: pathlib.Path, layout: str = "vsft", modality: str = "multimodal"
) -> list[dict]:
  """What the reader yields for build(root, layout, modality), in its order (the reader
  leaves modality to the encoder, so the list is the same for both)."""
  del modality
  return LAYOUTS[layout][1](root)

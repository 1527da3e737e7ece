"""A built-in, file-free dataset for the demo and tests (issue 5).

Sample i is a pure function of (seed, i): a scene of coloured shapes at named
positions, sometimes with a printed word, drawn with PIL, and text about it. Answers
depend on the image (the colour of the shape asked about, the word printed), so a
model can only fit the data by looking. Kinds, as in the paper's data mixture:

  caption      image-caption pair                          (stage 1/2 multimodal)
  object       one shape (and maybe a word) and its caption (vision pretraining: one
               thing to look at, so a tower learns what a shape or word looks like)
  interleaved  text, image, text about it, second image    (stage 2 multimodal)
  chat         multi-turn chat about one or two images, each image after the first
               question about it                           (stage 3 multimodal)
  text         a plain text document                       (language data)
  text_chat    a text-only chat                            (stage 3 language)
  text_qa      questions about a scene described in words after the first question
               (language: reading facts back from the context by place, as image
               questions read image tokens)

Records use the manifest schema (BUILD.md): {"kind", "images": [PIL images], and
"text" or "messages": [{"role", "content"}]} with `<image_placeholder>` marking images.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 40),
    "purple": (140, 60, 170),
    "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle")
# A place is one word and one cell of a 3 x 3 grid: shapes sit in the edge cells and
# the word in the middle one. With a 3 x 3 token grid (the demo's towers) a question
# about a place names it with one token and reads one image token, and no image token
# mixes two things.
PLACES = {
    "top": (1 / 2, 1 / 6),
    "left": (1 / 6, 1 / 2),
    "right": (5 / 6, 1 / 2),
    "bottom": (1 / 2, 5 / 6),
}
WORDS = ("CAT", "SUN", "BOAT", "TREE", "STOP", "OPEN", "MAP", "KEY")
KINDS = ("caption", "interleaved", "chat", "text", "text_chat", "object", "text_qa")
TEXT_KINDS = ("text", "text_chat", "text_qa")  # records without images
BACKGROUND = (245, 245, 235)


@dataclasses.dataclass(frozen=True)
class Shape:
  kind: str
  colour: str
  place: str


@dataclasses.dataclass(frozen=True)
class Scene:
  shapes: tuple[Shape, ...]
  word: str | None

  def caption(self) -> str:
    """A dense caption: every shape by place (in reading order), colour and kind."""
    order = {p: i for i, p in enumerate(PLACES)}
    shapes = sorted(self.shapes, key=lambda s: order[s.place])
    parts = [f"at the {s.place} a {s.colour} {s.kind}" for s in shapes]
    text = "The image shows " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "")
    text += parts[-1] + "."
    if self.word:
      text += f' The word "{self.word}" is written in the middle.'
    return text


def make_scene(rng: np.random.Generator) -> Scene:
  places = rng.permutation(list(PLACES))[: rng.integers(1, 4)]
  shapes = tuple(
      Shape(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(p)) for p in places
  )
  return Scene(shapes, str(rng.choice(WORDS)) if rng.random() < 0.5 else None)


def draw(scene: Scene, size: int) -> Image.Image:
  img = Image.new("RGB", (size, size), BACKGROUND)
  d = ImageDraw.Draw(img)
  r = size // 8
  for s in scene.shapes:
    cx, cy = (int(f * size) for f in PLACES[s.place])
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[s.colour]
    if s.kind == "circle":
      d.ellipse(box, fill=fill)
    elif s.kind == "square":
      d.rectangle(box, fill=fill)
    else:
      d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
  if scene.word:
    font = ImageFont.load_default(size=max(8, size // 8))
    d.text((size // 2, size // 2), scene.word, fill=(0, 0, 0), font=font, anchor="mm")
  return img


def _questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
  """Every distinct question about a scene (each shape's colour and shape, the word), in
  a random order: a chat's turns about one image never repeat a question. When a word is
  printed it comes first 40% of the time (it is one question among up to seven)."""
  qa = []
  for s in scene.shapes:
    qa.append((f"What colour is the shape at the {s.place}?", s.colour.capitalize() + "."))
    qa.append((f"What shape is at the {s.place}?", f"A {s.colour} {s.kind}."))
  weights = [1.0] * len(qa)
  if scene.word:
    qa.append(("What word is written in the image?", scene.word.capitalize() + "."))
    weights.append(len(weights) * 0.4 / 0.6)
  p = np.asarray(weights) / np.sum(weights)
  return [qa[i] for i in rng.choice(len(qa), len(qa), replace=False, p=p)]


def sample(seed: int, index: int, image_size: int, kind: str | None = None) -> dict[str, Any]:
  """Record `index` of the dataset with `seed` (kind drawn uniformly unless given).

  image_size 0 returns the record's scenes instead of drawn images (text only, fast).
  """
  rng = np.random.default_rng([seed, index])

  def picture(scene: Scene):
    return draw(scene, image_size) if image_size else scene

  kind = kind or str(rng.choice(KINDS))
  if kind not in KINDS:
    raise ValueError(f"unknown sample kind {kind!r}; known: {KINDS}")
  if kind == "caption":
    scene = make_scene(rng)
    return {"kind": kind, "images": [picture(scene)], "text": IMAGE_TOKEN + scene.caption()}
  if kind == "object":
    scene = Scene(
        (
            Shape(
                str(rng.choice(SHAPES)),
                str(rng.choice(list(COLOURS))),
                str(rng.choice(list(PLACES))),
            ),
        ),
        str(rng.choice(WORDS)) if rng.random() < 0.5 else None,
    )
    return {"kind": kind, "images": [picture(scene)], "text": IMAGE_TOKEN + scene.caption()}
  if kind == "interleaved":
    a, b = make_scene(rng), make_scene(rng)
    text = (
        f"Here are two pictures. {IMAGE_TOKEN}{a.caption()} Compare it with the next "
        f"one. {IMAGE_TOKEN}{b.caption()}"
    )
    return {"kind": kind, "images": [picture(a), picture(b)], "text": text}
  if kind == "chat":
    # One or two images; up to three turns about the first and two about the second.
    # An image follows the first question about it: its tokens can then attend to the
    # question (which place is asked), so the answer reads one marked token instead of
    # having to find the asked place among all of them (much faster to learn).
    scenes = [make_scene(rng) for _ in range(int(rng.integers(1, 3)))]
    messages = []
    for turn, scene in enumerate(scenes):
      asked = _questions(scene, rng)[: int(rng.integers(1, 4 - turn))]
      for k, (q, a) in enumerate(asked):
        messages += [
            {"role": "user", "content": q + (IMAGE_TOKEN if k == 0 else "")},
            {"role": "assistant", "content": a},
        ]
    return {"kind": kind, "images": [picture(s) for s in scenes], "messages": messages}
  if kind == "text_qa":
    # Questions about a scene described in words (after the first question, as images
    # follow theirs in chats): reading facts back by place from the context, the skill a
    # question about an image needs from its image tokens.
    scene = make_scene(rng)
    described = scene.caption().replace("The image shows at", "At", 1)
    asked = _questions(scene, rng)[: int(rng.integers(1, 3))]
    messages = []
    for k, (q, a) in enumerate(asked):
      messages += [
          {"role": "user", "content": q + (" " + described if k == 0 else "")},
          {"role": "assistant", "content": a},
      ]
    return {"kind": kind, "images": [], "messages": messages}
  n = int(rng.integers(2, 6))
  colours = [str(c) for c in rng.choice(list(COLOURS), n)]
  if kind == "text":
    text = " ".join(
        f"The {c} {rng.choice(SHAPES)} is next to the {rng.choice(WORDS).lower()}." for c in colours
    )
    return {"kind": kind, "images": [], "text": text}
  a, b = int(rng.integers(1, 20)), int(rng.integers(1, 20))
  return {
      "kind": kind,
      "images": [],
      "messages": [
          {"role": "user", "content": f"What is {a} plus {b}?"},
          {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
      ],
  }

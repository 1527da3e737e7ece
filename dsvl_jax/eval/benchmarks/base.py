"""What every benchmark module provides, and the item it yields.

A benchmark module (mmbench.py, pope.py, ...) reads its public release files as they
are distributed and defines, beside its code, the prompt wording and the answer
extraction rule of the reference evaluation it follows:

  NAME                      the benchmark's key in config.eval.benchmarks and reports
  load(path) -> [BenchItem] every item of the release at `path` (a file or a folder)
  prompt(item) -> str       the user turn's text, with one <image_placeholder> per image
                            where the image goes (the model's template wraps it)
  parse(item, output)       the answer extracted from the model's raw output, or None
                            when the rule cannot extract one (counted as unparsed and
                            scored wrong: never silently replaced by a guess)
  score(items, parsed)      the official metric(s) as a flat dict of floats, plus
                            "num_items" and "unparsed"

Images are PIL images decoded on demand (`BenchItem.images()`), so a loader never holds
a whole benchmark's pixels.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Callable, Sequence

from PIL import Image

from dsvl_jax.processor.image_processor import load_image

LETTERS = string.ascii_uppercase


class BenchmarkFormatError(ValueError):
  """A release file that does not have the layout its benchmark publishes (the message
  names the file, and the row or key)."""


@dataclasses.dataclass(frozen=True)
class BenchItem:
  """One question. `answer` is what `parse` returns for a right answer: an option
  letter ('B'), 'yes'/'no', or for open answers a tuple of accepted strings."""
  id: str  # unique within the benchmark (a CircularEval rotation has its own id)
  question: str  # the question as released (placeholders as the release writes them)
  options: tuple[str, ...]  # option texts in order (A, B, ...); () for open / yes-no
  answer: Any
  load_images: Callable[[], list[Image.Image]] = dataclasses.field(
      default=lambda: [], compare=False, repr=False)
  num_images: int = 0
  category: str = ""  # per-category accuracy where the benchmark reports it
  hint: str = ""  # context shown before the question (MMBench, ScienceQA)
  group: str = ""  # items scored together (CircularEval: the rotations of one question)
  extra: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

  def images(self) -> list[Image.Image]:
    return [im.convert("RGB") for im in self.load_images()]


def image_loader(*sources) -> Callable[[], list[Image.Image]]:
  """`BenchItem.load_images` for image files or encoded bytes: decoded on call by the
  project's loader (a missing or corrupt image raises, naming it)."""
  return lambda: [load_image(s) for s in sources]


def option_lines(options: Sequence[str]) -> str:
  """'A. first\\nB. second' (the option block most reference prompts use)."""
  return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def accuracy(flags: Sequence[bool]) -> float:
  return float(sum(map(bool, flags)) / len(flags)) if len(flags) else 0.0

"""What every benchmark module provides (`Benchmark`), and the item it yields.

A benchmark module (mmbench.py, pope.py, ...) reads its public release files as they
are distributed and defines, beside its code, the prompt wording and the answer
extraction rule of the reference evaluation it follows. Its top-level names are the
`Benchmark` protocol's members (a module object satisfies a Protocol structurally), so
the harness calls them by name and a type checker checks every module against it.

Images are PIL images decoded on demand (`BenchItem.images()`), so a loader never holds
a whole benchmark's pixels.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import string
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

from PIL import Image

from dsvl_jax.processor.image_processor import load_image

if TYPE_CHECKING:  # annotation only: the likelihood items live with the scorer
  from dsvl_jax.eval.items import EvalItem

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
      default=lambda: [], compare=False, repr=False
  )
  num_images: int = 0
  category: str = ""  # per-category accuracy where the benchmark reports it
  hint: str = ""  # context shown before the question (MMBench, ScienceQA)
  group: str = ""  # items scored together (CircularEval: the rotations of one question)
  extra: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

  def images(self) -> list[Image.Image]:
    return [im.convert("RGB") for im in self.load_images()]


@runtime_checkable
class Benchmark(Protocol):
  """A benchmark answered by generation (registry.MODULES but LIKELIHOOD)."""

  NAME: str  # the benchmark's key in config.eval.sets specs and reports

  def load(self, path: str | pathlib.Path) -> list[BenchItem]:
    """Every item of the release at `path` (a file or a folder)."""

  def prompt(self, item: BenchItem) -> str:
    """The user turn's text, one <image_placeholder> per image where the image goes
    (the model's template wraps it)."""

  def parse(self, item: BenchItem, output: str) -> Any:
    """The answer extracted from the model's raw output by the benchmark's official
    rule; what that rule gives an answer it cannot read (None, MMBench's 'Z', POPE's
    "yes") is counted as unparsed or, where the rule decides it by default, as a
    fallback (the module's `fallback`)."""

  def is_correct(self, item: BenchItem, parsed: Any) -> bool:
    """One item's verdict (`exact_match` unless the benchmark's rule says otherwise);
    parsed may have come back from JSON (a list, not a tuple)."""

  def score(self, items: Sequence[BenchItem], parsed: Sequence[Any]) -> dict[str, float]:
    """The official metric(s) as a flat dict of floats, plus "num_items" and
    "unparsed"; parsed[i] answers items[i]."""


@runtime_checkable
class LikelihoodBenchmark(Protocol):
  """A benchmark scored by option likelihood (registry.LIKELIHOOD; eval/scoring.py)."""

  NAME: str

  def load(self, path: str | pathlib.Path, shots: int = 0) -> list[EvalItem]:
    """The items to score, each prompt prefixed by `shots` solved examples taken from
    the release's dev examples (never from the scored items)."""


def check_answers(items: Sequence[BenchItem], parsed: Sequence[Any]) -> None:
  """`score`'s precondition: parsed[i] answers items[i], one answer per item."""
  if len(items) != len(parsed):
    raise ValueError(f"{len(items)} items but {len(parsed)} parsed answers")


def check_unique_ids(items: Sequence[BenchItem], where: Any, what: str = "id") -> None:
  """A loader's check that every item id occurs once (BenchmarkFormatError naming it)."""
  seen: set[str] = set()
  for it in items:
    if it.id in seen:
      raise BenchmarkFormatError(f"{where}: {what} {it.id!r} appears twice")
    seen.add(it.id)


def exact_match(item: BenchItem, parsed: Any) -> bool:
  """The verdict of most benchmarks: an answer was parsed and it is item.answer."""
  return parsed is not None and parsed == item.answer


def read_jsonl(path: pathlib.Path) -> list[tuple[dict[str, Any], str]]:
  """(object, "file:line") for every non-blank line of a jsonl file."""
  if not path.is_file():
    raise FileNotFoundError(f"{path}: not found")
  rows = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{n}"
      try:
        d = json.loads(line)
      except json.JSONDecodeError as e:
        raise BenchmarkFormatError(f"{where}: not JSON ({e})") from e
      if not isinstance(d, dict):
        raise BenchmarkFormatError(f"{where}: expected a JSON object, got {type(d).__name__}")
      rows.append((d, where))
  if not rows:
    raise BenchmarkFormatError(f"{path}: no rows")
  return rows


def existing_image(path: pathlib.Path, where: str) -> pathlib.Path:
  """`path`, checked at load time to be a file (FileNotFoundError naming `where`)."""
  if not path.is_file():
    raise FileNotFoundError(f"{where}: image {path} not found")
  return path


def image_loader(*sources) -> Callable[[], list[Image.Image]]:
  """`BenchItem.load_images` for image files or encoded bytes: decoded on call by the
  project's loader (a missing or corrupt image raises, naming it)."""
  return lambda: [load_image(s) for s in sources]


def option_lines(options: Sequence[str]) -> str:
  """'A. first\\nB. second' (the option block most reference prompts use)."""
  return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def accuracy(flags: Sequence[bool]) -> float:
  return float(sum(map(bool, flags)) / len(flags)) if len(flags) else 0.0


def category_accuracy(categories: Sequence[str], flags: Sequence[bool]) -> dict[str, float]:
  """{"category/<name>": accuracy of the flags whose category is <name>}, names sorted;
  flags[i] belongs to categories[i]."""
  return {
      f"category/{name}": accuracy([ok for c, ok in zip(categories, flags) if c == name])
      for name in sorted(set(categories))
  }


def accuracy_metrics(
    items: Sequence[BenchItem], parsed: Sequence[Any], count: Callable[[int], Any] = int
) -> dict[str, float]:
  """`score` for one exact-match answer per item: "accuracy" over all items, then
  "num_items" and "unparsed" (None answers, scored wrong) as `count` makes them, then
  `category_accuracy`; parsed[i] answers items[i]."""
  check_answers(items, parsed)
  right = [exact_match(item, a) for item, a in zip(items, parsed)]
  return {
      "accuracy": accuracy(right),
      "num_items": count(len(items)),
      "unparsed": count(sum(a is None for a in parsed)),
      **category_accuracy([item.category for item in items], right),
  }

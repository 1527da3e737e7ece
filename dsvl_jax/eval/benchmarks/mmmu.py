"""MMMU (dev / validation): loader, prompt, and the MMMU repository's answer rules.

Release (Hugging Face `MMMU/MMMU`): one folder per subject (30 of them, e.g.
`Accounting/`, `Art_Theory/`), each holding `dev-*.parquet` (5 items),
`validation-*.parquet` (30) and `test-*.parquet` (hidden answers). Columns:

  id                 "validation_Art_Theory_12": <split>_<Subject>_<n>
  question           text; `<image n>` marks where image_n belongs
  options            a string holding a Python list literal, "['x', 'y']" ("[]" for open)
  explanation        text (often empty)
  image_1..image_7   struct {bytes: binary, path: string} (the datasets Image feature),
                     or null when the item has fewer images
  img_type           a list literal of image kinds, "['Diagrams']"
  answer             an option letter ("B") for multiple-choice; for open questions the
                     answer text, or a list literal of accepted answers "['6', '6.0']"
  topic_difficulty   "Easy" | "Medium" | "Hard"
  question_type      "multiple-choice" | "open"
  subfield           text

`load(path, split)` takes one parquet file, or a folder of per-subject folders
(`<Subject>/<split>-*.parquet`), or a folder of `<split>-*.parquet` files (the merged
re-uploads keep the same columns). The subject, the item's category, comes from the id
(as the official scorer groups it), else from the file's folder name. Encoded image
bytes are kept; pixels are decoded only when `BenchItem.images()` is called.

Prompt (the MMMU repository's LLaVA configuration): the question, the options one per
line as "(A) text", then "Answer with the option's letter from the given choices
directly."; open questions: the question then "Answer the question using a single word
or phrase.". Images (see `image_layout`): each `<image n>` tag becomes the placeholder
at its first appearance, scanning question then options, and that is the image order.

Scoring follows the MMMU repository's eval_utils (the scheme is summarised beside each
function), except that an answer its parser would replace by a random option is left
unparsed (None) and scored wrong.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import re
from typing import Any, Sequence

import pyarrow.parquet as pq

from dsvl_jax.eval.benchmarks.base import (
    LETTERS,
    BenchItem,
    BenchmarkFormatError,
    accuracy,
    check_answers,
    image_loader,
)
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

NAME = "mmmu"

NUM_IMAGE_COLUMNS = 7
IMAGE_COLUMNS = tuple(f"image_{k}" for k in range(1, NUM_IMAGE_COLUMNS + 1))
COLUMNS = (
    "id",
    "question",
    "options",
    "explanation",
    *IMAGE_COLUMNS,
    "img_type",
    "answer",
    "topic_difficulty",
    "question_type",
    "subfield",
)
# What loading needs; explanation, img_type, topic_difficulty and subfield are kept in
# `extra` when present but a file without them still loads.
REQUIRED = ("id", "question", "options", *IMAGE_COLUMNS, "answer", "question_type")
METADATA = ("subfield", "img_type", "topic_difficulty")

MULTIPLE_CHOICE = "multiple-choice"
OPEN = "open"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
OPEN_INSTRUCTION = "Answer the question using a single word or phrase."

# The official report's six disciplines over the 30 subjects.
DOMAINS = {
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": (
        "Basic_Medical_Science",
        "Clinical_Medicine",
        "Diagnostics_and_Laboratory_Medicine",
        "Pharmacy",
        "Public_Health",
    ),
    "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech and Engineering": (
        "Agriculture",
        "Architecture_and_Engineering",
        "Computer_Science",
        "Electronics",
        "Energy_and_Power",
        "Materials",
        "Mechanical_Engineering",
    ),
}

_TAG = re.compile(r"<image (\d+)>")
_ID = re.compile(r"^[a-z]+_(.+)_\d+$")


# ---------------------------------------------------------------- loading


def _files(path: pathlib.Path, split: str) -> list[pathlib.Path]:
  if path.is_file():
    return [path]
  if not path.is_dir():
    raise FileNotFoundError(f"no MMMU release at {path}")
  files = sorted(path.glob(f"*/{split}-*.parquet")) or sorted(path.glob(f"{split}-*.parquet"))
  if not files:
    raise BenchmarkFormatError(
        f"{path}: no <Subject>/{split}-*.parquet nor {split}-*.parquet files"
    )
  return files


def _literal_list(text: Any, where: str, column: str) -> list[str]:
  """A list-literal column ("['a', 'b']") as a list of strings (a number in it, were
  there one, becomes its text)."""
  try:
    value = ast.literal_eval(text) if isinstance(text, str) else None
  except (ValueError, SyntaxError):
    value = None
  if not isinstance(value, list):
    raise BenchmarkFormatError(f"{where}: {column} is not a list literal: {text!r}")
  return [str(v) for v in value]


def open_answers(answer: str) -> tuple[str, ...]:
  """An open question's accepted answers: a list literal gives several, else one."""
  text = answer.strip()
  if text.startswith("[") and text.endswith("]"):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = None
    if isinstance(value, list) and value:
      return tuple(str(v) for v in value)
  return (answer,)


def _subject(item_id: str, file: pathlib.Path) -> str:
  m = _ID.match(item_id)
  return m.group(1) if m else file.parent.name


def prompt_body(question: str, options: Sequence[str], question_type: str) -> str:
  """The prompt text with the release's `<image n>` tags still in place."""
  if question_type == MULTIPLE_CHOICE:
    lines = "".join(f"({LETTERS[i]}) {o}\n" for i, o in enumerate(options))
    return f"{question}\n{lines}{MC_INSTRUCTION}"
  return f"{question}\n{OPEN_INSTRUCTION}"


def image_layout(body: str, available: Sequence[int]) -> tuple[list[int], list[int]]:
  """(leading, referenced) image numbers, together the order of the item's images.

  referenced: the numbers of the `<image n>` tags in order of first appearance.
  leading: images present in the row but never referenced, in column order; their
  placeholders go before the question (where this project's prompts put the images
  of a question without placeholders), so the model still sees every image it has.
  """
  referenced = list(dict.fromkeys(int(n) for n in _TAG.findall(body)))
  leading = [n for n in available if n not in referenced]
  return leading, referenced


def render_tags(body: str) -> str:
  """Each tag's first appearance becomes the placeholder; a repeated tag (rare in
  MMMU) becomes the words "image n". One placeholder per distinct image keeps the
  token count down (7 images already take most of the context) and matches the
  one-image-per-placeholder contract; the words keep the back-reference readable."""
  seen: set[str] = set()

  def one(m: re.Match) -> str:
    if m.group(1) in seen:
      return f"image {m.group(1)}"
    seen.add(m.group(1))
    return IMAGE_TOKEN

  return _TAG.sub(one, body)


def _source(cell: dict, base: pathlib.Path, where: str) -> bytes | pathlib.Path:
  """An image cell's encoded bytes, or else its file beside the parquet."""
  if cell.get("bytes"):
    return cell["bytes"]
  if cell.get("path"):
    return base / cell["path"]
  raise BenchmarkFormatError(f"{where}: an image cell with neither bytes nor path")


def _item(row: dict, file: pathlib.Path, index: int, split: str) -> BenchItem:
  where = f"{file} row {index} (id {row['id']!r})"
  qtype = row["question_type"]
  if qtype not in (MULTIPLE_CHOICE, OPEN):
    raise BenchmarkFormatError(
        f"{where}: question_type {qtype!r} is neither {MULTIPLE_CHOICE!r} nor {OPEN!r}"
    )
  options = _literal_list(row["options"], where, "options")
  if qtype == MULTIPLE_CHOICE:
    if not 2 <= len(options) <= len(LETTERS):
      raise BenchmarkFormatError(f"{where}: a multiple-choice item with {len(options)} options")
    answer: Any = row["answer"]
    if split != "test" and answer not in LETTERS[: len(options)]:  # test hides answers
      raise BenchmarkFormatError(
          f"{where}: answer {answer!r} is not one of the letters of its {len(options)} options"
      )
  else:
    options = []
    answer = open_answers(row["answer"] or "")
  available = [k for k in range(1, NUM_IMAGE_COLUMNS + 1) if row[f"image_{k}"] is not None]
  leading, referenced = image_layout(prompt_body(row["question"], options, qtype), available)
  missing = [n for n in referenced if n not in available]
  if missing:
    raise BenchmarkFormatError(
        f"{where}: <image {missing[0]}> is referenced but image_{missing[0]} is empty"
    )
  order = leading + referenced
  extra = {
      "question_type": qtype,
      "leading_images": len(leading),
      "image_columns": tuple(f"image_{n}" for n in order),
      "split": split,
  }
  extra.update({k: row[k] for k in METADATA if k in row})
  return BenchItem(
      id=row["id"],
      question=row["question"],
      options=tuple(options),
      answer=answer,
      load_images=image_loader(*[_source(row[f"image_{n}"], file.parent, where) for n in order]),
      num_images=len(order),
      category=_subject(row["id"], file),
      extra=extra,
  )


def _read(file: pathlib.Path, split: str) -> list[BenchItem]:
  names = set(pq.read_schema(file).names)
  for column in REQUIRED:
    if column not in names:
      raise BenchmarkFormatError(
          f"{file}: no column {column!r} (MMMU parquet columns: {', '.join(COLUMNS)})"
      )
  columns = list(REQUIRED) + [c for c in METADATA if c in names]
  rows = pq.read_table(file, columns=columns).to_pylist()
  return [_item(row, file, i, split) for i, row in enumerate(rows)]


def load(path: str | pathlib.Path, split: str = "validation") -> list[BenchItem]:
  """Every item of `split` ("dev" | "validation" | "test") under `path`."""
  items = [it for f in _files(pathlib.Path(path), split) for it in _read(f, split)]
  seen: set[str] = set()
  for it in items:
    if it.id in seen:
      raise BenchmarkFormatError(f"{path}: id {it.id!r} appears twice")
    seen.add(it.id)
  return items


def prompt(item: BenchItem) -> str:
  body = prompt_body(item.question, item.options, item.extra["question_type"])
  return IMAGE_TOKEN * item.extra["leading_images"] + render_tags(body)


# ---------------------------------------------------------------- multiple choice

# Stripped from both ends before matching; the official parser strips , . ! ? ; : '
# only; surrounding whitespace is stripped too so "C.\n" reads like "C.".
_EDGE = " \t\r\n,.!?;:'"


@functools.lru_cache(maxsize=None)
def _letter_forms(letter: str) -> tuple[re.Pattern, ...]:
  """The ways a letter can be given, strongest first: "(B)"; "B" standing alone (the
  official " B ", here any whitespace, or the text's ends); "B." / "B)" / "B:" opening
  a phrase ("B. 45 kg"; not in the official parser, which finds "B." only at the end
  where the stripping has removed the dot)."""
  return (
      re.compile(rf"\({letter}\)"),
      re.compile(rf"(?<!\S){letter}(?!\S)"),
      re.compile(rf"(?<!\S){letter}[.):]"),
  )


def _last(found: dict[str, int]) -> str | None:
  """The candidate given last (the official tie-break for several candidates)."""
  return max(found, key=found.get) if found else None


def parse_choice(response: str, options: Sequence[str]) -> str | None:
  """The option letter a response gives, or None.

  Official order: a bracketed letter "(B)"; else a standalone letter; else, for a
  response of more than 5 words, the options whose text it contains (case-insensitive).
  Several candidates of one kind: the one appearing last. Beyond the official rule:
  the "B." form (see `_letter_forms`), and a response that is exactly one option's
  text ("Paris" for option "Paris"; the official parser would guess at random). No
  candidate: None, where the official parser picks a random letter.
  """
  letters = LETTERS[: len(options)]
  text = " " + response.strip(_EDGE) + " "
  for stage in range(3):
    found = {}
    for letter in letters:
      hits = list(_letter_forms(letter)[stage].finditer(text))
      if hits:
        found[letter] = hits[-1].start()
    if found:
      return _last(found)
  lowered = text.lower()
  if len(text.split()) > 5:
    found = {
        letters[i]: lowered.rfind(o.strip().lower())
        for i, o in enumerate(options)
        if o.strip() and o.strip().lower() in lowered
    }
    if found:
      return _last(found)
  whole = lowered.strip()
  exact = [letters[i] for i, o in enumerate(options) if o.strip(_EDGE).lower() == whole]
  return exact[0] if len(exact) == 1 else None


# ---------------------------------------------------------------- open questions

# A sentence's answer tends to follow one of these; the shortest such tail is kept.
_KEY_MARKERS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}

# Number forms, as in the official extractor: thousands with commas ("3,500"),
# scientific ("1.2e-3"), and plain integers / decimals not part of either.
_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_PLAIN = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def is_number(text: str) -> bool:
  """float() accepts it once commas are dropped ("3,500", "1e3", also "nan")."""
  try:
    float(text.replace(",", ""))
    return True
  except ValueError:
    return False


def normalize(text: str) -> list[str | float]:
  """The official normal form: a number becomes a float rounded to 2 decimals; other
  text is lowercased, and a single character becomes [" c", "c "] so that containment
  needs it to stand next to a space."""
  text = text.strip()
  if is_number(text):
    return [round(float(text.replace(",", "")), 2)]
  text = text.lower()
  return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
  return _NUM_COMMAS.findall(text) + _NUM_SCIENTIFIC.findall(text) + _NUM_PLAIN.findall(text)


def _key_tail(line: str, markers: Sequence[str]) -> str | None:
  """What follows the last occurrence of a marker, the shortest over the markers.

  Same fold as the official code, quirk included: an empty tail ("x =" with marker
  "=") is replaced by the next marker's tail however long, and an empty final result
  means the line gives no key phrase.
  """
  best = None
  for marker in markers:
    if marker in line:
      tail = line.split(marker)[-1].strip()
      if not best or len(tail) < len(best):
        best = tail
  return best or None


def key_phrases(response: str) -> list[str]:
  """The parts of a response likely to hold the answer (lowercased).

  The official code splits on ". " before a capital and on newlines, but after
  lowercasing, so only newlines split: done here directly. Each line contributes its
  shortest tail after a key marker ("is ", "answer ", ...; "=" too on the last line);
  with none at all the whole response is the one phrase.
  """
  text = response.strip().strip(".").lower()
  lines = text.split("\n")
  phrases = []
  for i, line in enumerate(lines):
    markers = _KEY_MARKERS + ("=",) if i == len(lines) - 1 else _KEY_MARKERS
    tail = _key_tail(line, markers)
    if tail and tail.strip() not in _TRIVIAL:
      phrases.append(tail)
  return phrases or [text]


def parse_open(response: str) -> tuple[str | float, ...] | None:
  """The normalised candidate answers: each key phrase and every number in it. None
  when nothing is left (a blank response; the official parser keeps "", which can
  never be right)."""
  phrases = key_phrases(response)
  raw = phrases + [n for p in phrases for n in extract_numbers(p)]
  candidates = [c for r in raw for c in normalize(r) if c != ""]
  return tuple(dict.fromkeys(candidates)) or None


def open_correct(answers: Sequence[str], candidates: Sequence[str | float]) -> bool:
  """Official eval_open: a text candidate is right when it contains a normalised
  (text) answer; a number candidate when it equals a normalised (number) answer."""
  gold = [g for a in answers for g in normalize(a)]
  for cand in candidates:
    if isinstance(cand, str):
      if any(isinstance(g, str) and g in cand for g in gold):
        return True
    elif any(not isinstance(g, str) and g == cand for g in gold):
      return True
  return False


# ---------------------------------------------------------------- interface


def parse(item: BenchItem, output: str) -> Any:
  """A letter for multiple-choice, a tuple of normalised candidates for open; None
  when the rule finds no answer."""
  if item.extra["question_type"] == MULTIPLE_CHOICE:
    return parse_choice(output, item.options)
  return parse_open(output)


def is_correct(item: BenchItem, parsed: Any) -> bool:
  """One item's verdict (parsed may have come back from JSON: a list, not a tuple)."""
  if parsed is None:
    return False
  if item.extra["question_type"] == MULTIPLE_CHOICE:
    return parsed == item.answer
  return open_correct(item.answer, parsed)


def score(items: Sequence[BenchItem], parsed: Sequence[Any]) -> dict[str, float | int]:
  """accuracy (over all items: the official instance-level "Overall"),
  category/<subject>, domain/<discipline> (disciplines with items only),
  accuracy_multiple_choice, accuracy_open (0.0 for a type without items), num_items,
  unparsed."""
  check_answers(items, parsed)
  flags = [is_correct(it, p) for it, p in zip(items, parsed)]
  out = {"accuracy": accuracy(flags)}
  for qtype, key in ((MULTIPLE_CHOICE, "accuracy_multiple_choice"), (OPEN, "accuracy_open")):
    out[key] = accuracy([f for it, f in zip(items, flags) if it.extra["question_type"] == qtype])
  for subject in sorted({it.category for it in items}):
    out[f"category/{subject}"] = accuracy(
        [f for it, f in zip(items, flags) if it.category == subject]
    )
  for domain, subjects in DOMAINS.items():
    group = [f for it, f in zip(items, flags) if it.category in subjects]
    if group:
      out[f"domain/{domain}"] = accuracy(group)
  out["num_items"] = len(items)
  out["unparsed"] = sum(p is None for p in parsed)
  return out

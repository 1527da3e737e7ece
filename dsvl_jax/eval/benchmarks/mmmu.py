"""MMMU (dev / validation): loader, VLMEvalKit's DeepSeek-VL prompt, the MMMU repository's
answer rules.

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

`load(path, split="validation")` takes one parquet file, or a folder of per-subject
folders (`<Subject>/<split>-*.parquet`), or a folder of `<split>-*.parquet` files (the
merged re-uploads keep the same columns). The subject, the item's category, comes from
the id (as the official scorer groups it), else from the file's folder name. Encoded
image bytes are kept; pixels are decoded only when `BenchItem.images()` is called.

Prompt and length: the published DeepSeek-VL setup, VLMEvalKit (open-compass/VLMEvalKit
@e8e78f05f3080fe28154f2130321f17951c3be94): `vlmeval/vlm/deepseek_vl.py` has no custom
prompt and generates greedily with max_new_tokens=512 (MAX_NEW_TOKENS);
`vlmeval/dataset/image_mcq.py` MMMUDataset.build_prompt is ImageMCQDataset.build_prompt
(MMMU has no hint):

  Question: {question}
  Options:
  A. {option A}
  ...
  Please select the correct answer from the options above. \n

and for an open question (its TSV row has no options) only "Question: {question}\n".
The template strips the message, as DeepSeek-VL's processor does. Images
(MMMUDataset.split_MMMU): when the text holds `<image k>` tags, each tag is replaced by
image k where it stands, a repeated tag repeating the image, and images no tag names
are not shown; text without tags gets all its images first. (The 2024 code, bbf8a3e
`vlmeval/utils/dataset.py` split_MMMU, builds the same text but drops every image of a
text without tags; we follow the current code there.)

Answer rules: the MMMU repository (MMMU-Benchmark/MMMU
@bb0b95a945998d91dfef37e969e07d49d1139438, `mmmu/utils/eval_utils.py`):
  multiple choice  parse_multi_choice_response (see `parse_choice`); where it finds no
                   candidate it picks random.choice(letters). Here `parse` returns None
                   for those (`fallback` says so, the per-item `correct` is False) and
                   `score` draws the picks from a fresh random.Random(42), the seed of the
                   official run, in the official run's order: subjects in the order of
                   `mmmu/utils/data_utils.py` CAT_SHORT2LONG (SUBJECTS), items by their
                   number within the subject (the release's row order: `run_llava.py`
                   concatenates the subjects in that order and parses each answer as it
                   comes; `main_parse_and_eval.py` parses subject by subject in the same
                   order). So the same predictions always give the same score, however
                   they were batched or resumed.
  open             parse_open_response / normalize_str / extract_numbers (see
                   `parse_open`), eval_open (see `open_correct`).
Metrics (`main_eval_only.py` with `calculate_ins_level_acc`): accuracy over all items
(the official "Overall", instance-level), per discipline ("domain/<name>",
DOMAIN_CAT2SUB_CAT) and per subject ("category/<Subject>"). As in the official number,
the accuracy counts the random picks that happen to be right ("fallbacks_right" of the
"fallbacks"); the official script prints them rounded to 3 decimals, here unrounded.
"""

from __future__ import annotations

import ast
import pathlib
import random
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
MAX_NEW_TOKENS = 512  # VLMEvalKit vlmeval/vlm/deepseek_vl.py default_kwargs @e8e78f05
SETUP = (
    "prompt: VLMEvalKit MMMUDataset.build_prompt (ImageMCQDataset + split_MMMU) @e8e78f05; "
    "parser: MMMU mmmu/utils/eval_utils.py parse_multi_choice_response (random fallback, "
    "seed 42) / parse_open_response / eval_open @bb0b95a9"
)

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
# VLMEvalKit vlmeval/dataset/image_mcq.py ImageMCQDataset.build_prompt @e8e78f05 (data:
# the instruction sentence as published, its trailing " \n" included).
MC_INSTRUCTION = "Please select the correct answer from the options above. \n"

# The official run's seed (mmmu/utils/eval_utils.py seeds `random` with 42 at import;
# run_llava.py --seed defaults to 42) and its subject order (mmmu/utils/data_utils.py
# CAT_SHORT2LONG values, the order run_llava.py concatenates and parses them in).
SEED = 42
SUBJECTS = (
    "Accounting",
    "Agriculture",
    "Architecture_and_Engineering",
    "Art",
    "Art_Theory",
    "Basic_Medical_Science",
    "Biology",
    "Chemistry",
    "Clinical_Medicine",
    "Computer_Science",
    "Design",
    "Diagnostics_and_Laboratory_Medicine",
    "Economics",
    "Electronics",
    "Energy_and_Power",
    "Finance",
    "Geography",
    "History",
    "Literature",
    "Manage",
    "Marketing",
    "Materials",
    "Math",
    "Mechanical_Engineering",
    "Music",
    "Pharmacy",
    "Physics",
    "Psychology",
    "Public_Health",
    "Sociology",
)

# The official report's six disciplines over the 30 subjects (data_utils.py
# DOMAIN_CAT2SUB_CAT).
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
_NUMBER = re.compile(r"_(\d+)$")


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
  """An open question's accepted answers: a list literal gives several (the official
  answer file holds them as a list), else one."""
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


def prompt_body(question: str, options: Sequence[str]) -> str:
  """VLMEvalKit's prompt text, the release's `<image n>` tags still in place (an open
  question has no options, so no option block and no instruction)."""
  text = f"Question: {question}\n"
  if options:
    lines = "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(options))
    text += f"Options:\n{lines}{MC_INSTRUCTION}"
  return text


def image_order(body: str, available: Sequence[int]) -> list[int]:
  """The image numbers in placeholder order (VLMEvalKit split_MMMU): the tags' numbers
  as they appear, repeats included, when the text has tags; else every image of the
  row (`available`, column order), all placed before the text."""
  tags = [int(n) for n in _TAG.findall(body)]
  return tags or list(available)


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
  body = prompt_body(row["question"], options)
  order = image_order(body, available)
  missing = [n for n in order if n not in available]
  if missing:
    raise BenchmarkFormatError(
        f"{where}: <image {missing[0]}> is referenced but image_{missing[0]} is empty"
    )
  extra = {
      "question_type": qtype,
      "images_first": not _TAG.search(body),
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
  """The user turn: tags become placeholders where they stand, or, without tags, the
  images go first (VLMEvalKit's DeepSeek-VL wrapper writes each image as the
  placeholder at its place in the message list)."""
  body = prompt_body(item.question, item.options)
  if item.extra["images_first"]:
    return IMAGE_TOKEN * item.num_images + body
  return _TAG.sub(IMAGE_TOKEN, body)


# ---------------------------------------------------------------- multiple choice

# Stripped from the ends one after the other, in this order (so "B.," loses both but
# "B,." keeps its comma); whitespace is not stripped.
_STRIP_ORDER = (",", ".", "!", "?", ";", ":", "'")


def _latest(found: dict[str, int]) -> str:
  """The candidate whose last occurrence starts last; the first candidate (letter
  order) on a tie, as numpy's argmax picks."""
  return max(found, key=found.__getitem__)


def parse_choice(response: str, options: Sequence[str]) -> str | None:
  """parse_multi_choice_response, but None where it would pick a random letter.

  The response, stripped of , . ! ? ; : ' at its ends and padded with a space on each
  side, is searched for candidates, the first kind that finds any wins: letters written
  "(B)"; else letters standing between two spaces " B " (so "B." mid-text, "B)" or a
  letter after a newline do not count; case matters); else, only when the response has
  more than 5 whitespace-separated words, options whose text it contains
  (case-insensitive). Several candidates: the one whose last occurrence starts last.
  """
  letters = LETTERS[: len(options)]
  for char in _STRIP_ORDER:
    response = response.strip(char)
  text = f" {response} "
  found = {c: text.rfind(f"({c})") for c in letters if f"({c})" in text}
  if not found:
    found = {c: text.rfind(f" {c} ") for c in letters if f" {c} " in text}
  if not found and len(text.split()) > 5:
    lowered = text.lower()
    found = {c: lowered.rfind(o.lower()) for c, o in zip(letters, options) if o.lower() in lowered}
  return _latest(found) if found else None


# ---------------------------------------------------------------- open questions

# A line's answer tends to follow one of these; the shortest such tail is kept.
_KEY_MARKERS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}

# Number forms, as in the official extractor: thousands with commas ("3,500"),
# scientific ("1.2e-3"), and plain integers / decimals not part of either.
_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_PLAIN = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def is_number(text: str) -> bool:
  """float() accepts it once commas are dropped ("3,500", "1e3", "1_000", also "nan")."""
  try:
    float(text.replace(",", ""))
    return True
  except ValueError:
    return False


def normalize(text: str) -> list[str | float]:
  """The official normal form (normalize_str): a number becomes a float rounded to 2
  decimals; other text is lowercased, and a single character becomes [" c", "c "] so
  that containment needs it to stand next to a space."""
  text = text.strip()
  if is_number(text):
    return [round(float(text.replace(",", "")), 2)]
  text = text.lower()
  return [" " + text, text + " "] if len(text) == 1 else [text]


def extract_numbers(text: str) -> list[str]:
  return _NUM_COMMAS.findall(text) + _NUM_SCIENTIFIC.findall(text) + _NUM_PLAIN.findall(text)


def key_tail(line: str, markers: Sequence[str]) -> str | None:
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
    tail = key_tail(line, markers)
    if tail and tail.strip() not in _TRIVIAL:
      phrases.append(tail)
  return phrases or [text]


def parse_open(response: str) -> tuple[str | float, ...]:
  """parse_open_response: the normalised candidates, each key phrase and every number
  in it, duplicates dropped (the official code keeps them in a set; order does not
  matter to `open_correct`). A blank response gives ("",), which no answer contains."""
  phrases = key_phrases(response)
  raw = phrases + [n for p in phrases for n in extract_numbers(p)]
  return tuple(dict.fromkeys(c for r in raw for c in normalize(r)))


def open_correct(answers: Sequence[str], candidates: Sequence[str | float]) -> bool:
  """Official eval_open over the normalised answers (`candidate_matches`)."""
  return candidate_matches([g for a in answers for g in normalize(a)], candidates)


def candidate_matches(gold: Sequence[str | float], candidates: Sequence[str | float]) -> bool:
  """The open-answer verdict of MMMU's eval_open (and CMMMU's fill-in, which copies it):
  a text candidate is right when it contains a text answer, a number candidate when it
  equals a number answer."""
  for cand in candidates:
    if isinstance(cand, str):
      if any(isinstance(g, str) and g in cand for g in gold):
        return True
    elif any(not isinstance(g, str) and g == cand for g in gold):
      return True
  return False


# ---------------------------------------------------------------- interface


def parse(item: BenchItem, output: str) -> Any:
  """A letter for multiple-choice (None where the official rule would pick at random:
  `score` draws that pick), a tuple of normalised candidates for open."""
  if item.extra["question_type"] == MULTIPLE_CHOICE:
    return parse_choice(output, item.options)
  return parse_open(output)


def fallback(item: BenchItem, output: str) -> bool:
  """Whether the official rule found no candidate and so picks a random letter."""
  return (
      item.extra["question_type"] == MULTIPLE_CHOICE and parse_choice(output, item.options) is None
  )


def is_correct(item: BenchItem, parsed: Any) -> bool:
  """One item's verdict (parsed may have come back from JSON: a list, not a tuple). A
  multiple-choice answer left to the random pick (None) is wrong here; `score` counts
  the pick, right or wrong, as the official accuracy does."""
  if parsed is None:
    return False
  if item.extra["question_type"] == MULTIPLE_CHOICE:
    return parsed == item.answer
  return open_correct(item.answer, parsed)


def official_order(items: Sequence[BenchItem]) -> list[int]:
  """Indices of `items` in the order the official run parses them: subjects in
  SUBJECTS order (others after, by name), then the item's number within its subject
  (the release's row order), ties in the given order."""
  rank = {s: i for i, s in enumerate(SUBJECTS)}

  def key(i: int) -> tuple:
    it = items[i]
    m = _NUMBER.search(it.id)
    return (rank.get(it.category, len(SUBJECTS)), it.category, int(m.group(1)) if m else -1, i)

  return sorted(range(len(items)), key=key)


def fallback_picks(items: Sequence[BenchItem], parsed: Sequence[Any]) -> dict[int, str]:
  """{index: letter} for every multiple-choice item parsed as None: the official
  random.choice(all_choices) draws, from a fresh random.Random(SEED) consumed in
  `official_order` (a draw depends on its item's number of options)."""
  rng = random.Random(SEED)
  picks = {}
  for i in official_order(items):
    item = items[i]
    if item.extra["question_type"] == MULTIPLE_CHOICE and parsed[i] is None:
      picks[i] = rng.choice(list(LETTERS[: len(item.options)]))
  return picks


def score(items: Sequence[BenchItem], parsed: Sequence[Any]) -> dict[str, float | int]:
  """accuracy (over all items, the random picks included: the official instance-level
  "Overall"), accuracy_multiple_choice, accuracy_open (0.0 for a type without items),
  category/<subject>, domain/<discipline> (disciplines with items only), num_items,
  unparsed (answers parsed as None: the multiple-choice ones left to the random pick),
  fallbacks (those random picks), fallbacks_right (the picks that were right)."""
  check_answers(items, parsed)
  picks = fallback_picks(items, parsed)
  final = [picks.get(i, p) for i, p in enumerate(parsed)]
  flags = [is_correct(it, p) for it, p in zip(items, final)]
  out: dict[str, float | int] = {"accuracy": accuracy(flags)}
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
  out["fallbacks"] = len(picks)
  out["fallbacks_right"] = sum(flags[i] for i in picks)
  return out

"""MathVista testmini (Lu et al. 2023, "MathVista: Evaluating Mathematical Reasoning of
Foundation Models in Visual Contexts"): 1,000 problems on one image each, multiple-choice
or free-form (integer, float, list answers).

Release layouts (`load(path, split="testmini")` reads either):

  Hugging Face, AI4Math/MathVista (its dataset card lists the features, README.md
  dataset_info at d32e834): `data/testmini-00000-of-00001-<hash>.parquet`, columns
    pid            "1"
    question       the question as asked
    image          "images/1.jpg" (the file in images.zip)
    decoded_image  struct {bytes, path}: the encoded image
    choices        list<string> for multi_choice, null for free_form
    unit           "g" | null;  precision  float64 (1.0, 2.0 for float answers) | null
    answer         a string: a choice's text, "14", "1.2", "[2007, 2008]"
    question_type  "multi_choice" | "free_form"
    answer_type    "text" | "integer" | "float" | "list"
    metadata       struct {category, context, grade, img_height, img_width, language,
                   skills (list<string>), source, split, task}
    query          the prompt: "Hint: <instruction>\\nQuestion: <question>[ (Unit: u)]
                   [\\nChoices:\\n(A) ...]"
  `path`: a parquet file, or a folder holding `<split>-*.parquet` or `data/<split>-*.parquet`.

  GitHub, lupantech/MathVista data/ (README "Evaluation Scripts of Our Models", at
  53d5258): `testmini.json` = {pid: problem} with the columns above but decoded_image and
  query (precision an int), `query.json` = {pid: query}, and `images/<pid>.jpg` (from the
  same images.zip). `path`: the json file, or a folder holding `<split>.json` or
  `data/<split>.json`; a problem's own "query" field, where it has one, wins over
  query.json. A folder with both layouts is read as parquet.

Prompt: the image, then the release's `query` (MathVista's zero-shot prompt: the task
instruction as a hint, the question, the choices). MathVista's generate_response.py sends
the query with the image, 512 new tokens by default (--max_new_tokens); VLMEvalKit's
MathVista_MINI (vlmeval/dataset/image_vqa.py at e8e78f05) gives DeepSeek-VL (no custom
prompt, vlmeval/vlm/deepseek_vl.py: max_new_tokens=512, greedy) the image then its TSV
`question`, which holds this query (its Idefics wrapper rewrites that text's "Hint: " and
"(A) " forms; the TSV itself was not read).

Answer rule: MathVista's own (lupantech/MathVista at 53d5258), not VLMEvalKit's, whose
post_check (vlmeval/dataset/utils/mathvista.py) matches letters with can_infer, compares
floats unrounded and extracts with another few-shot prompt (128 tokens, 5 tries).
  1. Extraction, evaluation/extract_answer.py::extract_answer, its rule part: an empty
     response gives ""; a multi_choice response equal to one of the choices is that
     choice; an integer (float) answer type and a response int() (float()) accepts gives
     str() of that number; else (the script's --quick_extract rule, an option off by
     default there, taken here so that such answers need no judge) the text in
     `The answer is "(.*)"\\.`. Otherwise only the LLM extraction decides: `judge` asks
     it (JUDGE = "fallback") with the script's prompt: DEMO_PROMPT (evaluation/prompts/
     ext_ans.py, stripped) + "\\n\\n{query}\\n\\n{response}\\n\\nExtracted answer: ",
     temperature 0, 1024 tokens (models/gpt.py defaults), the reply stripped. The script
     reads responses as its model wrappers return them, stripped; so is the output here.
  2. Normalisation, evaluation/calculate_score.py::normalize_extracted_answer:
     multi_choice: the extraction stripped; the letter of its first "(x)" (uppercased)
     if any; a letter among the first len(choices) gives that choice's text, anything
     else the choice at the least Levenshtein distance (the first of equals);
     integer: str(int(float(x))) (truncating); float: str(round(float(x), precision));
     list: str(x); a failure gives None.
  3. Verdict, calculate_score.py::safe_equal: the prediction == the answer string.

`parse` returns the normalised prediction, or None for an empty extraction: an empty
output, or, without a judge, an output only the LLM could extract from (the script's
extractor returns "" when its LLM call fails); also where normalisation gives None.
None scores as calculate_score scores an empty extraction (its default, without
--ignore_empty_extractions): a multi_choice item gets the choice nearest to "", the
shortest (the first of equals), right when that is the answer; other types are wrong.
`score` counts those default picks as `fallbacks` (from the final answers, judged ones
included; there is no `fallback(item, output)` hook, which sees the raw output only).

Metrics (calculate_score.py's scores): accuracy over all items, and
"<key>/<value>" accuracy for each key of GROUP_KEYS (skills: every item listing the
skill); num_items; unparsed (None answers); fallbacks.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
from typing import Any, Callable, Sequence

from dsvl_jax.eval.benchmarks.base import (
    BenchItem,
    BenchmarkFormatError,
    accuracy,
    check_answers,
    check_unique_ids,
    existing_image,
    image_loader,
)
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

NAME = "mathvista"
MAX_NEW_TOKENS = 512  # generate_response.py --max_new_tokens; VLMEvalKit DeepSeek-VL 512
SETUP = (
    "prompt: MathVista query field after the image (lupantech/MathVista generate_response.py "
    "@53d5258; VLMEvalKit MathVista_MINI @e8e78f05 the same); parser: MathVista "
    "extract_answer.py rules (+quick_extract), LLM extraction fallback, calculate_score.py "
    "normalize_extracted_answer/safe_equal @53d5258"
)
JUDGE = "fallback"
JUDGE_MAX_TOKENS = 1024  # models/gpt.py GPT_Model defaults
JUDGE_TEMPERATURE = 0.0
# models/gpt.py asks again while the reply is empty (up to 10**6 times); here at most this
# many times, then the extraction is empty.
JUDGE_TRIES = 3

MULTI_CHOICE, FREE_FORM = "multi_choice", "free_form"
QUESTION_TYPES = (MULTI_CHOICE, FREE_FORM)
ANSWER_TYPES = ("text", "integer", "float", "list")
# calculate_score.py's target_keys, in its order; the last seven are metadata fields.
GROUP_KEYS = (
    "question_type",
    "answer_type",
    "language",
    "source",
    "category",
    "task",
    "context",
    "grade",
    "skills",
)
METADATA_KEYS = GROUP_KEYS[2:]
COLUMNS = (
    "pid",
    "question",
    "choices",
    "unit",
    "precision",
    "answer",
    "question_type",
    "answer_type",
    "metadata",
    "query",
)

# extract_answer.py's quick extraction (re.search, "." not matching a newline).
_QUICK = re.compile(r'The answer is "(.*)"\.')
# normalize_extracted_answer: the first letter given in parentheses.
_PAREN_LETTER = re.compile(r"\(([a-zA-Z])\)")

# The few-shot extraction prompt: `demo_prompt` of lupantech/MathVista
# evaluation/prompts/ext_ans.py at 53d525874bdde205128e6b160b7357a88277d479, stripped as
# extract_answer.py's create_test_prompt strips it (its "\n" escapes are newlines; the
# double space in "line  graph" is the original's). A protocol string, reproduced exactly.
DEMO_PROMPT = """\
Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?
Choices:
(A) 3/11
(B) 8/11
(C) 6/11
(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B"""  # noqa: E501


# ---------------------------------------------------------------- loading


def _check(row: dict[str, Any], where: str) -> None:
  """A problem's fields, as extraction and scoring read them."""
  for key in COLUMNS:
    if key not in row:
      raise BenchmarkFormatError(f"{where}: missing {key!r}")
  for key in ("pid", "question", "answer", "query"):
    if not isinstance(row[key], str):
      raise BenchmarkFormatError(f"{where}: {key!r} is not a string ({row[key]!r})")
  if row["question_type"] not in QUESTION_TYPES:
    raise BenchmarkFormatError(
        f"{where}: question_type {row['question_type']!r} is not one of {QUESTION_TYPES}"
    )
  if row["answer_type"] not in ANSWER_TYPES:
    raise BenchmarkFormatError(
        f"{where}: answer_type {row['answer_type']!r} is not one of {ANSWER_TYPES}"
    )
  choices = row["choices"]
  if row["question_type"] == MULTI_CHOICE:
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
      raise BenchmarkFormatError(f"{where}: a multi_choice problem needs a list of choices")
    if row["answer"] and row["answer"] not in choices:  # an empty answer: hidden (test)
      raise BenchmarkFormatError(f"{where}: answer {row['answer']!r} is not one of its choices")
  meta = row["metadata"]
  if not isinstance(meta, dict):
    raise BenchmarkFormatError(f"{where}: metadata is not an object")
  for key in METADATA_KEYS:
    if key not in meta:
      raise BenchmarkFormatError(f"{where}: metadata has no {key!r}")
  if not isinstance(meta["skills"], list):
    raise BenchmarkFormatError(f"{where}: metadata skills is not a list")


def _precision(value: Any) -> int | float | None:
  """The precision as released (an int in the json, a float in the parquet); null or NaN
  is None (both fail int(), as calculate_score's int(precision) does)."""
  if isinstance(value, float) and math.isnan(value):
    return None
  return value


def _item(row: dict[str, Any], where: str, source: bytes | pathlib.Path) -> BenchItem:
  _check(row, where)
  meta = dict(row["metadata"])
  meta["skills"] = list(meta["skills"])
  return BenchItem(
      id=row["pid"],
      question=row["question"],
      options=tuple(row["choices"] or ()) if row["question_type"] == MULTI_CHOICE else (),
      answer=row["answer"],
      load_images=image_loader(source),
      num_images=1,
      category=meta["task"],
      extra={
          "query": row["query"],
          "question_type": row["question_type"],
          "answer_type": row["answer_type"],
          "precision": _precision(row["precision"]),
          "unit": row["unit"],
          "image": row.get("image"),
          "metadata": meta,
      },
  )


def _image_file(name: str, bases: Sequence[pathlib.Path], where: str) -> pathlib.Path:
  """`name` (images/<pid>.jpg) under the first base that has it."""
  for base in bases:
    if (base / name).is_file():
      return base / name
  return existing_image(bases[0] / name, where)  # raises, naming the first place


def _parquet_items(files: Sequence[pathlib.Path]) -> list[BenchItem]:
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

  items = []
  for file in files:
    names = set(pq.read_schema(file).names)
    missing = [c for c in COLUMNS if c not in names]
    if missing or not names & {"decoded_image", "image"}:
      raise BenchmarkFormatError(
          f"{file}: no column {(missing or ['decoded_image'])[0]!r} (MathVista columns: "
          f"{', '.join(COLUMNS)}, decoded_image or image)"
      )
    # images.zip unpacks to images/ at the repository root, one level above data/
    bases = (file.parent, file.parent.parent)
    for n, row in enumerate(pq.read_table(file).to_pylist()):
      where = f"{file} row {n} (pid {row.get('pid')!r})"
      cell = row.get("decoded_image") or {}
      if cell.get("bytes"):
        source: bytes | pathlib.Path = cell["bytes"]
      elif cell.get("path") or row.get("image"):
        source = _image_file(cell.get("path") or row["image"], bases, where)
      else:
        raise BenchmarkFormatError(f"{where}: no image (decoded_image and image are empty)")
      items.append(_item(row, where, source))
  return items


def _read_json(file: pathlib.Path) -> Any:
  try:
    return json.loads(file.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise BenchmarkFormatError(f"{file}: not JSON ({e.msg}, line {e.lineno})") from None


def _json_items(file: pathlib.Path) -> list[BenchItem]:
  problems = _read_json(file)
  if not isinstance(problems, dict):
    raise BenchmarkFormatError(f"{file}: not an object keyed by pid")
  queries: dict[str, Any] | None = None
  items = []
  for pid, problem in problems.items():
    where = f"{file} pid {pid!r}"
    if not isinstance(problem, dict):
      raise BenchmarkFormatError(f"{where}: not an object")
    row = dict(problem)
    if "query" not in row:
      if queries is None:
        qfile = file.parent / "query.json"
        if not qfile.is_file():
          raise FileNotFoundError(f"{file}: problems without a query and no query.json beside them")
        queries = _read_json(qfile)
        if not isinstance(queries, dict):
          raise BenchmarkFormatError(f"{qfile}: not an object keyed by pid")
      if pid not in queries:
        raise BenchmarkFormatError(f"{file.parent / 'query.json'}: no query for pid {pid!r}")
      row["query"] = queries[pid]
    if row.get("pid") != pid:
      raise BenchmarkFormatError(f"{where}: its pid field is {row.get('pid')!r}")
    if not isinstance(row.get("image"), str):
      raise BenchmarkFormatError(f"{where}: 'image' is not a file name")
    items.append(_item(row, where, existing_image(file.parent / row["image"], where)))
  return items


def load(path: str | pathlib.Path, split: str = "testmini") -> list[BenchItem]:
  """Every problem of `split` in the release at `path` (layouts: module docstring)."""
  path = pathlib.Path(path)
  if path.is_file():
    if path.suffix == ".parquet":
      items = _parquet_items([path])
    elif path.suffix == ".json":
      items = _json_items(path)
    else:
      raise BenchmarkFormatError(f"{path}: neither a MathVista parquet nor json file")
  elif path.is_dir():
    parquet = sorted(path.glob(f"{split}-*.parquet")) or sorted(
        path.glob(f"data/{split}-*.parquet")
    )
    jsons = [f for f in (path / f"{split}.json", path / "data" / f"{split}.json") if f.is_file()]
    if parquet:
      items = _parquet_items(parquet)
    elif jsons:
      items = _json_items(jsons[0])
    else:
      raise FileNotFoundError(
          f"MathVista: no {split}-*.parquet nor {split}.json in {path} or {path / 'data'}"
      )
  else:
    raise FileNotFoundError(f"MathVista: no release at {path}")
  check_unique_ids(items, path, "pid")
  return items


def prompt(item: BenchItem) -> str:
  return f"{IMAGE_TOKEN}{item.extra['query']}"


# ---------------------------------------------------------------- the official rules


def extract(item: BenchItem, output: str) -> str | None:
  """extract_answer's rule part (module docstring): the extraction, "" for an empty
  response, None when only the LLM extraction can decide."""
  response = output.strip()
  if response == "":
    return ""
  if item.extra["question_type"] == MULTI_CHOICE and response in item.options:
    return response
  answer_type = item.extra["answer_type"]
  if answer_type == "integer":
    try:
      return str(int(response))
    except ValueError:
      pass
  if answer_type == "float":
    try:
      return str(float(response))
    except ValueError:
      pass
  m = _QUICK.search(response)
  return m.group(1) if m else None


def edit_distance(a: str, b: str) -> int:
  """Levenshtein distance (insertions, deletions, substitutions cost 1 each, over code
  points), what calculate_score's Levenshtein.distance computes."""
  if len(a) < len(b):
    a, b = b, a
  previous = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    current = [i]
    for j, cb in enumerate(b, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
    previous = current
  return previous[-1]


def most_similar(text: str, choices: Sequence[str]) -> str:
  """get_most_similar: the choice nearest to `text`, the first of equals."""
  distances = [edit_distance(text, c) for c in choices]
  return choices[distances.index(min(distances))]


def normalize(item: BenchItem, extraction: str) -> str | None:
  """normalize_extracted_answer (module docstring) for this item's types; None where the
  official function gives None (and for a free_form text answer, which MathVista does
  not have and the official function cannot normalise)."""
  answer_type = item.extra["answer_type"]
  if item.extra["question_type"] == MULTI_CHOICE:
    text = extraction.strip()
    letters = _PAREN_LETTER.findall(text)
    if letters:
      text = letters[0].upper()
    sequence = [chr(ord("A") + i) for i in range(len(item.options))]
    if text in sequence:
      return item.options[sequence.index(text)]
    return most_similar(text, item.options)
  try:
    if answer_type == "integer":
      return str(int(float(extraction)))
    if answer_type == "float":
      return str(round(float(extraction), int(item.extra["precision"])))
  except (ValueError, OverflowError, TypeError):
    return None
  return str(extraction) if answer_type == "list" else None


def _normalized(item: BenchItem, extraction: str | None) -> str | None:
  """`parse`'s value for an extraction: None for none or an empty one."""
  return normalize(item, extraction) if extraction and extraction.strip() else None


def parse(item: BenchItem, output: str) -> str | None:
  """The normalised prediction, or None when the extraction is empty or needs the LLM."""
  return _normalized(item, extract(item, output))


def prediction(item: BenchItem, parsed: str | None) -> str | None:
  """What calculate_score compares with the answer: `parsed`, or for None the
  normalisation of an empty extraction (multi_choice: the shortest choice)."""
  return parsed if parsed is not None else normalize(item, "")


def is_correct(item: BenchItem, parsed: str | None) -> bool:
  """safe_equal(prediction, answer): plain string equality."""
  return prediction(item, parsed) == item.answer


def fell_back(item: BenchItem, parsed: str | None) -> bool:
  """Whether calculate_score's empty-extraction default picked this answer's choice."""
  return parsed is None and item.extra["question_type"] == MULTI_CHOICE


# ---------------------------------------------------------------- the LLM extraction


def judge_prompt(item: BenchItem, output: str) -> str:
  """extract_answer.py's create_test_prompt for this item and (stripped) output."""
  return f"{DEMO_PROMPT}\n\n{item.extra['query']}\n\n{output.strip()}\n\nExtracted answer: "


def judge(
    item: BenchItem, output: str, parsed: Any, ask: Callable[[str, int, float], str]
) -> tuple[str | None, dict[str, Any]]:
  """The LLM extraction where the rules leave the answer undecided; else (parsed, {}).

  The reply, stripped, is the extraction, normalised as the rules' are; an empty reply
  is asked again (JUDGE_TRIES in all) and then is an empty extraction (None). A failing
  endpoint raises (JudgeError) through this."""
  if extract(item, output) is not None:
    return parsed, {}
  text = judge_prompt(item, output)
  replies: list[str] = []
  for _ in range(JUDGE_TRIES):
    replies.append(ask(text, JUDGE_MAX_TOKENS, JUDGE_TEMPERATURE))
    if replies[-1].strip():
      break
  extraction = replies[-1].strip()
  return _normalized(item, extraction), {
      "judged": True,
      "replies": replies,
      "extraction": extraction,
  }


# ---------------------------------------------------------------- metrics


def _values(item: BenchItem, key: str) -> list[str]:
  if key in ("question_type", "answer_type"):
    return [item.extra[key]]
  value = item.extra["metadata"][key]
  return list(value) if key == "skills" else [value]


def score(items: Sequence[BenchItem], parsed: Sequence[str | None]) -> dict[str, float | int]:
  """accuracy, "<key>/<value>" accuracies (GROUP_KEYS order, values sorted), num_items,
  unparsed, fallbacks (module docstring)."""
  check_answers(items, parsed)
  flags = [is_correct(it, p) for it, p in zip(items, parsed)]
  out: dict[str, float | int] = {"accuracy": accuracy(flags)}
  for key in GROUP_KEYS:
    values = [_values(it, key) for it in items]
    for value in sorted({v for vs in values for v in vs}):
      out[f"{key}/{value}"] = accuracy([f for f, vs in zip(flags, values) if value in vs])
  out["num_items"] = len(items)
  out["unparsed"] = sum(p is None for p in parsed)
  out["fallbacks"] = sum(fell_back(it, p) for it, p in zip(items, parsed))
  return out

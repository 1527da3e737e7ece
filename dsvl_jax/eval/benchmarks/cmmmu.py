"""CMMMU (Zhang et al. 2024, "CMMMU: A Chinese Massive Multi-discipline Multimodal
Understanding Benchmark"): college-level Chinese questions in six disciplines, scored by
the CMMMU repository's rules.

Release. Hugging Face `m-a-p/CMMMU` (the dataset the CMMMU README links): one folder per
discipline, `<category>/{dev,val,test}-00000-of-00001.parquet`, the categories
art_and_design, business, science, health_and_medicine, humanities_and_social_sciences,
technology_and_engineering (dev 112, val 900, test 11000 items in all). The merged
re-upload `lmms-lab/CMMMU` keeps the same columns in `data/{dev,val,test}-*.parquet`;
its dataset card (README.md @ba85ed9) lists them:

  id                   the question's number (a string; an integer in the jsonl)
  type                 "选择" (multiple choice) | "判断" (true/false) | "填空" (fill in)
  source_type, source  where the question was collected
  question             text; `<img="q_10285_001.png">` marks where that image belongs
  option1..option4     the texts of options A-D (multiple choice; null otherwise); an
                       option may itself be an image tag `<img="a_10447_001.png">`
  image_1..image_5     struct {bytes, path} (the datasets Image feature), or null
  image_k_filename     the file name image_k has in the tags (null with image_k)
  answer               letters for multiple choice ("B"; several, "ACD", where several
                       options are right), "对" | "错" for true/false, the text for fill-in
  analysis, distribution, difficulty_level, subfield, img_type
  subcategory          the subject ("物理")
  category             the discipline in Chinese ("科学")

The CMMMU repository (CMMMU-Benchmark/CMMMU @e1ba883284c61e5f6bbf552addb87f6e48de87bc)
ships the same rows as JSON lines, `cmmmu-data-{dev,val,test}/<category>/<category>.jsonl`,
the images as files beside them and listed per row in `img_list` (sorted by name, so
`a_*` option images come before `q_*` question images); its scorer reads that layout.
`load(path, split="val")` reads either: one .parquet or .jsonl file; a folder of
per-category folders (`<category>/<split>-*.parquet`, or `<category>/<category>.jsonl`);
a folder holding `<split>-*.parquet` or `data/<split>-*.parquet` (the merged re-upload);
or a folder holding `cmmmu-data-<split>/`. An item's category is its discipline's
folder name (the keys the official table prints), read from the `category` column.

Prompt: VLMEvalKit's (open-compass/VLMEvalKit @e8e78f05f3080fe28154f2130321f17951c3be94,
`vlmeval/dataset/cmmmu.py` CMMMU.build_prompt; `vlmeval/vlm/deepseek_vl.py` has no
custom prompt and generates greedily with max_new_tokens=512, MAX_NEW_TOKENS):

  选择  "问题: {question}\\nOptions:\\nA. {option1}\\nB. ...\\nD. {option4}\\n" + MC_INSTRUCTION
  判断  "{question}\\n" + TF_INSTRUCTION
  填空  "{question}\\n" + FILL_INSTRUCTION

Images: VLMEvalKit's own TSV shows an item's images ahead of the text; here (as the
release writes them, and as DeepSeek-VL reads interleaved images) each `<img="...">` tag
becomes the image placeholder where it stands, at its first appearance scanning the
question then the options, and that is the image order; a repeated tag becomes the words
"图片 n". Images of the row that no tag names go before the text.

Answer rules: `eval/utils/eval_utils.py` (@e1ba883) as `eval/eval_response.py`
(@6e0ae6dfc420d3044682b4b60a364e61d42ea364) drives it, summarised beside each function:
  选择  get_multi_choice_prediction with the choices A-D (`parse_choice`); an empty
        response gets no prediction (wrong, ""); no candidate -> random.choice(A-D).
  判断  get_TF_prediction and the keyword vote (`parse_true_false`); a tie ->
        random.choice(["对", "错"]).
  填空  get_fill_blank_prediction / normalize_str / extract_numbers (`parse_fill`), the
        containment / number check (`fill_correct`).
Where the official code draws at random, `parse` returns None (`fallback` says so, the
per-item `correct` is False) and `score` draws from a fresh random.Random(42) (eval_utils
seeds the module `random` with 42 on import; both kinds of draw share it) in the official
run's order: the categories in eval_response.py's order (CATEGORIES), each in its file's
row order (eval_response.py pairs each output line with the data line at the same
position, so its numbers assume the outputs in that order). So the same predictions
always give the same score. (VLMEvalKit's CMMMU.evaluate copies these functions but
counts a fill-in item once per matching candidate and leaves `random` unseeded; the
CMMMU repository's scorer is followed here.)

Metrics (evaluate_response's correct/entries per category and overall): accuracy,
category/<category> (categories with items), accuracy_multiple_choice /
accuracy_true_false / accuracy_fill_blank (0.0 without items of that type), num_items,
unparsed (answers the official rule drew at random), fallbacks_right (draws that were
right; the accuracy counts them, as the official number does).
"""

from __future__ import annotations

import pathlib
import random
import re
from typing import Any, Callable, Sequence

import pyarrow.parquet as pq

from dsvl_jax.eval.benchmarks import mmmu
from dsvl_jax.eval.benchmarks.base import (
    BenchItem,
    BenchmarkFormatError,
    accuracy,
    check_answers,
    check_unique_ids,
    existing_image,
    image_loader,
    read_jsonl,
)
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

NAME = "cmmmu"
MAX_NEW_TOKENS = 512  # VLMEvalKit vlm/deepseek_vl.py @e8e78f05: max_new_tokens=512, greedy
SETUP = (
    "prompt: VLMEvalKit CMMMU.build_prompt @e8e78f05 (images at the release's <img> tags); "
    "parser: CMMMU eval/utils/eval_utils.py evaluate_response @e1ba883 (seed 42)"
)

SPLITS = ("dev", "val", "test")
MULTIPLE_CHOICE, TRUE_FALSE, FILL_BLANK = "选择", "判断", "填空"
TYPES = {
    MULTIPLE_CHOICE: "multiple_choice",
    TRUE_FALSE: "true_false",
    FILL_BLANK: "fill_blank",
}
# eval_response.py's category_list order (eval_script.py's Chinese list is the same).
CATEGORIES = {
    "艺术与设计": "art_and_design",
    "商业": "business",
    "科学": "science",
    "健康与医学": "health_and_medicine",
    "人文社会科学": "humanities_and_social_sciences",
    "技术与工程": "technology_and_engineering",
}
CATEGORY_ORDER = tuple(CATEGORIES.values())
CHOICES = ("A", "B", "C", "D")  # evaluate_response always offers these four
TF_ANSWERS = ("对", "错")
SEED = 42

NUM_IMAGES = 5
IMAGE_COLUMNS = tuple(f"image_{k}" for k in range(1, NUM_IMAGES + 1))
FILENAME_COLUMNS = tuple(f"image_{k}_filename" for k in range(1, NUM_IMAGES + 1))
OPTION_COLUMNS = tuple(f"option{k}" for k in range(1, len(CHOICES) + 1))
REQUIRED = (
    "id",
    "type",
    "question",
    *OPTION_COLUMNS,
    *IMAGE_COLUMNS,
    "answer",
    "subcategory",
    "category",
    *FILENAME_COLUMNS,
)
METADATA = (
    "source_type",
    "source",
    "analysis",
    "distribution",
    "difficulty_level",
    "subfield",
    "img_type",
)
JSONL_REQUIRED = ("id", "type", "question", "answer", "subcategory", "category", "img_list")

# VLMEvalKit vlmeval/dataset/cmmmu.py CMMMU.build_prompt @e8e78f05 (protocol strings,
# reproduced exactly: they are the published prompt).
MC_INSTRUCTION = (
    "请回答上述多项选择题，并选出正确选项。这些题目可能包括单选和多选题型。"
    "如果所提供的信息不足以确定一个明确的答案，那么请根据可用的数据和你的判断来选择最可能正确的选项。"
)
TF_INSTRUCTION = (
    "请回答上述判断题，并根据题目描述和所给的信息来判断问题中陈述的对错。"
    "如果信息不完整或不足以作出绝对判断，请运用你的逻辑推理和现有信息来做出最可能的判断。"
)
FILL_INSTRUCTION = (
    "请回答上述填空题，并根据题目的要求和所提供的信息来给出最恰当的答案。"
    "如果信息不足以确切回答，那么请依据现有的数据和你的推理能力来填写最合理的答案。"
)

_TAG = re.compile(r'<img="([^"]*)">')

# ---------------------------------------------------------------- loading


def _category_rank(path: pathlib.Path) -> tuple[int, str]:
  name = path.parent.name
  rank = CATEGORY_ORDER.index(name) if name in CATEGORY_ORDER else len(CATEGORY_ORDER)
  return rank, str(path)


def release_files(path: pathlib.Path, split: str) -> list[pathlib.Path]:
  """The files of `split` under `path` (module docstring), per-category folders in the
  official category order."""
  if path.is_file():
    return [path]
  if not path.is_dir():
    raise FileNotFoundError(f"CMMMU: no release file or folder at {path}")
  sub = path / f"cmmmu-data-{split}"
  if sub.is_dir():
    return release_files(sub, split)
  layouts = (
      lambda: sorted(path.glob(f"*/{split}-*.parquet"), key=_category_rank),
      lambda: sorted(path.glob(f"{split}-*.parquet")),
      lambda: sorted(path.glob(f"data/{split}-*.parquet")),
      lambda: sorted(
          (p for p in path.glob("*/*.jsonl") if p.stem == p.parent.name), key=_category_rank
      ),
  )
  for layout in layouts:
    files = layout()
    if files:
      return files
  raise BenchmarkFormatError(
      f"{path}: no <category>/{split}-*.parquet, {split}-*.parquet, data/{split}-*.parquet, "
      f"<category>/<category>.jsonl nor cmmmu-data-{split}/"
  )


def _text(row: dict, key: str, where: str) -> str:
  value = row.get(key)
  if not isinstance(value, str):
    raise BenchmarkFormatError(f"{where}: {key!r} is not text ({value!r})")
  return value


def _check_answer(qtype: str, answer: Any, where: str) -> None:
  """A released answer the official verdict can compare (val / dev; test hides them)."""
  if not isinstance(answer, str):
    raise BenchmarkFormatError(f"{where}: answer {answer!r} is not text")
  if qtype == MULTIPLE_CHOICE and not (answer and set(answer) <= set(CHOICES)):
    raise BenchmarkFormatError(f"{where}: multiple-choice answer {answer!r} is not letters A-D")
  if qtype == TRUE_FALSE and answer not in TF_ANSWERS:
    raise BenchmarkFormatError(f"{where}: true/false answer {answer!r} is not '对' or '错'")


def prompt_body(question: str, options: Sequence[str], qtype: str) -> str:
  """VLMEvalKit's prompt text (module docstring), the release's image tags in place."""
  if qtype == MULTIPLE_CHOICE:
    lines = "".join(f"{letter}. {text}\n" for letter, text in zip(CHOICES, options))
    return f"问题: {question}\nOptions:\n{lines}{MC_INSTRUCTION}"
  return f"{question}\n{TF_INSTRUCTION if qtype == TRUE_FALSE else FILL_INSTRUCTION}"


def _item(
    row: dict,
    where: str,
    split: str,
    images: Sequence[tuple[str, bytes | pathlib.Path]],
) -> BenchItem:
  """One question; images: (file name, source) of each image the row holds, in column
  (or img_list) order."""
  qtype = row.get("type")
  if qtype not in TYPES:
    raise BenchmarkFormatError(f"{where}: type {qtype!r} is not one of {', '.join(TYPES)}")
  category = row.get("category")
  if category not in CATEGORIES:
    raise BenchmarkFormatError(
        f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}"
    )
  question = _text(row, "question", where)
  options: tuple[str, ...] = ()
  if qtype == MULTIPLE_CHOICE:
    # evaluate_response reads data.get('optionk', ''): an absent option is ''
    options = tuple(row.get(c) or "" for c in OPTION_COLUMNS)
    if not all(isinstance(o, str) for o in options):
      raise BenchmarkFormatError(f"{where}: an option is not text ({options!r})")
  answer = row.get("answer")
  if split != "test":
    _check_answer(qtype, answer, where)
  body = prompt_body(question, options, qtype)
  names = [name for name, _ in images]
  referenced = list(dict.fromkeys(_TAG.findall(body)))
  unknown = [n for n in referenced if n not in names]
  if unknown:
    raise BenchmarkFormatError(
        f'{where}: <img="{unknown[0]}"> names no image of the row (it has {names})'
    )
  leading = [n for n in names if n not in referenced]
  order = leading + referenced
  sources = dict(images)
  extra = {
      "type": qtype,
      "split": split,
      "subcategory": row.get("subcategory"),
      "leading_images": len(leading),
      "image_files": tuple(order),
  }
  extra.update({k: row[k] for k in METADATA if k in row})
  return BenchItem(
      id=str(row["id"]),
      question=question,
      options=options,
      answer=answer if answer is not None else "",
      load_images=image_loader(*[sources[n] for n in order]),
      num_images=len(order),
      category=CATEGORIES[category],
      extra=extra,
  )


def _parquet_images(row: dict, file: pathlib.Path, where: str) -> list[tuple[str, Any]]:
  out = []
  for column, name_column in zip(IMAGE_COLUMNS, FILENAME_COLUMNS):
    cell = row[column]
    if cell is None:
      continue
    if cell.get("bytes"):
      source: bytes | pathlib.Path = cell["bytes"]
    elif cell.get("path"):
      source = existing_image(file.parent / cell["path"], where)
    else:
      raise BenchmarkFormatError(f"{where}: {column} has neither bytes nor path")
    out.append((row[name_column] or column, source))
  return out


def _read_parquet(file: pathlib.Path, split: str) -> list[BenchItem]:
  names = set(pq.read_schema(file).names)
  for column in REQUIRED:
    if column not in names:
      raise BenchmarkFormatError(
          f"{file}: no column {column!r} (CMMMU parquet columns: {', '.join(REQUIRED)}, ...)"
      )
  columns = list(REQUIRED) + [c for c in METADATA if c in names]
  rows = pq.read_table(file, columns=columns).to_pylist()
  items = []
  for index, row in enumerate(rows):
    where = f"{file} row {index} (id {row['id']!r})"
    items.append(_item(row, where, split, _parquet_images(row, file, where)))
  return items


def _read_jsonl(file: pathlib.Path, split: str) -> list[BenchItem]:
  items = []
  for row, where in read_jsonl(file):
    missing = [k for k in JSONL_REQUIRED if k not in row]
    if missing:
      raise BenchmarkFormatError(f"{where}: missing {missing[0]!r}")
    img_list = row["img_list"]
    if not isinstance(img_list, list) or not all(isinstance(x, str) for x in img_list):
      raise BenchmarkFormatError(f"{where}: img_list is not a list of file names")
    images = [(x, existing_image(file.parent / x, where)) for x in img_list]
    items.append(_item(row, where, split, images))
  return items


def load(path: str | pathlib.Path, split: str = "val") -> list[BenchItem]:
  """Every item of `split` ("dev" | "val" | "test") under `path`."""
  if split not in SPLITS:
    raise ValueError(f"CMMMU split {split!r} is not one of {SPLITS}")
  items = []
  for f in release_files(pathlib.Path(path), split):
    items += _read_jsonl(f, split) if f.suffix == ".jsonl" else _read_parquet(f, split)
  check_unique_ids(items, path)
  return items


def render_tags(body: str) -> str:
  """Each tag's first appearance becomes the placeholder (in the image order); a
  repeated tag becomes the words "图片 n", n counting the tagged images from 1."""
  seen: dict[str, int] = {}

  def one(m: re.Match) -> str:
    if m.group(1) in seen:
      return f"图片 {seen[m.group(1)]}"
    seen[m.group(1)] = len(seen) + 1
    return IMAGE_TOKEN

  return _TAG.sub(one, body)


def prompt(item: BenchItem) -> str:
  body = prompt_body(item.question, item.options, item.extra["type"])
  return IMAGE_TOKEN * item.extra["leading_images"] + render_tags(body)


# ---------------------------------------------------------------- multiple choice

# Stripped one after the other, each from both ends (so "B,." keeps its comma).
_EDGE_CHARS = (",", ".", "!", "?", ";", ":", "'")


def parse_choice(response: str, options: Sequence[str]) -> str | None:
  """get_multi_choice_prediction over A-D: the letters most often given, joined in
  A-D order ("AB" for a tie), or "" for an empty response (no prediction: wrong), or
  None where the official code picks a random letter.

  The response loses the edge characters above and is padded with a space each side.
  Counted, first kind with any hit wins: "(A)".."(D)"; else every bare "A".."D"
  anywhere (the "A" of "Answer" counts); else, when the response has a word, every
  occurrence of each option text (an empty option text occurs len + 1 times). The
  official fourth stage (option text contained at all) can add nothing the third
  missed.
  """
  if not response:
    return ""
  text = response
  for char in _EDGE_CHARS:
    text = text.strip(char)
  text = f" {text} "
  stages: list[Callable[[int], str]] = [
      lambda i: f"({CHOICES[i]})",
      lambda i: CHOICES[i],
  ]
  if text.split():
    stages.append(lambda i: options[i] if i < len(options) else "")
  for needle in stages:
    counts = [text.count(needle(i)) for i in range(len(CHOICES))]
    best = max(counts)
    if best:
      return "".join(c for c, n in zip(CHOICES, counts) if n == best)
  return None


# ---------------------------------------------------------------- key phrases

# get_fill_blank_prediction's and get_TF_prediction's indicator words; fill-in also
# takes "=" in the last sentence.
FILL_INDICATORS = (
    "是",
    "为",
    "所以",
    "等于",
    "方案",
    "选择",
    "正确答案",
    "因此",
    "最后",
    "答案",
    "结果",
)
TF_INDICATORS = ("是", "为", "所以", "判断", "陈述", "说法", "表达", "答案", "结果")
_TRIVIAL = (":", ",", ".", "!", "?", ";", "'")
_SENTENCE = re.compile(r"。|\n")


def key_phrases(response: str, indicators: Sequence[str], last: Sequence[str] = ()) -> list[str]:
  """The tails of the sentences that hold an indicator word.

  The response is stripped of "。" then of whitespace and split at "。" and newlines;
  each sentence holding an indicator contributes what follows the indicator's last
  occurrence, the shortest such tail over the indicators (`last`: more indicators for
  the last sentence). As in the official fold, an empty tail gives way to the next
  indicator's tail however long, and a sentence whose result is empty or one
  punctuation mark contributes nothing. No tail at all: the stripped response.
  """
  text = response.strip("。").strip()
  sentences = _SENTENCE.split(text)
  phrases = []
  for i, sentence in enumerate(sentences):
    markers = (*indicators, *last) if i == len(sentences) - 1 else tuple(indicators)
    best = mmmu.key_tail(sentence, markers)
    if best and best.strip() not in _TRIVIAL:
      phrases.append(best)
  return phrases or [text]


# ---------------------------------------------------------------- true / false

POSITIVE = ("正确", "对", "准确", "肯定", "对的")
NEGATIVE = ("不对", "错误", "不正确", "不准确", "不合适", "否定", "错的", "错")
AMBIGUOUS = ("对错", "是否正确", "否正确", "或者", "是否", "正确性", "对不")


def parse_true_false(response: str) -> str | None:
  """The official vote: over the distinct key phrases (TF_INDICATORS) holding no
  AMBIGUOUS word, a phrase holding a POSITIVE word votes "对", else one holding a
  NEGATIVE word votes "错" (so "不对" and "不正确" vote "对": they hold "对", "正确").
  More votes win; a tie (no votes included) is None: the official code picks
  random.choice(["对", "错"])."""
  phrases = [
      p
      for p in set(key_phrases(response, TF_INDICATORS))
      if not any(word in p for word in AMBIGUOUS)
  ]
  yes = sum(any(word in p for word in POSITIVE) for p in phrases)
  no = sum(
      not any(word in p for word in POSITIVE) and any(word in p for word in NEGATIVE)
      for p in phrases
  )
  if yes == no:
    return None
  return "对" if yes > no else "错"


# ---------------------------------------------------------------- fill in the blank

# extract_numbers' three forms, all collected: thousands grouped with the full-width
# comma "，"; scientific notation; plain integers / decimals not followed by an exponent
# or by "，" and a digit.
_NUM_GROUPED = re.compile(r"-?\d{1,3}(?:，\d{3})+")
_NUM_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_PLAIN = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+)(?![eE][+-]?\d+)(?!，\d)")


def extract_numbers(text: str) -> list[str]:
  return _NUM_GROUPED.findall(text) + _NUM_SCIENTIFIC.findall(text) + _NUM_PLAIN.findall(text)


def _ascii_letters(text: str) -> int:
  return sum(("a" <= c <= "z") or ("A" <= c <= "Z") for c in text)


def normalize(text: str, answer: str) -> list[str | float]:
  """normalize_str: a number becomes a float rounded to 2 decimals; other text is kept
  (stripped) unless it is more than 20 characters longer than the answer or has more
  than 2 ASCII letters more than the answer, then dropped."""
  text = text.strip()
  if mmmu.is_number(text):  # float() takes it once ASCII commas are dropped
    return [round(float(text.replace(",", "")), 2)]
  if len(text) > len(answer) + 20 or _ascii_letters(text) > _ascii_letters(answer) + 2:
    return []
  return [text]


def _candidate_key(c: str | float) -> tuple[bool, str]:
  return isinstance(c, str), repr(c)


def parse_fill(response: str, answer: str) -> tuple[str | float, ...]:
  """get_fill_blank_prediction: the key phrases (FILL_INDICATORS, "=" in the last
  sentence) and every number in them, normalised against the item's answer; distinct,
  in a fixed order (the official set has none)."""
  phrases = key_phrases(response, FILL_INDICATORS, ("=",))
  raw = phrases + [n for p in phrases for n in extract_numbers(p)]
  candidates = {c for r in raw for c in normalize(r, answer)}
  return tuple(sorted(candidates, key=_candidate_key))


def fill_correct(answer: str, candidates: Sequence[str | float]) -> bool:
  """evaluate_response's fill-in verdict: a text candidate is right when it contains the
  normalised answer (text); a number candidate when it equals it (number)."""
  return mmmu.candidate_matches(normalize(answer, answer), candidates)


# ---------------------------------------------------------------- interface


def parse(item: BenchItem, output: str) -> Any:
  """Letters ("" for an empty response) for 选择, "对" / "错" for 判断, a tuple of
  normalised candidates for 填空; None where the official rule draws at random."""
  qtype = item.extra["type"]
  if qtype == MULTIPLE_CHOICE:
    return parse_choice(output, item.options)
  if qtype == TRUE_FALSE:
    return parse_true_false(output)
  return parse_fill(output, item.answer)


def fallback(item: BenchItem, output: str) -> bool:
  """Whether the official rule decides this answer by a random pick (`score` draws it)."""
  return parse(item, output) is None


def is_correct(item: BenchItem, parsed: Any) -> bool:
  """One item's verdict before any random pick (None: False); parsed may have come back
  from JSON (a list, not a tuple)."""
  if parsed is None:
    return False
  if item.extra["type"] == FILL_BLANK:
    return fill_correct(item.answer, parsed)
  return parsed == item.answer


def _official_order(items: Sequence[BenchItem]) -> list[int]:
  """Indices of items in the order the official run scores them: categories in
  CATEGORY_ORDER, each in the order given (the release's row order)."""
  return sorted(range(len(items)), key=lambda i: (CATEGORY_ORDER.index(items[i].category), i))


def verdicts(items: Sequence[BenchItem], parsed: Sequence[Any]) -> tuple[list[bool], int]:
  """Each item's official verdict, the random picks drawn (module docstring), and how
  many of those picks were right."""
  check_answers(items, parsed)
  rng = random.Random(SEED)
  flags = [False] * len(items)
  lucky = 0
  for i in _official_order(items):
    item, answer = items[i], parsed[i]
    qtype = item.extra["type"]
    if answer is None and qtype != FILL_BLANK:
      pick = rng.choice(CHOICES if qtype == MULTIPLE_CHOICE else TF_ANSWERS)
      flags[i] = pick == item.answer
      lucky += flags[i]
    else:
      flags[i] = is_correct(item, answer)
  return flags, lucky


def score(items: Sequence[BenchItem], parsed: Sequence[Any]) -> dict[str, float | int]:
  """accuracy, category/<category>, accuracy_<type>, num_items, unparsed,
  fallbacks_right (module docstring)."""
  flags, lucky = verdicts(items, parsed)
  out: dict[str, float | int] = {"accuracy": accuracy(flags)}
  for category in CATEGORY_ORDER:
    group = [f for it, f in zip(items, flags) if it.category == category]
    if group:
      out[f"category/{category}"] = accuracy(group)
  for qtype, key in TYPES.items():
    out[f"accuracy_{key}"] = accuracy(
        [f for it, f in zip(items, flags) if it.extra["type"] == qtype]
    )
  out["num_items"] = len(items)
  out["unparsed"] = sum(p is None for p in parsed)
  out["fallbacks_right"] = lucky
  return out

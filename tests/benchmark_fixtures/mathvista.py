"""A tiny MathVista testmini in both public release layouts, images drawn with PIL.

Hugging Face (AI4Math/MathVista; features as its dataset card lists them, README.md
dataset_info at d32e834):

  <root>/MathVista/data/testmini-00000-of-00001.parquet
    pid, question, image ("images/<pid>.jpg"), decoded_image (struct {bytes, path}),
    choices (list<string>, null for free_form), unit, precision (float64), answer,
    question_type, answer_type, metadata (struct: category, context, grade, img_height,
    img_width, language, skills (list<string>), source, split, task), query

GitHub (lupantech/MathVista data/ at 53d5258, README "Evaluation Scripts of Our Models"):

  <root>/MathVista-github/data/testmini.json   {pid: problem} (the fields above but query
                                               and decoded_image; precision an int)
  <root>/MathVista-github/data/query.json      {pid: query}
  <root>/MathVista-github/data/images/<pid>.jpg

The query is written as the release writes it (data/query.json, the HF `query` column):
"Hint: <instruction>\\nQuestion: <question>[ (Unit: <unit>)][\\nChoices:\\n(A) ...]",
stripped (`query` rebuilds all 1000 testmini queries of data/query.json at 53d5258).

Items (pid: type, answer):
  1  multi_choice / text, 4 shape names, answer "pentagon" (a green pentagon)
  2  multi_choice / text, choices A..E (a puzzle's letters), answer "E"
  3  free_form / integer, answer "3" (three red circles)
  4  free_form / integer with unit "g", answer "1000"
  5  free_form / float, precision 1, answer "1.2"
  6  free_form / float, precision 2, answer "0.13", language chinese
  7  free_form / list, answer "[2007, 2008]"
  8  multi_choice / text, choices with trailing spaces as in the release (pid 340),
     answer "Science"
"""

from __future__ import annotations

import copy
import io
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

SPLIT = "testmini"
PARQUET_NAME = f"{SPLIT}-00000-of-00001.parquet"

# The task instructions (README "Evaluation Pipelines" table, the release's query field).
HINTS = {
    "multi_choice": (
        "Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
        "at the end."
    ),
    "integer": (
        "Please answer the question requiring an integer answer and provide the final value, "
        "e.g., 1, 2, 3, at the end."
    ),
    "float1": (
        "Please answer the question requiring a floating-point number with one decimal place "
        "and provide the final value, e.g., 1.2, 1.3, 1.4, at the end."
    ),
    "float2": (
        "Please answer the question requiring a floating-point number with two decimal places "
        "and provide the final value, e.g., 1.23, 1.34, 1.45, at the end."
    ),
    "list": (
        "Please answer the question requiring a Python list as an answer and provide the final "
        "list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end."
    ),
}

GREEN, RED, BLUE = (30, 160, 60), (220, 30, 30), (30, 60, 220)
SIZE = (96, 96)


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
  im = Image.new("RGB", SIZE, "white")
  return im, ImageDraw.Draw(im)


def _pentagon() -> Image.Image:
  im, d = _canvas()
  d.polygon([(48, 10), (86, 38), (72, 84), (24, 84), (10, 38)], fill=GREEN)
  return im


def _letters() -> Image.Image:
  im, d = _canvas()
  for i, ch in enumerate("ABCDE"):
    d.text((6 + 18 * i, 40), ch, fill="black")
  return im


def _circles() -> Image.Image:
  im, d = _canvas()
  for x in (8, 36, 64):
    d.ellipse((x, 36, x + 24, 60), fill=RED)
  return im


def _text(words: str) -> Image.Image:
  im, d = _canvas()
  d.text((8, 40), words, fill="black")
  return im


def _bars() -> Image.Image:
  im, d = _canvas()
  d.rectangle((20, 30, 40, 90), fill=BLUE)
  d.rectangle((56, 60, 76, 90), fill=BLUE)
  return im


def _line() -> Image.Image:
  im, d = _canvas()
  d.line([(8, 80), (40, 60), (56, 12), (88, 70)], fill=RED, width=3)
  return im


def _meta(
    task, skills, context, category="math-targeted-vqa", language="english", grade="daily life"
):
  return {
      "category": category,
      "context": context,
      "grade": grade,
      "img_height": SIZE[1],
      "img_width": SIZE[0],
      "language": language,
      "skills": list(skills),
      "source": "FixtureSet",
      "split": SPLIT,
      "task": task,
  }


# pid -> (problem without pid/image/query, drawing)
PROBLEMS = {
    "1": (
        dict(
            question="Which shape is drawn in the image?",
            choices=["triangle", "square", "pentagon", "circle"],
            unit=None,
            precision=None,
            answer="pentagon",
            question_type="multi_choice",
            answer_type="text",
            metadata=_meta(
                "geometry problem solving",
                ["geometry reasoning"],
                "geometry diagram",
                grade="elementary school",
            ),
        ),
        _pentagon,
    ),
    "2": (
        dict(
            question="Which letter comes last?",
            choices=["A", "B", "C", "D", "E"],
            unit=None,
            precision=None,
            answer="E",
            question_type="multi_choice",
            answer_type="text",
            metadata=_meta("figure question answering", ["logical reasoning"], "puzzle test"),
        ),
        _letters,
    ),
    "3": (
        dict(
            question="How many red circles are there?",
            choices=None,
            unit=None,
            precision=None,
            answer="3",
            question_type="free_form",
            answer_type="integer",
            metadata=_meta(
                "visual question answering",
                ["arithmetic reasoning"],
                "synthetic scene",
                category="general-vqa",
            ),
        ),
        _circles,
    ),
    "4": (
        dict(
            question="What is the weight printed on the label?",
            choices=None,
            unit="g",
            precision=None,
            answer="1000",
            question_type="free_form",
            answer_type="integer",
            metadata=_meta(
                "visual question answering",
                ["numeric commonsense", "arithmetic reasoning"],
                "natural image",
                category="general-vqa",
            ),
        ),
        lambda: _text("1000 g"),
    ),
    "5": (
        dict(
            question="What is the value of the taller bar?",
            choices=None,
            unit=None,
            precision=1,
            answer="1.2",
            question_type="free_form",
            answer_type="float",
            metadata=_meta("figure question answering", ["statistical reasoning"], "bar chart"),
        ),
        _bars,
    ),
    "6": (
        dict(
            question="图中的价格是多少?",
            choices=None,
            unit="$",
            precision=2,
            answer="0.13",
            question_type="free_form",
            answer_type="float",
            metadata=_meta(
                "math word problem",
                ["arithmetic reasoning", "statistical reasoning"],
                "table",
                language="chinese",
            ),
        ),
        lambda: _text("$0.13"),
    ),
    "7": (
        dict(
            question="Between which two years does the line graph reach its peak?",
            choices=None,
            unit=None,
            precision=None,
            answer="[2007, 2008]",
            question_type="free_form",
            answer_type="list",
            metadata=_meta("figure question answering", ["statistical reasoning"], "line plot"),
        ),
        _line,
    ),
    "8": (
        dict(
            question="Which domain is written in the image?",
            choices=["Legal ", "Code ", "Science"],
            unit=None,
            precision=None,
            answer="Science",
            question_type="multi_choice",
            answer_type="text",
            metadata=_meta(
                "textbook question answering", ["scientific reasoning"], "document image"
            ),
        ),
        lambda: _text("Science"),
    ),
}


def query(problem: dict) -> str:
  """The problem's query as the release writes it."""
  if problem["question_type"] == "multi_choice":
    hint = HINTS["multi_choice"]
  elif problem["answer_type"] == "float":
    hint = HINTS[f"float{problem['precision']}"]
  else:
    hint = HINTS[problem["answer_type"]]
  text = f"Hint: {hint}\nQuestion: {problem['question']}"
  if problem["unit"]:
    text += f" (Unit: {problem['unit']})"
  if problem["choices"]:
    text += "\nChoices:\n" + "\n".join(
        f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(problem["choices"])
    )
  return text.strip()


def problems() -> dict[str, dict]:
  """{pid: problem} as testmini.json holds them (field order of the release); fresh
  copies, free to change."""
  out = {}
  for pid, (p, _) in PROBLEMS.items():
    out[pid] = {
        "question": p["question"],
        "image": f"images/{pid}.jpg",
        "choices": copy.copy(p["choices"]),
        "unit": p["unit"],
        "precision": p["precision"],
        "answer": p["answer"],
        "question_type": p["question_type"],
        "answer_type": p["answer_type"],
        "pid": pid,
        "metadata": copy.deepcopy(p["metadata"]),
    }
  return out


def queries() -> dict[str, str]:
  return {pid: query(p) for pid, (p, _) in PROBLEMS.items()}


def image(pid: str) -> Image.Image:
  return PROBLEMS[pid][1]()


def _png(im: Image.Image) -> bytes:
  buf = io.BytesIO()
  im.save(buf, format="PNG")
  return buf.getvalue()


METADATA_TYPE = pa.struct(
    [
        ("category", pa.string()),
        ("context", pa.string()),
        ("grade", pa.string()),
        ("img_height", pa.int64()),
        ("img_width", pa.int64()),
        ("language", pa.string()),
        ("skills", pa.list_(pa.string())),
        ("source", pa.string()),
        ("split", pa.string()),
        ("task", pa.string()),
    ]
)
SCHEMA = pa.schema(
    [
        ("pid", pa.string()),
        ("question", pa.string()),
        ("image", pa.string()),
        ("decoded_image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("choices", pa.list_(pa.string())),
        ("unit", pa.string()),
        ("precision", pa.float64()),
        ("answer", pa.string()),
        ("question_type", pa.string()),
        ("answer_type", pa.string()),
        ("metadata", METADATA_TYPE),
        ("query", pa.string()),
    ]
)
# What `datasets` writes into the schema metadata (abridged: the feature kinds).
HF_FEATURES = {c: {"dtype": "string", "_type": "Value"} for c in SCHEMA.names}
HF_FEATURES["decoded_image"] = {"_type": "Image"}


def rows() -> list[dict]:
  qs = queries()
  out = []
  for pid, p in problems().items():
    r = dict(p)
    r["precision"] = None if p["precision"] is None else float(p["precision"])
    r["decoded_image"] = {"bytes": _png(image(pid)), "path": None}
    r["query"] = qs[pid]
    out.append(r)
  return out


def write_parquet(path: pathlib.Path, table_rows: list[dict], schema: pa.Schema = SCHEMA) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  meta = {
      b"huggingface": json.dumps(
          {"info": {"features": {c: HF_FEATURES.get(c, {}) for c in schema.names}}}
      ).encode()
  }
  pq.write_table(pa.Table.from_pylist(table_rows, schema=schema.with_metadata(meta)), path)


def build(root: pathlib.Path) -> pathlib.Path:
  """The Hugging Face layout under root/MathVista; returns that folder."""
  base = pathlib.Path(root) / "MathVista"
  write_parquet(base / "data" / PARQUET_NAME, rows())
  return base


def build_github(root: pathlib.Path) -> pathlib.Path:
  """The GitHub layout under root/MathVista-github; returns its data/ folder."""
  data = pathlib.Path(root) / "MathVista-github" / "data"
  (data / "images").mkdir(parents=True, exist_ok=True)
  (data / f"{SPLIT}.json").write_text(json.dumps(problems(), indent=4, ensure_ascii=False))
  (data / "query.json").write_text(json.dumps(queries(), indent=4, ensure_ascii=False))
  for pid in PROBLEMS:
    image(pid).save(data / "images" / f"{pid}.jpg", quality=95)
  return data

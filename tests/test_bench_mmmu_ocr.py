"""MMMU and OCRBench: loaders on fixtures in the public layouts, prompts, the official
extraction and scoring rules (tables of raw outputs), and format errors."""

from __future__ import annotations

import json
import shutil

import pytest
from benchmark_fixtures import mmmu as mmmu_fixture
from benchmark_fixtures import ocrbench as ocr_fixture

from dsvl_jax.eval.benchmarks import mmmu, ocrbench
from dsvl_jax.eval.benchmarks.base import BenchmarkFormatError
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

PH = IMAGE_TOKEN


@pytest.fixture(scope="module")
def mmmu_root(tmp_path_factory):
  return mmmu_fixture.build(tmp_path_factory.mktemp("mmmu"))


@pytest.fixture(scope="module")
def mmmu_items(mmmu_root):
  return {it.id: it for it in mmmu.load(mmmu_root)}


@pytest.fixture(scope="module")
def ocr_json(tmp_path_factory):
  return ocr_fixture.build(tmp_path_factory.mktemp("ocr"))


def center(image):
  return image.getpixel((48, 48))


# ------------------------------------------------------------------ MMMU loading


def test_mmmu_loads_validation(mmmu_items):
  assert sorted(mmmu_items) == [
      "validation_Art_1",
      "validation_Art_2",
      "validation_Math_1",
      "validation_Math_2",
      "validation_Physics_1",
  ]
  it = mmmu_items["validation_Math_1"]
  assert (it.category, it.answer, it.options) == (
      "Math",
      "C",
      ("triangle", "square", "pentagon", "circle"),
  )
  assert it.extra["question_type"] == "multiple-choice"
  assert it.extra["subfield"] == "Geometry"
  assert mmmu_items["validation_Math_2"].answer == ("12",)
  assert mmmu_items["validation_Math_2"].options == ()
  # a list-literal answer gives several accepted answers
  assert mmmu_items["validation_Physics_1"].answer == ("north", "n")
  assert mmmu_items["validation_Physics_1"].category == "Physics"


def test_mmmu_split_and_single_file(mmmu_root):
  dev = mmmu.load(mmmu_root, split="dev")
  assert [it.id for it in dev] == ["dev_Math_1"]
  one = mmmu.load(mmmu_root / "Art" / "validation-00000-of-00001.parquet")
  assert [it.id for it in one] == ["validation_Art_1", "validation_Art_2"]
  assert {it.category for it in one} == {"Art"}


def test_mmmu_two_images_interleaved_in_order_of_tags(mmmu_items):
  it = mmmu_items["validation_Art_1"]  # "<image 2> shows a square ... circle in <image 1>?"
  assert mmmu.prompt(it) == (
      f"{PH} shows a square. What colour is the circle in {PH}?\n"
      "(A) green\n(B) red\n(C) blue\n(D) black\n"
      "Answer with the option's letter from the given choices directly."
  )
  images = it.images()
  assert it.num_images == len(images) == 2
  # first placeholder is <image 2> (the blue square), second <image 1> (the red circle)
  assert center(images[0]) == mmmu_fixture.BLUE
  assert center(images[1]) == mmmu_fixture.RED
  assert it.extra["image_columns"] == ("image_2", "image_1")


def test_mmmu_images_in_options(mmmu_items):
  it = mmmu_items["validation_Art_2"]
  assert mmmu.prompt(it) == (
      f"Which option has the same shape as {PH}?\n(A) {PH}\n(B) {PH}\n(C) neither\n"
      "Answer with the option's letter from the given choices directly."
  )
  assert [center(im) for im in it.images()] == [
      mmmu_fixture.GREEN,
      mmmu_fixture.BLUE,
      mmmu_fixture.RED,
  ]


def test_mmmu_open_prompt_and_unreferenced_image(mmmu_items):
  assert mmmu.prompt(mmmu_items["validation_Math_2"]) == (
      f"What number is printed in {PH}?\nAnswer the question using a single word or phrase."
  )
  it = mmmu_items["validation_Physics_1"]  # image_1 present, no tag: it goes first
  assert mmmu.prompt(it) == (
      f"{PH}Which direction does the arrow sign point to?\n"
      "Answer the question using a single word or phrase."
  )
  assert it.num_images == len(it.images()) == 1


def test_mmmu_every_prompt_has_one_placeholder_per_image(mmmu_items):
  for it in mmmu_items.values():
    assert mmmu.prompt(it).count(PH) == it.num_images == len(it.images())


def _one_row_file(tmp_path, **changes):
  r = mmmu_fixture.row(
      "validation_Math_9",
      "Compare <image 1> with <image 2>.",
      ["same", "different"],
      "B",
      "multiple-choice",
      [mmmu_fixture.circle(), mmmu_fixture.square()],
  )
  r.update(changes)
  path = tmp_path / "Math" / "validation-00000-of-00001.parquet"
  mmmu_fixture.write_parquet(path, [r])
  return path


def test_mmmu_repeated_tag_gets_one_image(tmp_path):
  path = _one_row_file(tmp_path, question="Is <image 1> like <image 2>? Look at <image 1> again.")
  (it,) = mmmu.load(path)
  assert mmmu.prompt(it).startswith(f"Is {PH} like {PH}? Look at image 1 again.\n")
  assert it.num_images == 2
  assert [center(im) for im in it.images()] == [mmmu_fixture.RED, mmmu_fixture.BLUE]


def test_mmmu_tag_without_image_raises(tmp_path):
  path = _one_row_file(tmp_path, question="What is in <image 3>?")
  with pytest.raises(BenchmarkFormatError, match="image_3"):
    mmmu.load(path)


@pytest.mark.parametrize("column", ["question_type", "image_4", "options"])
def test_mmmu_missing_column_raises_naming_it(tmp_path, column):
  schema = mmmu_fixture.SCHEMA.remove(mmmu_fixture.SCHEMA.get_field_index(column))
  rows = mmmu_fixture.validation_rows()["Math"]
  for r in rows:
    del r[column]
  path = tmp_path / "Math" / "validation-00000-of-00001.parquet"
  mmmu_fixture.write_parquet(path, rows, schema)
  with pytest.raises(BenchmarkFormatError, match=f"no column '{column}'"):
    mmmu.load(tmp_path)


def test_mmmu_bad_values_raise(tmp_path):
  with pytest.raises(BenchmarkFormatError, match="options"):
    mmmu.load(_one_row_file(tmp_path, options="not a list"))
  with pytest.raises(BenchmarkFormatError, match="answer 'E'"):
    mmmu.load(_one_row_file(tmp_path, answer="E"))
  with pytest.raises(BenchmarkFormatError, match="question_type"):
    mmmu.load(_one_row_file(tmp_path, question_type="short-answer"))
  with pytest.raises(BenchmarkFormatError, match="no <Subject>/dev"):
    mmmu.load(tmp_path, split="dev")


# ------------------------------------------------------------------ MMMU extraction

SHAPES = ["triangle", "square", "pentagon", "circle"]


@pytest.mark.parametrize(
    "output, letter",
    [
        ("(B)", "B"),
        ("B", "B"),
        ("B.", "B"),
        ("The answer is C.", "C"),
        ("Answer:\nD", "D"),
        ("(B) square", "B"),
        ("B. square", "B"),  # "B." opening a phrase (beyond the official forms)
        ("A or maybe (D)", "D"),  # a bracketed letter beats a bare one
        ("A, no wait, it is B", "B"),  # several bare letters: the last
        # option text, in a response of more than 5 words
        ("The shape drawn here is clearly a pentagon", "C"),
        ("Not the square: the drawn shape is a circle", "D"),  # several: the last
        ("pentagon", "C"),  # exactly an option's text (the official rule would guess)
        ("Pentagon.", "C"),
        ("maybe a square", None),  # option text in 5 words or fewer: not read
        ("I think it is a hexagon.", None),  # nothing: unparsed, never a random letter
        ("E", None),  # not a letter of these options
        ("", None),
        ("ABC", None),
    ],
)
def test_mmmu_choice_extraction(output, letter):
  assert mmmu.parse_choice(output, SHAPES) == letter


@pytest.mark.parametrize(
    "gold, output, right",
    [
        ("3.5", "The answer is 3.5", True),
        ("3.5", "The answer is 3.50.", True),  # numbers compare as floats
        ("3500", "3,500", True),
        ("3500", "The total is 3,500 dollars", True),
        ("12", "about 12 apples", True),
        ("12", "about 13 apples", False),
        ("12", "120", False),  # a number must equal, not contain
        ("12", "112", False),
        ("12", "x = 12", True),  # "=" marks the answer on the last line
        ("0.33", "0.333", True),  # rounded to 2 decimals
        ("0.33", "1/3", False),
        ("red", "The colour is red.", True),
        ("red", "Reddish", True),  # text answers are contained, not equal
        ("blue", "red", False),
        ("b", "b", True),
        ("b", "abc", False),  # a one-letter answer must stand next to a space
        ("north", "It points up.\nSo the answer is north", True),
    ],
)
def test_mmmu_open_extraction(gold, output, right):
  parsed = mmmu.parse_open(output)
  assert parsed is not None
  assert mmmu.open_correct([gold], parsed) is right


def test_mmmu_open_candidates():
  assert mmmu.parse_open("The answer is 3.5") == (3.5,)
  # the official number patterns also catch the "500" of "3,500"
  assert mmmu.parse_open("3,500") == (3500.0, 500.0)
  assert mmmu.parse_open("about 12 apples") == ("about 12 apples", 12.0)
  # lines are the only split; a line keeps its own full stop
  assert mmmu.key_phrases("It is red.\nThus the answer is blue.") == ["red.", "blue"]
  assert mmmu.parse_open("") is None
  assert mmmu.parse_open("  ...  ") is None


def test_mmmu_planted_predictions_give_official_metrics(mmmu_items):
  outputs = {
      "validation_Math_1": "(C) pentagon",  # right
      "validation_Math_2": "There are 12.",  # right (open, numeric)
      "validation_Art_1": "A",  # wrong
      "validation_Art_2": "I cannot tell.",  # unparsed -> wrong
      "validation_Physics_1": "south",  # wrong
  }
  items = list(mmmu_items.values())
  parsed = [mmmu.parse(it, outputs[it.id]) for it in items]
  assert parsed[[it.id for it in items].index("validation_Art_2")] is None
  assert mmmu.score(items, parsed) == pytest.approx(
      {
          "accuracy": 2 / 5,
          "accuracy_multiple_choice": 1 / 3,
          "accuracy_open": 1 / 2,
          "category/Art": 0.0,
          "category/Math": 1.0,
          "category/Physics": 0.0,
          "domain/Art and Design": 0.0,
          "domain/Science": 2 / 3,
          "num_items": 5,
          "unparsed": 1,
      }
  )
  # all right: the list-literal answer accepts "n" ... and "north"
  right = {
      **outputs,
      "validation_Art_1": "B",
      "validation_Art_2": "(A)",
      "validation_Physics_1": "north",
  }
  metrics = mmmu.score(items, [mmmu.parse(it, right[it.id]) for it in items])
  assert (metrics["accuracy"], metrics["unparsed"]) == (1.0, 0)


# ------------------------------------------------------------------ OCRBench


def test_ocrbench_loads_official_layout(ocr_json):
  items = ocrbench.load(ocr_json)  # JSON in OCRBench/, images in ../OCRBench_Images
  assert [it.id for it in items] == ["IIIT5K/7", "docVQA/3", "HME100k/41", "textVQA/9", "FUNSD/2"]
  assert items[1].answer == ("$12.50", "12.50")
  assert items[2].answer == ("x ^ { 2 } + 1 = 5\n",)
  assert items[2].category == ocr_fixture.MATH_TYPE
  assert items[2].extra["dataset_name"] == "HME100k"
  assert ocrbench.prompt(items[0]) == PH + "what is written in the image?"
  for it in items:
    assert it.num_images == len(it.images()) == 1
    assert it.images()[0].size == (160, 48)
  # the release folder, and an explicit image root, find the same items
  assert [it.id for it in ocrbench.load(ocr_json.parent.parent)] == [it.id for it in items]
  explicit = ocrbench.load(ocr_json, image_root=ocr_json.parent.parent / "OCRBench_Images")
  assert len(explicit) == 5


def test_ocrbench_format_errors(tmp_path, ocr_json):
  records = json.loads(ocr_json.read_text())
  del records[3]["answers"]
  bad = tmp_path / "OCRBench.json"
  bad.write_text(json.dumps(records))
  with pytest.raises(BenchmarkFormatError, match="item 3: no key 'answers'"):
    ocrbench.load(bad, image_root=ocr_json.parent.parent / "OCRBench_Images")
  # images not next to the JSON, and no image_root: a clear error
  lone = tmp_path / "lone"
  lone.mkdir()
  shutil.copy(ocr_json, lone / "OCRBench.json")
  with pytest.raises(FileNotFoundError, match="pass image_root"):
    ocrbench.load(lone / "OCRBench.json")


@pytest.mark.parametrize(
    "dataset, answers, output, right",
    [
        ("IIIT5K", ["CENTRE"], "centre", True),  # case-insensitive
        ("IIIT5K", ["CENTRE"], "The word is CENTRE.", True),  # contained
        ("IIIT5K", ["CENTRE"], "CENTER", False),
        ("docVQA", ["$12.50", "12.50"], "The total is 12.50", True),  # any answer
        ("docVQA", ["$12.50", "12.50"], "12.5", False),
        ("textVQA", ["coca cola"], "Coca\nCola", True),  # a newline reads as a space
        ("textVQA", ["coca cola"], "cocacola", False),  # other spaces matter
        # HME100k: spaces and newlines removed from both, case kept
        ("HME100k", ["x ^ { 2 } + 1 = 5\n"], "x^{2}+1=5", True),
        ("HME100k", ["x ^ { 2 } + 1 = 5\n"], "$x ^ {2}\n+ 1 = 5$", True),
        ("HME100k", ["x ^ { 2 } + 1 = 5\n"], "X^{2}+1=5", False),
        ("HME100k", ["x ^ { 2 } + 1 = 5\n"], "x^2+1=5", False),
        ("HME100k", ["A B = 3", "AB=3"], "AB=3 cm", True),
        # the same spacing outside HME100k is not forgiven
        ("IIIT5K", ["x ^ { 2 }"], "x^{2}", False),
    ],
)
def test_ocrbench_containment(dataset, answers, output, right):
  assert ocrbench.match(answers, output, dataset) is right


def test_ocrbench_parse():
  item = None  # the rule does not depend on the item
  assert ocrbench.parse(item, "  CENTRE \n") == "CENTRE"
  assert ocrbench.parse(item, " \n ") is None


def test_ocrbench_planted_predictions_give_official_metrics(ocr_json):
  items = ocrbench.load(ocr_json)
  outputs = ["CENTRE", "The total is $12.50", "x^2+1=5", "   ", "Date: 1/2/98"]
  parsed = [ocrbench.parse(it, o) for it, o in zip(items, outputs)]
  assert ocrbench.score(items, parsed) == pytest.approx(
      {
          "score": 3,
          "accuracy": 3 / 5,
          "category/Doc-oriented VQA": 1.0,
          f"category/{ocr_fixture.MATH_TYPE}": 0.0,
          "category/Key Information Extraction": 1.0,
          "category/Regular Text Recognition": 1.0,
          "category/Scene Text-centric VQA": 0.0,
          "num_items": 5,
          "unparsed": 1,
      }
  )


def test_verdicts_survive_a_json_round_trip(mmmu_items, ocr_json):
  """The harness stores `parsed` in JSON (tuples come back as lists) and reads
  `is_correct` per item; both must agree with `score`."""
  cases = [
      (
          mmmu,
          list(mmmu_items.values()),
          ["B", "(C)", "The answer is 12", "3,500", "The answer is north"],
      ),
      (ocrbench, ocrbench.load(ocr_json), ["centre", "12.50", "x^{2}+1=5", "coca-cola", ""]),
  ]
  for bench, items, outputs in cases:
    parsed = [bench.parse(it, o) for it, o in zip(items, outputs)]
    stored = json.loads(json.dumps(parsed))
    verdicts = [bench.is_correct(it, p) for it, p in zip(items, stored)]
    assert verdicts == [bench.is_correct(it, p) for it, p in zip(items, parsed)]
    assert bench.score(items, stored) == bench.score(items, parsed)
    assert bench.score(items, stored)["accuracy"] == sum(verdicts) / len(items)
    assert 0 < sum(verdicts) < len(items)

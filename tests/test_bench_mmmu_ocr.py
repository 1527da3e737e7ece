"""MMMU and OCRBench: loaders on fixtures in the public layouts, prompts, the official
extraction and scoring rules (tables of raw outputs), and format errors."""

from __future__ import annotations

import json
import random
import shutil

import pytest
from benchmark_fixtures import mmmu as mmmu_fixture
from benchmark_fixtures import ocrbench as ocr_fixture

from dsvl_jax.eval.benchmarks import mmmu, ocrbench
from dsvl_jax.eval.benchmarks.base import BenchItem, BenchmarkFormatError
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


def test_mmmu_setup_is_vlmevalkits_deepseek_vl():
  assert mmmu.MAX_NEW_TOKENS == 512 and ocrbench.MAX_NEW_TOKENS == 512
  assert "VLMEvalKit" in mmmu.SETUP and "eval_utils" in mmmu.SETUP
  assert "VLMEvalKit" in ocrbench.SETUP


# VLMEvalKit (open-compass/VLMEvalKit @e8e78f05f3080fe28154f2130321f17951c3be94):
# vlmeval/dataset/image_mcq.py ImageMCQDataset.build_prompt gives the text, and
# MMMUDataset.split_MMMU puts image k where "<image k>" stands; vlmeval/vlm/deepseek_vl.py
# writes each image as the placeholder in the one user message.
MC_TAIL = "Please select the correct answer from the options above. \n"


def test_mmmu_two_images_interleaved_in_order_of_tags(mmmu_items):
  it = mmmu_items["validation_Art_1"]  # "<image 2> shows a square ... circle in <image 1>?"
  assert mmmu.prompt(it) == (
      f"Question: {PH} shows a square. What colour is the circle in {PH}?\n"
      "Options:\nA. green\nB. red\nC. blue\nD. black\n" + MC_TAIL
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
      f"Question: Which option has the same shape as {PH}?\n"
      f"Options:\nA. {PH}\nB. {PH}\nC. neither\n" + MC_TAIL
  )
  assert [center(im) for im in it.images()] == [
      mmmu_fixture.GREEN,
      mmmu_fixture.BLUE,
      mmmu_fixture.RED,
  ]


def test_mmmu_open_prompt_and_untagged_image(mmmu_items):
  # an open question has no options in VLMEvalKit's MMMU_DEV_VAL: no option block, no
  # instruction
  assert mmmu.prompt(mmmu_items["validation_Math_2"]) == (
      f"Question: What number is printed in {PH}?\n"
  )
  it = mmmu_items["validation_Physics_1"]  # image_1 present, no tag: images go first
  assert mmmu.prompt(it) == f"{PH}Question: Which direction does the arrow sign point to?\n"
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


def test_mmmu_repeated_tag_repeats_its_image(tmp_path):
  path = _one_row_file(tmp_path, question="Is <image 1> like <image 2>? Look at <image 1> again.")
  (it,) = mmmu.load(path)
  assert mmmu.prompt(it).startswith(f"Question: Is {PH} like {PH}? Look at {PH} again.\n")
  assert it.num_images == 3
  assert [center(im) for im in it.images()] == [
      mmmu_fixture.RED,
      mmmu_fixture.BLUE,
      mmmu_fixture.RED,
  ]


def test_mmmu_untagged_image_of_a_tagged_text_is_not_shown(tmp_path):
  path = _one_row_file(tmp_path, question="What is in <image 2>?", image_3=mmmu_fixture.pentagon())
  (it,) = mmmu.load(path)
  assert mmmu.prompt(it).startswith(f"Question: What is in {PH}?\n")
  assert it.extra["image_columns"] == ("image_2",)
  assert [center(im) for im in it.images()] == [mmmu_fixture.BLUE]


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

# Test tables for the MMMU repository's rules: MMMU-Benchmark/MMMU
# @bb0b95a945998d91dfef37e969e07d49d1139438, mmmu/utils/eval_utils.py (last changed
# aa9b70da92c2825b3d544d1a11b36856bd92f6c3): parse_multi_choice_response,
# parse_open_response, eval_open; the order of the random picks from run_llava.py /
# main_parse_and_eval.py and utils/data_utils.py CAT_SHORT2LONG. Every expected value was
# obtained by running those official functions on the same input (None: the official
# function took its random.choice branch).

KG = ["15 kg", "30 kg", "45 kg", "60 kg"]
WORDS = ["fifteen kilograms", "thirty kilograms", "forty five kilograms", "sixty kilograms"]
SHAPES = ["triangle", "square", "pentagon", "circle"]


@pytest.mark.parametrize(
    "output, options, letter",
    [
        # /work/official_rules_backup.md section 4's examples
        ("C. 45 kg", KG, None),  # "C." is not " C ", 3 words: no text match -> random
        ("The answer is (A)", KG, "A"),
        ("45 kg", KG, None),  # exact option text, but <= 5 words -> random
        ("It weighs forty five kilograms in total", WORDS, "C"),  # > 5 words: text match
        ("forty five kilograms", WORDS, None),  # the same text alone: random
        ("The weight of the box is 45 kg in total.", KG, "C"),
        ("I don't know", KG, None),
        ("Answer: C.", KG, "C"),  # the final "." is stripped -> " C "
        ("The answer is A, not B.", KG, "B"),  # "A," is not " A "
        ("A B", KG, "B"),  # several: the last
        ("c", KG, None),  # case-sensitive
        # brackets, and letters between spaces
        ("(B)", KG, "B"),
        ("B", KG, "B"),
        ("B.", KG, "B"),
        ("'B'", KG, "B"),
        ('"B"', KG, None),  # " is not among the stripped characters
        ("B)", KG, None),
        ("(b)", KG, None),
        ("(B) 30 kg", KG, "B"),
        ("A or maybe (D)", KG, "D"),  # a bracketed letter beats a bare one
        ("(D) or maybe (A)", KG, "A"),
        ("answer: (C) 45 kg, not (A)", KG, "A"),
        ("Answer: D", KG, "D"),
        ("Answer:\nD", KG, None),  # a newline is not a space
        ("The answer is C\nbecause it is heavy", KG, None),
        ("I think the answer is clearly C here", KG, "C"),
        # the characters are stripped one after the other: "," then "." ...
        ("B.,", KG, "B"),
        ("B,.", KG, None),
        ("E", KG, None),  # not a letter of these options
        ("", KG, None),
        ("ABC", KG, None),
        # option texts (case-insensitive), in responses of more than 5 words
        ("The box weighs 45 kg, not 15 kg at all", KG, "A"),  # the last occurrence
        ("It is not 15 kg but surely 60 kg.", KG, "D"),
        ("It is 45 KG in my honest view", KG, "C"),
        ("A: 15 kg is wrong, B: 30 kg", KG, "B"),
        ("The shape drawn here is clearly a pentagon", SHAPES, "C"),
        ("Not the square: the drawn shape is a circle", SHAPES, "D"),
        ("a cat is not a triangle", SHAPES, "A"),  # 6 words
        ("pentagon", SHAPES, None),
        ("maybe a square", SHAPES, None),
        # two texts found at the same place: the first option (numpy argmax)
        ("I would say it is a cat food bowl", ["cat food", "cat"], "A"),
        ("I would say it is a cat food bowl", ["cat", "cat food"], "A"),
    ],
)
def test_mmmu_choice_extraction(output, options, letter):
  assert mmmu.parse_choice(output, options) == letter


def _mc(id, options, answer, category=None):
  return BenchItem(
      id=id,
      question="q",
      options=tuple(options),
      answer=answer,
      category=category or id.split("_")[1],
      extra={"question_type": "multiple-choice"},
  )


def _open(id, answers, category=None):
  return BenchItem(
      id=id,
      question="q",
      options=(),
      answer=tuple(answers),
      category=category or id.split("_")[1],
      extra={"question_type": "open"},
  )


def test_mmmu_fallback_flag_and_parse_agree():
  item = _mc("validation_Math_1", KG, "C")
  for output, expected in (("C. 45 kg", True), ("(C)", False), ("45 kg", True)):
    assert mmmu.fallback(item, output) is expected
    assert (mmmu.parse(item, output) is None) is expected
    assert mmmu.is_correct(item, mmmu.parse(item, output)) is (not expected)
  # an open answer never falls back
  assert mmmu.fallback(_open("validation_Math_2", ["12"]), "") is False


@pytest.mark.parametrize(
    "gold, output, candidates, right",
    [
        # section 4's examples
        (["45"], "The answer is 45 kg.", {45.0, "45 kg"}, True),
        (["1234"], "The result is 1,234", {1234.0, 234.0}, True),
        (["3.5"], "The answer is 3.5", {3.5}, True),
        (["3.5"], "The answer is 3.50.", {3.5}, True),  # numbers compare as floats
        (["3500"], "3,500", {3500.0, 500.0}, True),  # the "500" of "3,500" too
        (["3500"], "The total is 3,500 dollars", {"3,500 dollars", 3500.0, 500.0}, True),
        (["12"], "about 12 apples", {"about 12 apples", 12.0}, True),
        (["12"], "about 13 apples", {"about 13 apples", 13.0}, False),
        (["12"], "120", {120.0}, False),  # a number must equal, not contain
        (["12"], "112", {112.0}, False),
        (["12"], "x = 12", {12.0}, True),  # "=" marks the answer on the last line
        (["12"], "x = 12\nso y = 13", {13.0}, False),  # ... only on the last line
        (["12"], "The answer is 12. The next one is 13", {13.0}, False),  # no sentence split
        (["12"], "The answer is 12\n\n", {12.0}, True),
        (["0.33"], "0.333", {0.33}, True),  # rounded to 2 decimals
        (["0.33"], "1/3", {"1/3", 1.0, 3.0}, False),
        (["0.0012"], "It is 1.2e-3", {-3.0, 0.0, 1.0}, True),  # 0.0012 rounds to 0.0
        (["9.20"], "9.2", {9.2}, True),
        (["-120"], "The phase is -120 degrees", {"-120 degrees", -120.0}, True),
        (["2000000"], "2,000,000", {2000000.0, 0.0}, True),
        (["0.10"], "The rate is 10%", {"10%", 10.0}, False),
        (["red"], "The colour is red.", {"red"}, True),
        (["red"], "Reddish", {"reddish"}, True),  # text answers are contained, not equal
        (["blue"], "red", {"red"}, False),
        (["b"], "b", {" b", "b "}, True),
        (["b"], "abc", {"abc"}, False),  # a one-letter answer must stand next to a space
        (["C"], "The answer is C", {" c", "c "}, True),
        (["north"], "It points up.\nSo the answer is north", {"north"}, True),
        (["6"], "x = ", {"x ="}, False),  # an empty tail gives no key phrase
        (["5"], "", {""}, False),  # a blank answer is parsed as "", never right
        (
            ["24/7", "3.429"],
            "The ratio is 24/7, about 3.43",
            {"24/7, about 3.43", 24.0, 3.43},
            True,
        ),
        (["24/7", "3.429"], "It is 3.429", {3.43}, True),
        (["Tampa", "Florida"], "The city of Tampa", {"the city of tampa"}, True),
    ],
)
def test_mmmu_open_extraction(gold, output, candidates, right):
  parsed = mmmu.parse_open(output)
  assert len(parsed) == len(candidates) and set(parsed) == candidates
  assert mmmu.open_correct(gold, parsed) is right
  assert mmmu.is_correct(_open("validation_Math_9", gold), parsed) is right


def test_mmmu_key_phrases():
  # lines are the only split; a line keeps its own full stop
  assert mmmu.key_phrases("It is red.\nThus the answer is blue.") == ["red.", "blue"]


def test_official_seed_42_stream():
  """The official fallback is random.choice(all_choices) after random.seed(42)."""
  rng = random.Random(42)
  assert [rng.choice(["A", "B", "C", "D"]) for _ in range(4)] == ["A", "A", "C", "B"]
  rng = random.Random(42)
  assert rng.choice(["A", "B", "C"]) == "C"  # the draw depends on the number of options


# Official order: subjects in CAT_SHORT2LONG order, items by number within a subject
# (Art_2 before Art_10), only multiple-choice answers without a candidate drawing.
ORDER_ITEMS = [
    (_mc("validation_Math_5", KG, "B"), "c"),  # draw 4: B (right)
    (_open("validation_Math_1", ["12"]), "The answer is 12."),  # right, no draw
    (_mc("validation_Art_10", KG, "A"), "45 kg"),  # draw 3: C (wrong)
    (_mc("validation_Biology_4", KG, "B"), "The answer is (B)"),  # right, no draw
    (_mc("validation_Art_2", KG, "C"), "C. 45 kg"),  # draw 2: A (wrong)
    (_mc("validation_Accounting_3", KG, "A"), "I cannot tell."),  # draw 1: A (right)
]


def test_mmmu_random_fallback_follows_the_official_stream():
  items = [it for it, _ in ORDER_ITEMS]
  parsed = [mmmu.parse(it, out) for it, out in ORDER_ITEMS]
  picks = mmmu.fallback_picks(items, parsed)
  assert {items[i].id: letter for i, letter in picks.items()} == {
      "validation_Accounting_3": "A",
      "validation_Art_2": "A",
      "validation_Art_10": "C",
      "validation_Math_5": "B",
  }
  # the official run (main_parse_and_eval.py over these, eval_utils.evaluate and
  # calculate_ins_level_acc): Overall 4/6; Accounting 1/1, Art 0/2, Biology 1/1, Math 2/2
  expected = {
      "accuracy": 4 / 6,
      "accuracy_multiple_choice": 3 / 5,
      "accuracy_open": 1.0,
      "category/Accounting": 1.0,
      "category/Art": 0.0,
      "category/Biology": 1.0,
      "category/Math": 1.0,
      "domain/Art and Design": 0.0,
      "domain/Business": 1.0,
      "domain/Science": 1.0,
      "num_items": 6,
      "unparsed": 4,
      "fallbacks": 4,
      "fallbacks_right": 2,
  }
  assert mmmu.score(items, parsed) == pytest.approx(expected)
  # any order of the same predictions (batching, resuming) gives the same score
  for perm in ([5, 4, 3, 2, 1, 0], [2, 0, 4, 1, 5, 3]):
    assert mmmu.score([items[i] for i in perm], [parsed[i] for i in perm]) == pytest.approx(
        expected
    )
  # the per-item flags count no random pick
  assert sum(mmmu.is_correct(it, p) for it, p in zip(items, parsed)) == 2


def test_mmmu_planted_predictions_give_official_metrics(mmmu_items):
  outputs = {
      "validation_Math_1": "(C) pentagon",  # right
      "validation_Math_2": "There are 12.",  # right (open, numeric)
      "validation_Art_1": "A",  # wrong
      # no candidate: the first draw of the seed-42 stream over its 3 letters is C: wrong
      # (over 4 letters it would have been A, the answer)
      "validation_Art_2": "I cannot tell.",
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
          "fallbacks": 1,
          "fallbacks_right": 0,
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
  assert (metrics["accuracy"], metrics["unparsed"], metrics["fallbacks"]) == (1.0, 0, 0)


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


# The official rule: Yuliang-Liu/MultimodalOCR OCRBench/scripts/LLaVA1_5.py @f5cbec6
# (lines 152-174): HME100k answers and outputs lose newlines and spaces (case kept), the
# others are lower-cased with newlines as spaces; right when an answer is contained.
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
          # the official script's five groups (they add up to the Final Score)
          "group/Text Recognition": 1,
          "group/Scene Text-centric VQA": 0,
          "group/Doc-oriented VQA": 1,
          "group/Key Information Extraction": 1,
          "group/Handwritten Mathematical Expression Recognition": 0,
          "num_items": 5,
          "unparsed": 1,
      }
  )


def test_verdicts_survive_a_json_round_trip(mmmu_items, ocr_json):
  """The harness stores `parsed` in JSON (tuples come back as lists) and reads
  `is_correct` per item; both must agree with `score` (whose MMMU accuracy also counts
  the random picks that were right)."""
  cases = [
      (
          mmmu,
          list(mmmu_items.values()),
          # Math_1 falls back to a random pick; Math_2's blank answer parses as ("",)
          ["B", "(C)", "The answer is 12", "", "The answer is north"],
      ),
      (ocrbench, ocrbench.load(ocr_json), ["centre", "12.50", "x^{2}+1=5", "coca-cola", ""]),
  ]
  for bench, items, outputs in cases:
    parsed = [bench.parse(it, o) for it, o in zip(items, outputs)]
    stored = json.loads(json.dumps(parsed))
    verdicts = [bench.is_correct(it, p) for it, p in zip(items, stored)]
    assert verdicts == [bench.is_correct(it, p) for it, p in zip(items, parsed)]
    assert bench.score(items, stored) == bench.score(items, parsed)
    metrics = bench.score(items, stored)
    lucky = metrics.get("fallbacks_right", 0)
    assert metrics["accuracy"] == (sum(verdicts) + lucky) / len(items)
    assert 0 < sum(verdicts) < len(items)

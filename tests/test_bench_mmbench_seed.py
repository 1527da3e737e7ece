"""MMBench (CircularEval) and SEED-Bench: loaders on public-layout fixtures, the letter
extraction rule, the official scores on planted predictions, format errors."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest
from benchmark_fixtures import mmbench as mmb_fixture
from benchmark_fixtures import seedbench as seed_fixture

from dsvl_jax.eval.benchmarks import choice, mmbench, seedbench
from dsvl_jax.eval.benchmarks.base import BenchmarkFormatError

ABCD = "ABCD"
INSTRUCTION = "Answer with the option's letter from the given choices directly."


def close(pixel, rgb, tol=40):
  return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, rgb))


def groups(items):
  out = {}
  for item in items:
    out.setdefault(item.group, []).append(item)
  return out


def all_rotations(options):
  """Every cyclic shift of `options` (a set, so the shift direction does not matter)."""
  return {
      tuple(options[(j + k) % len(options)] for j in range(len(options)))
      for k in range(len(options))
  }


# ---- MMBench: loading ----------------------------------------------------------------


@pytest.mark.parametrize("circular", [False, True])
def test_mmbench_loads_every_rotation(tmp_path, circular):
  items = mmbench.load(mmb_fixture.build(tmp_path, circular=circular))
  assert len(items) == 4 + 3 + 4 + 4 + 2
  by_group = groups(items)
  assert set(by_group) == {str(q["index"]) for q in mmb_fixture.QUESTIONS}
  # questions in file order, each with its rotations in order right after it
  assert [(m.group, m.extra["rotation"]) for m in items] == [
      (str(q["index"]), k) for q in mmb_fixture.QUESTIONS for k in range(len(q["options"]))
  ]
  for q in mmb_fixture.QUESTIONS:
    members = by_group[str(q["index"])]
    n = len(q["options"])
    # rotation k of question i has id i + k * 1e6, whether read or generated
    assert sorted(int(m.id) for m in members) == [q["index"] + k * 1_000_000 for k in range(n)]
    first = next(m for m in members if m.id == str(q["index"]))
    assert first.options == q["options"] and first.answer == q["answer"]
    assert first.extra["rotation"] == 0
    assert {m.options for m in members} == all_rotations(q["options"])
    right_text = q["options"][ABCD.index(q["answer"])]
    for m in members:
      assert m.options[ABCD.index(m.answer)] == right_text  # the answer follows its text
      assert m.extra["rotation"] == int(m.id) // 1_000_000
      assert (m.question, m.hint, m.category) == (q["question"], q["hint"], q["category"])
      assert m.extra["l2_category"] == q["l2"] and m.extra["split"] == "dev"
      assert m.num_images == 1
      (image,) = m.images()
      assert image.mode == "RGB" and image.size == q["size"]
      xy, rgb = q["probe"]
      assert close(image.getpixel(xy), rgb), (q["index"], image.getpixel(xy))


def test_mmbench_copies_share_the_original_image(tmp_path):
  items = mmbench.load(mmb_fixture.build(tmp_path, circular=True))
  for members in groups(items).values():
    pixels = [np.asarray(m.images()[0]) for m in members]
    assert all(np.array_equal(pixels[0], p) for p in pixels[1:])
  # and the images differ between questions (a reference resolves to its own row)
  sizes = {m.group: m.images()[0].size for m in items}
  assert len(set(sizes.values())) == len(mmb_fixture.QUESTIONS)


def test_mmbench_prompt(tmp_path):
  items = {m.id: m for m in mmbench.load(mmb_fixture.build(tmp_path))}
  assert mmbench.prompt(items["27"]) == (
      "<image_placeholder>Hint: Count only the filled shapes.\n"
      "Question: How many squares are in the image?\n"
      "Options:\nA. 1\nB. 2\nC. 3\n" + INSTRUCTION
  )
  assert mmbench.prompt(items["15"]) == (
      "<image_placeholder>Question: What color is the circle?\n"
      "Options:\nA. red\nB. green\nC. blue\nD. yellow\n" + INSTRUCTION
  )
  # the hint keeps its quotes and newline through the TSV's quoting
  assert mmbench.prompt(items["113"]).startswith(
      '<image_placeholder>Hint: The sign reads one "word".\nIt is in upper case.\n'
      "Question: Which word is written in the image?\n"
  )
  cn = mmbench.prompt(items["240"])
  assert "Question: 图中的三角形是什么颜色？\n" in cn and "C. 蓝色\n" in cn


# ---- MMBench: CircularEval -----------------------------------------------------------


def right_letter(item, questions):
  """The letter of the fixture's correct text in this rotation (not item.answer)."""
  q = questions[item.group]
  return ABCD[item.options.index(q["options"][ABCD.index(q["answer"])])]


def planted_outputs(items):
  """15: all rotations right (some as text or phrases); 27: rotation 2 wrong;
  113: rotation 1 unparseable; 240: rotation 0 wrong; 1001: all right."""
  questions = {str(q["index"]): q for q in mmb_fixture.QUESTIONS}
  outputs = []
  for item in items:
    k = item.extra["rotation"]
    good = right_letter(item, questions)
    bad = ABCD[(ABCD.index(good) + 1) % len(item.options)]
    text = item.options[ABCD.index(good)]
    out = {
        "15": [good, f"{good}.", f"({good}) {text}", text.capitalize() + "."],
        "27": [good, f"Answer: {good}", bad],
        "113": [good, "I cannot read it.", good, good],
        "240": [bad, text, f"答案：{good}", good],
        "1001": [f"The answer is {good}", f"{good}) {text}"],
    }[item.group][k]
    outputs.append(out)
  return outputs


@pytest.mark.parametrize("circular", [False, True])
def test_mmbench_circular_eval(tmp_path, circular):
  items = mmbench.load(mmb_fixture.build(tmp_path, circular=circular))
  parsed = [mmbench.parse(m, o) for m, o in zip(items, planted_outputs(items))]
  assert mmbench.score(items, parsed) == {
      "language": "en",  # the fixture's English questions (MMB, not MMB-CN)
      "circular_accuracy": 2 / 5,  # 15 and 1001 pass; 27, 113, 240 each miss one
      "vanilla_accuracy": 4 / 5,  # rotation 0 is right everywhere but 240
      "category/attribute_recognition": 1 / 2,  # 15 passes, 240 fails
      "category/object_localization": 0.0,
      "category/ocr": 0.0,
      "category/spatial_relationship": 1.0,
      "num_items": 5,
      "num_rotations": 17,
      "unparsed": 1,
  }


def test_mmbench_one_wrong_rotation_fails_the_question(tmp_path):
  items = [m for m in mmbench.load(mmb_fixture.build(tmp_path)) if m.group == "15"]
  right = [m.answer for m in items]
  assert mmbench.score(items, right)["circular_accuracy"] == 1.0
  for k in range(len(items)):
    wrong = list(right)
    wrong[k] = ABCD[(ABCD.index(right[k]) + 1) % 4]
    assert mmbench.score(items, wrong)["circular_accuracy"] == 0.0
    unparsed = list(right)
    unparsed[k] = None
    metrics = mmbench.score(items, unparsed)
    assert metrics["circular_accuracy"] == 0.0 and metrics["unparsed"] == 1
    # rotation 0 alone decides the vanilla number
    assert metrics["vanilla_accuracy"] == (0.0 if k == 0 else 1.0)


# ---- the extraction rule -------------------------------------------------------------

OPTIONS = ("green", "red", "blue", "yellow")


@pytest.mark.parametrize(
    "output, expected",
    [
        ("B", "B"),
        ("B.", "B"),
        ("B)", "B"),
        ("(B) red", "B"),
        ("C: blue", "C"),
        ("  **D**  ", "D"),
        ("Ｂ", "B"),  # full-width letter
        ("Answer: C", "C"),
        ("answer: (c)", None),  # the letter must be upper case
        ("The answer is B", "B"),
        ("The answer is (D).", "D"),
        ("答案：A", "A"),
        ("答案是C", "C"),
        ("blue", "C"),
        ("Blue.", "C"),
        ("  Yellow  ", "D"),
        ("B. red", "B"),
        ("B\nThe answer is B.", "B"),  # two rules, one letter
        ("A or B", None),
        ("", None),
        ("   ", None),
        ("B. The answer is C", None),  # two letters plausible
        ("red or blue", None),
        ("I think it is red", None),
        ("A cat sits on the mat", None),  # the article is not a letter
        ("The answer is a red one", None),
        ("E", None),  # past the last option
        ("Answer: Cat", None),
    ],
)
def test_extract_choice(output, expected):
  assert choice.extract_choice(output, OPTIONS) == expected


def test_extract_choice_respects_option_count_and_duplicates():
  assert choice.extract_choice("C", ("yes", "no")) is None
  assert choice.extract_choice("The answer is D", ("1", "2", "3")) is None
  assert choice.extract_choice("red", ("Red", "red ", "blue")) is None  # two texts match
  assert choice.extract_choice("3", ("1", "2", "3")) == "C"


# ---- MMBench: format errors ----------------------------------------------------------


def rewrite_tsv(path: pathlib.Path, edit) -> None:
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t"))
  rows = edit(rows)
  with open(path, "w", encoding="utf-8", newline="") as f:
    csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)


@pytest.mark.parametrize("column", ["category", "answer", "image", "hint", "D"])
def test_mmbench_missing_column(tmp_path, column):
  path = mmb_fixture.build(tmp_path)

  def drop(rows):
    j = rows[0].index(column)
    return [r[:j] + r[j + 1 :] for r in rows]

  rewrite_tsv(path, drop)
  with pytest.raises(BenchmarkFormatError, match=column) as e:
    mmbench.load(path)
  assert str(path) in str(e.value)


def test_mmbench_bad_base64_names_file_and_row(tmp_path):
  path = mmb_fixture.build(tmp_path)

  def corrupt(rows):
    rows[2][rows[0].index("image")] = "not base64 at all! " * 10
    return rows

  rewrite_tsv(path, corrupt)
  with pytest.raises(BenchmarkFormatError) as e:
    mmbench.load(path)
  message = str(e.value)
  assert str(path) in message and "row 2" in message and "index 27" in message


def test_mmbench_base64_of_a_non_image(tmp_path):
  path = mmb_fixture.build(tmp_path)

  def corrupt(rows):
    rows[1][rows[0].index("image")] = "QUJD" * 40  # valid base64 of "ABC..."
    return rows

  rewrite_tsv(path, corrupt)
  with pytest.raises(BenchmarkFormatError, match="row 1"):
    mmbench.load(path)


def test_mmbench_dangling_image_reference(tmp_path):
  path = mmb_fixture.build(tmp_path, circular=True)

  def dangle(rows):
    rows[-1][rows[0].index("image")] = "999"
    return rows

  rewrite_tsv(path, dangle)
  with pytest.raises(BenchmarkFormatError, match="'999'"):
    mmbench.load(path)


@pytest.mark.parametrize("answer", ["D", "", "b"])
def test_mmbench_bad_answer(tmp_path, answer):
  path = mmb_fixture.build(tmp_path)

  def set_answer(rows):  # index 27 has three options, so D names none
    rows[2][rows[0].index("answer")] = answer
    return rows

  rewrite_tsv(path, set_answer)
  with pytest.raises(BenchmarkFormatError, match=f"row 2.*answer '{answer}'"):
    mmbench.load(path)


def test_mmbench_short_row(tmp_path):
  path = mmb_fixture.build(tmp_path)
  rewrite_tsv(path, lambda rows: rows[:3] + [rows[3][:-2]] + rows[4:])
  with pytest.raises(BenchmarkFormatError, match="row 3 .*fields"):
    mmbench.load(path)


# ---- SEED-Bench ----------------------------------------------------------------------


def test_seed_loads_image_questions(tmp_path):
  json_path = seed_fixture.build(tmp_path)
  items = seedbench.load(json_path)
  names = {i: name for name, i in seed_fixture.QUESTION_TYPE.items()}
  assert [m.id for m in items] == [q["question_id"] for q in seed_fixture.QUESTIONS]
  for m, q in zip(items, seed_fixture.QUESTIONS):
    assert m.question == q["question"] and m.options == q["choices"]
    assert m.answer == q["answer"] and m.category == names[q["type_id"]]
    (image,) = m.images()
    assert image.mode == "RGB" and image.size == q["size"]
  assert close(items[1].images()[0].getpixel((5, 5)), seed_fixture.SKY)
  # the release folder works as well as its JSON file
  assert [m.id for m in seedbench.load(tmp_path)] == [m.id for m in items]


def test_seed_prompt(tmp_path):
  item = seedbench.load(seed_fixture.build(tmp_path))[0]
  assert seedbench.prompt(item) == (
      "<image_placeholder>Question: How many circles are in the image?\n"
      "Options:\nA. One\nB. Two\nC. Three\nD. Four\n" + INSTRUCTION
  )


def test_seed_scores(tmp_path):
  items = seedbench.load(seed_fixture.build(tmp_path))
  outputs = {
      "101669": "C",
      "101670": "Light blue.",
      "101671": "A",
      "101672": "A or B",
      "101673": "Answer: A",
  }
  parsed = [seedbench.parse(m, outputs[m.id]) for m in items]
  assert parsed == ["C", "B", "A", None, "A"]
  assert seedbench.score(items, parsed) == {
      "accuracy": 3 / 5,
      "category/Instances Counting": 1.0,
      "category/Scene Understanding": 1.0,
      "category/Spatial Relation": 0.0,  # unparsed counts wrong
      "category/Text Understanding": 0.0,
      "num_items": 5,
      "unparsed": 1,
  }


def test_seed_data_id_without_extension(tmp_path):
  json_path = seed_fixture.build(tmp_path)
  data = json.loads(json_path.read_text())
  data["questions"][0]["data_id"] = data["questions"][0]["data_id"].removesuffix(".jpg")
  json_path.write_text(json.dumps(data))
  (image,) = seedbench.load(json_path)[0].images()
  assert image.size == seed_fixture.QUESTIONS[0]["size"]


def test_seed_format_errors(tmp_path):
  json_path = seed_fixture.build(tmp_path)
  data = json.loads(json_path.read_text())
  del data["questions"][1]["choice_c"]
  json_path.write_text(json.dumps(data))
  with pytest.raises(BenchmarkFormatError, match=r"questions\[1\].*choice_c"):
    seedbench.load(json_path)
  json_path = seed_fixture.build(tmp_path / "b")
  image_dir = tmp_path / "b" / seed_fixture.IMAGE_DIR
  (image_dir / seed_fixture.QUESTIONS[2]["data_id"]).unlink()
  with pytest.raises(BenchmarkFormatError, match="101671"):
    seedbench.load(json_path)

"""POPE and ScienceQA-IMG: loaders on fixtures in the public layouts, answer extraction,
and the official metrics from planted predictions."""

from __future__ import annotations

import json
import shutil

import pytest
from benchmark_fixtures import pope as pope_fixture
from benchmark_fixtures import scienceqa as sqa_fixture

from dsvl_jax.eval.benchmarks import pope, registry, scienceqa
from dsvl_jax.eval.benchmarks.base import BenchItem, BenchmarkFormatError


@pytest.fixture
def pope_dir(tmp_path):
  return pope_fixture.build(tmp_path)


@pytest.fixture
def sqa_dir(tmp_path):
  return sqa_fixture.build(tmp_path)


def test_registered_under_their_names():
  assert registry.get(pope.NAME) is pope and pope.NAME == "pope"
  assert registry.get(scienceqa.NAME) is scienceqa and scienceqa.NAME == "scienceqa"


# ----------------------------------------------------------------------------- POPE


def test_pope_loads_the_three_splits(pope_dir):
  items = pope.load(pope_dir)
  assert [it.id for it in items] == [
      "random/0",
      "random/1",
      "random/2",
      "random/3",
      "popular/0",
      "popular/1",
      "adversarial/0",
      "adversarial/1",
  ]
  assert [it.answer for it in items] == ["yes", "no"] * 4
  assert [it.category for it in items] == ["random"] * 4 + ["popular"] * 2 + ["adversarial"] * 2
  assert items[2].question == "Is there a sports ball in the image?"
  assert items[2].extra == {"question_id": 2, "image": "COCO_val2014_000000000285.jpg"}
  assert items[0].num_images == 1 and items[0].options == ()
  (im,) = items[2].images()
  assert im.size == (64, 48) and im.mode == "RGB"
  r, g, b = im.getpixel((32, 22))  # the red ball of image 285
  assert r > 150 and g < 100 and b < 100
  assert pope.prompt(items[2]) == (
      "<image_placeholder>Is there a sports ball in the image? Please answer yes or no."
  )


def test_pope_single_file_and_image_dir(pope_dir, tmp_path):
  items = pope.load(pope_dir / "coco_pope_popular.json")
  assert [(it.id, it.category, it.answer) for it in items] == [
      ("popular/0", "popular", "yes"),
      ("popular/1", "popular", "no"),
  ]
  # images elsewhere: found through image_dir, and a missing folder is reported
  moved = tmp_path / "elsewhere" / "coco_images"
  shutil.move(str(pope_dir.parent / "val2014"), str(moved))
  with pytest.raises(FileNotFoundError, match="val2014"):
    pope.load(pope_dir)
  items = pope.load(pope_dir, image_dir=moved)
  assert len(items) == 8 and items[1].images()[0].size == (64, 48)
  # val2014/ beside the question files is found too
  shutil.move(str(moved), str(pope_dir / "val2014"))
  assert len(pope.load(pope_dir)) == 8


def test_pope_missing_image_names_line(pope_dir):
  (pope_dir.parent / "val2014" / "COCO_val2014_000000000285.jpg").unlink()
  with pytest.raises(FileNotFoundError, match=r"coco_pope_random\.json:3"):
    pope.load(pope_dir)


# The official rule (github.com/AoiDragon/POPE evaluate.py at 08d957b917e5, unchanged
# since f3ec604337f1; LLaVA's llava/eval/eval_pope.py at c121f0432da2 has the same):
# the text before the first ".", commas deleted, split on " ", "no" when one word is
# exactly "No", "not" or "no", else "yes". Expected answers below were worked out from
# that code by hand; `fallback`: "yes" without the word yes in the first sentence.
POPE_OUTPUTS = [
    ("Yes, there is a dog.", "yes", False),
    ("Yes", "yes", False),
    ("yes", "yes", False),
    ("YES!", "yes", False),
    ("No.", "no", False),
    ("no", "no", False),
    ("no.", "no", False),
    (" No, there is no dog in the image.\n", "no", False),  # stripped first, as LLaVA writes
    ("There is not a dog", "no", False),
    ("There is no dog in the image.", "no", False),
    ("There is a dog, not a cat.", "no", False),  # comma removed, "not" is a word
    ("No, it isn't.", "no", False),  # the comma goes before the split: "No" is a word
    ("Yes. There is no cat.", "yes", False),  # only the first sentence is read
    ("Yes. But there is not a cat.", "yes", False),
    ("There is a dog. No doubt.", "yes", True),
    ("I cannot tell", "yes", True),
    ("There is a dog in the image.", "yes", True),  # the audit's case: official "yes"
    ("NO", "yes", True),  # the no-words are case-sensitive
    ("Not at all.", "yes", True),  # "Not" is not one of them either
    ("There isn't a dog.", "yes", True),  # "isn't" is not "not"
    ("Nothing here", "yes", True),
    ("Yesterday it was there", "yes", True),
    ("", "yes", True),
]


@pytest.mark.parametrize("output,expected,fell_back", POPE_OUTPUTS)
def test_pope_extraction_is_the_official_rule(output, expected, fell_back):
  assert pope.parse(None, output) == expected
  assert pope.fallback(None, output) == fell_back


def _metrics(tp, fp, tn, fn, unparsed_yes, unparsed_no):
  """The documented formulas, by hand."""
  n = tp + fp + tn + fn + unparsed_yes + unparsed_no
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn + unparsed_yes) if tp + fn + unparsed_yes else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {
      "accuracy": (tp + tn) / n,
      "precision": precision,
      "recall": recall,
      "f1": f1,
      "yes_ratio": (tp + fp) / (tp + fp + tn + fn),
      "num_items": n,
      "unparsed": unparsed_yes + unparsed_no,
  }


def _check(got, want, prefix=""):
  for k, v in want.items():
    assert got[prefix + k] == pytest.approx(v, rel=1e-12, abs=1e-12), prefix + k


def test_pope_metrics_from_planted_answers(pope_dir):
  items = pope.load(pope_dir)
  # labels: yes, no, yes, no | yes, no | yes, no
  outputs = [
      "Yes",
      "Yes.",  # TP, FP
      "Yes, there is.",
      "No",  # TP, TN
      "yes",
      "There is not.",  # TP, TN
      "No.",
      "I cannot tell",
  ]  # FN, FP (label no: the official default "yes")
  parsed = [pope.parse(it, o) for it, o in zip(items, outputs)]
  assert parsed == ["yes", "yes", "yes", "no", "yes", "no", "no", "yes"]
  got = pope.score(items, parsed)
  want = _metrics(tp=3, fp=2, tn=2, fn=1, unparsed_yes=0, unparsed_no=0)
  assert want["accuracy"] == 5 / 8 and want["precision"] == 3 / 5
  assert want["recall"] == 3 / 4 and want["yes_ratio"] == 5 / 8
  _check(got, want)
  assert got["f1"] == pytest.approx(2 / 3)
  _check(got, _metrics(tp=2, fp=1, tn=1, fn=0, unparsed_yes=0, unparsed_no=0), "random/")
  assert got["random/f1"] == pytest.approx(0.8)
  _check(got, _metrics(tp=1, fp=0, tn=1, fn=0, unparsed_yes=0, unparsed_no=0), "popular/")
  # adversarial: a miss and a false "yes": nothing right
  assert {k: got[f"adversarial/{k}"] for k in want} == {
      "accuracy": 0.0,
      "precision": 0.0,
      "recall": 0.0,
      "f1": 0.0,
      "yes_ratio": 0.5,
      "num_items": 2.0,
      "unparsed": 0.0,
  }


def test_pope_unparsed_yes_item_is_a_miss(pope_dir):
  items = pope.load(pope_dir)
  yes_items = [i for i, it in enumerate(items) if it.answer == "yes"]
  no_items = [i for i, it in enumerate(items) if it.answer == "no"]
  parsed = [None] * len(items)
  for i, a in zip(yes_items, ["yes", "yes", "no", None]):  # TP, TP, FN, unparsed
    parsed[i] = a
  for i, a in zip(no_items, ["yes", "no", "no", "no"]):  # FP, TN, TN, TN
    parsed[i] = a
  got = pope.score(items, parsed)
  _check(got, _metrics(tp=2, fp=1, tn=3, fn=1, unparsed_yes=1, unparsed_no=0))
  assert got["recall"] == pytest.approx(0.5)  # 2 of the 4 yes items, not 2 of 3
  assert got["f1"] == pytest.approx(4 / 7)
  assert got["yes_ratio"] == pytest.approx(3 / 7)


def test_pope_one_split_has_no_split_keys(pope_dir):
  items = pope.load(pope_dir / "coco_pope_random.json")
  got = pope.score(items, ["yes", "no", "no", "no"])
  assert not any("/" in k for k in got)
  _check(got, _metrics(tp=1, fp=0, tn=2, fn=1, unparsed_yes=0, unparsed_no=0))
  with pytest.raises(ValueError):
    pope.score(items, ["yes"])


@pytest.mark.parametrize(
    "bad,message",
    [
        ('{"question_id": 9, "image": "x.jpg", "text": "Is there a cat?"', "not a JSON"),
        ('{"question_id": 9, "image": "x.jpg", "text": "Is there a cat?"}', "'label'"),
        (
            '{"question_id": 9, "image": "x.jpg", "text": "Is there a cat?", "label": "Yes"}',
            "label",
        ),
        ('{"question_id": 9, "image": 5, "text": "Is there a cat?", "label": "no"}', "'image'"),
        ('["not", "an", "object"]', "not a JSON object"),
        (
            '{"question_id": 0, "image": "COCO_val2014_000000000139.jpg", "text": "Is there a '
            'cat?", "label": "no"}',
            "repeats",
        ),
    ],
)
def test_pope_malformed_line(pope_dir, bad, message):
  file = pope_dir / "coco_pope_popular.json"
  lines = file.read_text().splitlines()
  file.write_text("\n".join(lines[:1] + [""] + [bad] + lines[1:]) + "\n")  # line 3
  with pytest.raises(BenchmarkFormatError, match=message) as e:
    pope.load(pope_dir)
  assert f"{file}:3" in str(e.value)


# ------------------------------------------------------------------------ ScienceQA


def test_sqa_loads_the_img_test_split(sqa_dir):
  items = scienceqa.load(sqa_dir)
  assert [it.id for it in items] == ["1", "2", "3", "4"]  # 5: no image; 6, 7: not test
  assert [it.answer for it in items] == ["B", "A", "D", "C"]
  assert [it.category for it in items] == [
      "natural science",
      "natural science",
      "social science",
      "language science",
  ]
  assert items[1].options == ("ostrich", "tortoise")
  assert items[1].hint == "Ostriches live in grasslands." and items[0].hint == ""
  assert items[2].extra == {"grade": "grade7", "split": "test"}
  assert [it.images()[0].size for it in items] == [(48, 32), (56, 32), (64, 32), (72, 32)]
  assert scienceqa.load(sqa_dir / "problems.json") == items


def test_sqa_other_splits(sqa_dir):
  assert [it.id for it in scienceqa.load(sqa_dir, split="train")] == ["6"]
  (item,) = scienceqa.load(sqa_dir, split="minival")  # from pid_splits.json
  assert item.id == "7" and item.images()[0].size == (96, 32)  # images/val/7/
  (sqa_dir / "pid_splits.json").unlink()  # without it: the problems' "split" field
  assert [it.id for it in scienceqa.load(sqa_dir)] == ["1", "2", "3", "4"]
  with pytest.raises(ValueError, match="minival"):
    scienceqa.load(sqa_dir, split="minival")


def test_sqa_missing_image_names_pid(sqa_dir):
  (sqa_dir / "images" / "test" / "3" / "image.png").unlink()
  with pytest.raises(FileNotFoundError, match="pid 3"):
    scienceqa.load(sqa_dir)


def test_sqa_prompt(sqa_dir):
  items = scienceqa.load(sqa_dir)
  assert scienceqa.prompt(items[0]) == (
      "<image_placeholder>Which color is the shape?\nA. blue\nB. red\nC. green\n"
      "Answer with the option's letter from the given choices directly."
  )
  assert scienceqa.prompt(items[1]) == (
      "<image_placeholder>Context: Ostriches live in grasslands.\n"
      "Which animal's legs are adapted for running?\nA. ostrich\nB. tortoise\n"
      "Answer with the option's letter from the given choices directly."
  )


def test_sqa_published_setup():
  # llava/eval/model_vqa_science.py @c121f04: max_new_tokens=1024 (greedy with --temperature 0)
  assert scienceqa.MAX_NEW_TOKENS == 1024
  assert "eval_science_qa.py @c121f04" in scienceqa.SETUP
  assert "model_vqa_science.py @c121f04" in scienceqa.SETUP


# LLaVA's parser: haotian-liu/LLaVA llava/eval/eval_science_qa.py at
# c121f0432da27facab705978f83c4ada465e46fd (default --options A-E; get_pred_idx makes a
# letter past the problem's choices -1, i.e. wrong). Every row was executed against that
# code with the choices below (three of them); "parsed" is its parsed_ans (None for
# "FAILED"), "right" whether pred_idx equals the answer index when the answer is B.
SQA_OPTIONS = ("salt water", "salt", "same")
SQA_OUTPUTS = [  # (raw output, parsed_ans, right when the answer is B)
    ("(B)", None, False),  # section 3's table
    ("Answer: C", None, False),
    ("B", "B", True),
    ("The answer is B.", "B", True),
    ("B.", None, False),  # shorter than 3 characters and not a bare letter
    ("B. blue", "B", True),
    ("The answer is B", None, False),  # the regex needs one character after the letter
    ("The answer is B. The answer is B.", None, False),  # two matches
    ("E", "E", False),  # a letter past the three choices: index -1
    ("D", "D", False),
    ("C", "C", False),
    ("A. salt water", "A", False),
    ("C: same", None, False),
    ("The answer is (C).", None, False),
    ("the answer is A", None, False),  # case-sensitive
    ("same", None, False),  # option text is never read
    ("B)", None, False),
    ("B. The answer is C", "B", True),  # rule 2 comes first
    ("The answer is D.", "D", False),
    ("The answer is F.", "F", False),  # the regex takes any capital letter
    ("F. fish", None, False),  # rule 2 only for A-E
    ("A salt crystal", None, False),
    ("The answer is C, so C.", "C", False),
    ("b", None, False),
    ("", None, False),
]


@pytest.mark.parametrize("output,parsed,right", SQA_OUTPUTS)
def test_sqa_llava_parser(output, parsed, right):
  item = BenchItem(id="x", question="q", options=SQA_OPTIONS, answer="B")
  assert scienceqa.parse(item, output) == parsed
  assert scienceqa.is_correct(item, parsed) == right


def test_sqa_output_is_read_stripped():
  # model_vqa_science.py writes `outputs.strip()`: what the parser reads
  item = BenchItem(id="x", question="q", options=SQA_OPTIONS, answer="B")
  assert scienceqa.parse(item, "  B\n") == "B"
  assert scienceqa.parse(item, "\nB. salt ") == "B"


def test_sqa_metrics_from_planted_answers(sqa_dir):
  """eval_science_qa.py's IMG-Accuracy: correct / all image problems, FAILED included."""
  items = scienceqa.load(sqa_dir)  # answers B, A, D, C of 3, 2, 4, 3 choices
  outputs = ["(B)", "A. ostrich", "The answer is D.", "E"]  # FAILED, right, right, E: wrong
  parsed = [scienceqa.parse(it, o) for it, o in zip(items, outputs)]
  assert parsed == [None, "A", "D", "E"]
  assert [scienceqa.is_correct(it, p) for it, p in zip(items, parsed)] == [False, True, True, False]
  assert scienceqa.score(items, parsed) == {
      "accuracy": 0.5,
      "num_items": 4.0,
      "unparsed": 1.0,
      "category/natural science": 0.5,
      "category/social science": 1.0,
      "category/language science": 0.0,
  }


def _rewrite(sqa_dir, pid, **changes):
  file = sqa_dir / "problems.json"
  problems = json.loads(file.read_text())
  problems[pid].update(changes)
  for k, v in changes.items():
    if v is ...:
      del problems[pid][k]
  file.write_text(json.dumps(problems))
  return file


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(answer=3), "answer 3 outside"),
        (dict(choices="red"), "'choices'"),
        (dict(choices=["only"]), "1 choices"),
        (dict(question=...), "missing 'question'"),
        (dict(image=7), "'image'"),
    ],
)
def test_sqa_malformed_problem(sqa_dir, changes, message):
  file = _rewrite(sqa_dir, "2", **changes)
  with pytest.raises(BenchmarkFormatError, match=message) as e:
    scienceqa.load(sqa_dir)
  assert f"{file}: pid 2" in str(e.value)


def test_sqa_malformed_files(sqa_dir):
  file = sqa_dir / "problems.json"
  file.write_text(file.read_text()[:-5])
  with pytest.raises(BenchmarkFormatError, match="problems.json: not JSON"):
    scienceqa.load(sqa_dir)
  sqa_fixture.build(sqa_dir.parent)
  (sqa_dir / "pid_splits.json").write_text(json.dumps({"test": ["1", "99"]}))
  with pytest.raises(BenchmarkFormatError, match=r"pid_splits\.json.*pid 99"):
    scienceqa.load(sqa_dir)

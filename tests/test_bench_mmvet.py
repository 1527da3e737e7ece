"""MM-Vet: the loader on a fixture in the release layout, the official grader prompt, the
official retry rule with a scripted judge, and the official score aggregation.

Every expected value comes from MM-Vet's evaluator, github.com/yuweihao/MM-Vet
mm-vet_evaluator.py @acde843e02dae30047bb456ee4a8ab28dee7e0ae (last changed at c7ff270):
`prompt` (lines 15-26), the grading loop in `runs` (lines 199-276) and `export_result`
(lines 298-349). The retry and aggregation tables were produced by executing those
functions themselves (a scripted stand-in for the OpenAI client), outside this repo.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import pytest
from benchmark_fixtures import mmvet as mmvet_fixture

from dsvl_jax.eval.benchmarks import mmvet, registry
from dsvl_jax.eval.benchmarks.base import BenchItem, BenchmarkFormatError

# sha256 and length of the evaluator's `prompt` string (mm-vet_evaluator.py @acde843,
# lines 15-26, final newline included), computed by importing that file.
OFFICIAL_PROMPT_SHA256 = "d1b3e0a5b4e72c888b77164489d705bba4dd149934fff564dfba6443d81afe3f"
OFFICIAL_PROMPT_CHARS = 2290
OFFICIAL_SUFFIX = "\nPredict the correctness of the answer (digit): "  # line 257


@pytest.fixture
def release(tmp_path):
  return mmvet_fixture.build(tmp_path)


@pytest.fixture
def items(release):
  return mmvet.load(release)


def test_registered_with_the_published_setup():
  assert registry.get("mmvet") is mmvet and mmvet.NAME == "mmvet"
  assert mmvet.JUDGE == "required"  # the harness refuses to run it without a judge
  assert mmvet.MAX_NEW_TOKENS == 512  # VLMEvalKit vlm/deepseek_vl.py @e8e78f05
  assert "e8e78f05" in mmvet.SETUP and "acde843" in mmvet.SETUP


# ----------------------------------------------------------------------------- loader


def test_loads_the_release_in_file_order(release, items):
  assert [it.id for it in items] == [f"v1_{i}" for i in range(6)]
  one = items[1]
  assert one.question == "What is x in the equation?"
  assert one.answer == "-1<AND>-5"  # as released: the grader spaces the markers
  assert one.category == "ocr,spat,math"
  assert one.extra == {"capability": ["ocr", "spat", "math"], "imagename": "v1_1.png"}
  assert one.options == () and one.num_images == 1
  (im,) = items[3].images()
  assert im.size == (64, 48) and im.mode == "RGB"
  r, g, b = im.getpixel((32, 24))  # v1_3's red square
  assert r > 180 and g < 80 and b < 80
  # the json itself, and the folder mm-vet.zip was unzipped in, give the same items
  assert mmvet.load(release / "mm-vet.json") == items
  assert mmvet.load(release.parent) == items


def test_prompt_is_the_image_then_the_question_as_released(items):
  # VLMEvalKit ImageBaseDataset.build_prompt @e8e78f05: [image, question], nothing added
  assert mmvet.prompt(items[1]) == "<image_placeholder>What is x in the equation?"


def test_image_dir_option_and_missing_images(release, tmp_path):
  moved = tmp_path / "elsewhere"
  shutil.move(str(release / "images"), moved)
  with pytest.raises(FileNotFoundError, match="pass image_dir"):
    mmvet.load(release)
  items = mmvet.load(release, image_dir=moved)
  assert items[0].images()[0].size == (64, 48)
  (moved / "v1_4.jpg").unlink()
  with pytest.raises(FileNotFoundError, match=r"v1_4"):
    mmvet.load(release, image_dir=moved)


def test_a_file_outside_the_release_layout_is_refused_naming_the_key(release, tmp_path):
  data = json.loads((release / "mm-vet.json").read_text())
  data["v1_2"]["capability"] = "ocr"  # a string, not a list
  (release / "mm-vet.json").write_text(json.dumps(data))
  with pytest.raises(BenchmarkFormatError, match=r"v1_2.*capability"):
    mmvet.load(release)
  del data["v1_2"]["imagename"]
  (release / "mm-vet.json").write_text(json.dumps(data))
  with pytest.raises(BenchmarkFormatError, match=r"v1_2.*imagename"):
    mmvet.load(release)
  with pytest.raises(FileNotFoundError, match="mm-vet.json"):
    mmvet.load(tmp_path / "nowhere")


# ----------------------------------------------------------------------- grader prompt


def test_grader_prompt_is_the_official_construction(items):
  assert hashlib.sha256(mmvet.GRADER_PROMPT.encode()).hexdigest() == OFFICIAL_PROMPT_SHA256
  assert len(mmvet.GRADER_PROMPT) == OFFICIAL_PROMPT_CHARS
  assert mmvet.GRADER_PROMPT.startswith("Compare the ground truth and prediction from AI models")
  assert mmvet.GRADER_PROMPT.endswith("their actual physical characteristics. | 1.0\n")
  # The recipe (lines 199-212): prompt + "\n" + " | ".join([question, answer with
  # " <AND> " / " <OR> ", the prediction as is, ""]).
  pred = "x = -1"
  expected = mmvet.GRADER_PROMPT + "\n" + "What is x in the equation? | -1 <AND> -5 | x = -1 | "
  assert mmvet.grader_prompt(items[1], pred) == expected
  assert expected.endswith(
      "characteristics. | 1.0\n\nWhat is x in the equation? | -1 <AND> -5 | x = -1 | "
  )
  # <OR> spaced the same way; the prediction is not stripped or escaped
  pred = " 14 dollars | total\n"
  assert mmvet.grader_prompt(items[2], pred) == (
      mmvet.GRADER_PROMPT
      + "\n"
      + "What is the total price? | 14 <OR> 14.00 |  14 dollars | total\n | "
  )
  assert mmvet.RETRY_SUFFIX == OFFICIAL_SUFFIX


# ------------------------------------------------------------------------ retry rule

# (the judge's scripted replies, the official score, the (temperature, retried) of each
# call). Each row is what mm-vet_evaluator.py @acde843 `runs` (lines 222-276) did with
# these replies: the score is the first " "-separated token, stripped, through float(),
# if within [0, 1]; a failed try asks again WITH the suffix at the CURRENT temperature
# and then adds 0.5, so the second call is still at 0.0; the 6th call ends the loop with
# 0.0 and its reply is never read.
RETRY_TABLE = [
    (["0.7"], 0.7, [(0.0, False)]),
    (["abc", "1.0"], 1.0, [(0.0, False), (0.0, True)]),
    (["0.7 because"], 0.7, [(0.0, False)]),
    (["0.8\n"], 0.8, [(0.0, False)]),  # the token is stripped
    (["\t0.4"], 0.4, [(0.0, False)]),
    ([".5"], 0.5, [(0.0, False)]),  # anything float() reads
    (["1e-1"], 0.1, [(0.0, False)]),
    (["1"], 1.0, [(0.0, False)]),
    (["1."], 1.0, [(0.0, False)]),
    (["-0.0"], 0.0, [(0.0, False)]),  # not below 0.0
    (["1.0\nx", "0.3"], 0.3, [(0.0, False), (0.0, True)]),  # split on " " only
    ([" 0.5", "0.5"], 0.5, [(0.0, False), (0.0, True)]),  # first token ""
    (["1.5", "0.2"], 0.2, [(0.0, False), (0.0, True)]),  # above 1.0
    (["0.5,", "0.3"], 0.3, [(0.0, False), (0.0, True)]),
    (["0_5", "0.6"], 0.6, [(0.0, False), (0.0, True)]),  # float("0_5") is 5.0
    (["", "0.1"], 0.1, [(0.0, False), (0.0, True)]),
    (["Correctness: 0.5", "0.5"], 0.5, [(0.0, False), (0.0, True)]),
    (
        ["a", "b", "c", "d", "0.9"],
        0.9,
        [(0.0, False), (0.0, True), (0.5, True), (1.0, True), (1.5, True)],
    ),
    (
        ["a", "b", "c", "d", "e", "f"],
        0.0,
        [(0.0, False), (0.0, True), (0.5, True), (1.0, True), (1.5, True), (2.0, True)],
    ),
    (  # five failed tries: the 6th reply is not read, even a valid one
        ["a", "b", "c", "d", "e", "1.0"],
        0.0,
        [(0.0, False), (0.0, True), (0.5, True), (1.0, True), (1.5, True), (2.0, True)],
    ),
]


def scripted(replies):
  """An `ask` that returns `replies` in turn and records each call."""
  calls = []

  def ask(prompt, max_tokens, temperature):
    calls.append({"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature})
    return replies[len(calls) - 1]

  return ask, calls


@pytest.mark.parametrize("replies,expected,schedule", RETRY_TABLE)
def test_retry_rule_matches_the_official_loop(items, replies, expected, schedule):
  item, output = items[1], "x = -1"
  ask, calls = scripted(replies)
  score, log = mmvet.judge(item, output, mmvet.parse(item, output), ask)
  assert score == expected and isinstance(score, float)
  assert len(calls) == len(replies) == len(schedule)  # no call more, none less
  assert [(c["temperature"], c["prompt"].endswith(OFFICIAL_SUFFIX)) for c in calls] == schedule
  plain = mmvet.GRADER_PROMPT + "\nWhat is x in the equation? | -1 <AND> -5 | x = -1 | "
  assert [c["prompt"] for c in calls] == [plain + OFFICIAL_SUFFIX * retry for _, retry in schedule]
  assert {c["max_tokens"] for c in calls} == {3}
  # every reply is logged with its call, and whether the rule gave up
  assert [c["reply"] for c in log["calls"]] == replies
  assert [(c["temperature"], c["retry"]) for c in log["calls"]] == schedule
  assert log["judged"] is True and log["score"] == expected
  assert log["gave_up"] is (len(schedule) == 6)
  json.dumps(log)  # the harness writes it into the predictions row


def test_nan_is_a_score_as_float_reads_it(items):
  # float("nan") passes the official range test (neither > 1.0 nor < 0.0): one call
  ask, calls = scripted(["nan"])
  score, _ = mmvet.judge(items[0], "a meme", None, ask)
  assert math.isnan(score) and len(calls) == 1


# ------------------------------------------------------------------------ aggregation


def test_parse_and_verdict():
  item = BenchItem(id="v1_9", question="q", options=(), answer="a")
  assert mmvet.parse(item, "a") is None  # nothing is scored without the judge
  assert mmvet.is_correct(item, 1.0) and mmvet.is_correct(item, 1)
  assert not mmvet.is_correct(item, 0.9) and not mmvet.is_correct(item, None)


# Planted judged scores for the fixture's v1_0..v1_5 (v1_4 never judged: 0 in the sums,
# kept in the counts, as the evaluator grades every item and a failed grading is 0.0).
PLANTED = [1.0, 0.5, 0.0, 0.7, None, 0.3]
# By hand from export_result's rule (sum of the scores of the items having the
# capability / their count x 100; total = sum / all items x 100):
BY_HAND = {
    "total": (1.0 + 0.5 + 0.0 + 0.7 + 0.0 + 0.3) / 6 * 100,  # 41.67
    "capability/rec": (1.0 + 0.7 + 0.3) / 3 * 100,  # v1_0, v1_3, v1_5: 66.67
    "capability/ocr": (0.5 + 0.0 + 0.0 + 0.3) / 4 * 100,  # v1_1, v1_2, v1_4, v1_5: 20
    "capability/know": 1.0 / 1 * 100,
    "capability/gen": 1.0 / 1 * 100,
    "capability/spat": (0.5 + 0.0) / 2 * 100,  # v1_1, v1_4: 25
    "capability/math": (0.5 + 0.0) / 2 * 100,  # v1_1, v1_2: 25
    # the "cap-int" table: items whose capability set is exactly this one
    "integration/rec_know_gen": 100.0,
    "integration/ocr_spat_math": 50.0,
    "integration/ocr_math": 0.0,
    "integration/rec": 70.0,
    "integration/ocr_spat": 0.0,
    "integration/rec_ocr": 30.0,
}
# What the evaluator itself printed for these scores (v1_4 graded 0.0), 1 decimal:
# cap-score  {ocr: 20.0, rec: 66.7, math: 25.0, spat: 25.0, know: 100.0, gen: 100.0,
#             total: 41.7}
# cap-int    {know_rec_gen: 100.0, math_spat_ocr: 50.0, math_ocr: 0.0, rec: 70.0,
#             spat_ocr: 0.0, rec_ocr: 30.0, total: 41.7}  (names in Python set order)
OFFICIAL_ROUNDED = {
    "total": 41.7,
    "capability/rec": 66.7,
    "capability/ocr": 20.0,
    "capability/know": 100.0,
    "capability/gen": 100.0,
    "capability/spat": 25.0,
    "capability/math": 25.0,
    "integration/rec_know_gen": 100.0,
    "integration/ocr_spat_math": 50.0,
    "integration/ocr_math": 0.0,
    "integration/rec": 70.0,
    "integration/ocr_spat": 0.0,
    "integration/rec_ocr": 30.0,
}


def test_scores_aggregate_per_capability_as_the_official(items):
  out = mmvet.score(items, PLANTED)
  for key, value in BY_HAND.items():
    assert out[key] == pytest.approx(value, rel=1e-12), key
    assert round(out[key], 1) == OFFICIAL_ROUNDED[key], key
  assert (out["num_items"], out["unparsed"]) == (6, 1)
  expected_keys = set(BY_HAND) | {"num_items", "unparsed"}
  assert set(out) == expected_keys
  # a planted score change moves only the keys of that item's capabilities
  moved = mmvet.score(items, [1.0, 0.5, 0.0, 0.7, 1.0, 0.3])
  changed = {k for k in out if out[k] != moved[k]}
  assert changed == {
      "total",
      "capability/ocr",
      "capability/spat",
      "integration/ocr_spat",
      "unparsed",
  }
  with pytest.raises(ValueError):
    mmvet.score(items, PLANTED[:-1])


def test_judged_scores_feed_the_aggregation(items):
  """judge then score over the fixture, with a judge that answers by question."""
  replies = {"v1_0": "1.0", "v1_1": "0.5", "v1_2": "zero", "v1_3": "0.7", "v1_5": "0.3"}
  scores = []
  for it in items:
    if it.id == "v1_4":
      scores.append(None)
      continue
    reply = replies[it.id]
    ask, _ = scripted([reply, "0.0"])  # "zero" fails once, then 0.0
    scores.append(mmvet.judge(it, "an answer", mmvet.parse(it, "an answer"), ask)[0])
  assert scores == PLANTED
  assert [mmvet.is_correct(it, s) for it, s in zip(items, scores)] == [
      True,
      False,
      False,
      False,
      False,
      False,
  ]
  assert round(mmvet.score(items, scores)["total"], 1) == 41.7

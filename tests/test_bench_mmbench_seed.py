"""MMBench (CircularEval) and SEED-Bench: loaders on public-layout fixtures, VLMEvalKit's
prompt, its can_infer v1 matching and LLM-judge fallback, the official scores on planted
predictions, format errors.

Rules (github.com/open-compass/VLMEvalKit @aca64dbb3113ebf09683e379c65fb8b5107cba3f):
  prompt    vlmeval/dataset/image_mcq.py ImageMCQDataset.build_prompt
  matching  vlmeval/utils/matching_util.py can_infer_option / can_infer_text / can_infer (v1)
  no judge  vlmeval/dataset/utils/multiple_choice.py extract_answer_from_item: 'Z' (wrong)
  judge     same file: build_prompt / build_prompt_cn, 3 tries, then a random letter or Z
  circular  same file: mcq_circular_eval (a question counts only if every rotation is right)
Expected values come from those functions (executed on these inputs), not from ours."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest
from benchmark_fixtures import mmbench as mmb_fixture
from benchmark_fixtures import seedbench as seed_fixture

from dsvl_jax.eval.benchmarks import choice, mmbench, seedbench
from dsvl_jax.eval.benchmarks.base import BenchItem, BenchmarkFormatError
from dsvl_jax.eval.judge import JudgeError

ABCD = "ABCD"
# ImageMCQDataset.build_prompt's closing line is "Please select the correct answer from the
# options above. \n"; DeepSeek-VL's processor strips the message, so the model sees:
INSTRUCTION = "Please select the correct answer from the options above."


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


def vlmevalkit_prompt(question, options, hint=None):
  """ImageMCQDataset.build_prompt's text (image_mcq.py @aca64dbb), before the strip."""
  text = f"Hint: {hint}\n" if hint is not None else ""
  text += f"Question: {question}\nOptions:\n"
  text += "".join(f"{k}. {v}\n" for k, v in zip(ABCD, options))
  return text + "Please select the correct answer from the options above. \n"


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
  # = the image first, no separator, then VLMEvalKit's text as the processor strips it
  assert (
      mmbench.prompt(items["27"])
      == "<image_placeholder>"
      + vlmevalkit_prompt(
          "How many squares are in the image?", ("1", "2", "3"), "Count only the filled shapes."
      ).strip()
  )
  # the hint keeps its quotes and newline through the TSV's quoting
  assert mmbench.prompt(items["113"]).startswith(
      '<image_placeholder>Hint: The sign reads one "word".\nIt is in upper case.\n'
      "Question: Which word is written in the image?\n"
  )
  cn = mmbench.prompt(items["240"])  # MMBench-CN: the same English frame
  assert (
      cn
      == "<image_placeholder>"
      + vlmevalkit_prompt(
          "图中的三角形是什么颜色？", ("红色", "绿色", "蓝色", "黄色"), "请仔细观察图片。"
      ).strip()
  )


def test_published_setup():
  # vlmeval/vlm/deepseek_vl.py default_kwargs: max_new_tokens=512, do_sample=False
  for module in (mmbench, seedbench):
    assert module.MAX_NEW_TOKENS == 512
    assert "can_infer v1 @aca64dbb" in module.SETUP and "build_prompt" in module.SETUP
    assert module.JUDGE == "fallback" and module.judge is choice.judge
  assert "CircularEval" in mmbench.SETUP


# ---- MMBench: CircularEval -----------------------------------------------------------


def right_letter(item, questions):
  """The letter of the fixture's correct text in this rotation (not item.answer)."""
  q = questions[item.group]
  return ABCD[item.options.index(q["options"][ABCD.index(q["answer"])])]


def planted_outputs(items):
  """15: every rotation right, in the phrasings can_infer v1 reads (a letter token, the
  option's text); 27: rotation 2 wrong; 113: rotation 1 names two letters (unmatched:
  'Z'); 240: rotation 0 wrong, rotation 2 unmatched ('答案：C' is one token: the
  full-width colon is no separator); 1001: every rotation right."""
  questions = {str(q["index"]): q for q in mmb_fixture.QUESTIONS}
  outputs = []
  for item in items:
    k = item.extra["rotation"]
    good = right_letter(item, questions)
    bad = ABCD[(ABCD.index(good) + 1) % len(item.options)]
    text = item.options[ABCD.index(good)]
    out = {
        "15": [f"Option {good}", f"{good}, because it is {text}", f"I think it is {text}", good],
        "27": [good, f"Answer: {good}", bad],
        "113": [good, f"The answer is {good}, not {bad}.", f"({good}) {text}", good],
        "240": [bad, f"答案是{text}。", f"答案：{good}", good],
        "1001": [f"The answer is {good}", f"{good}) {text}"],
    }[item.group][k]
    outputs.append(out)
  return outputs


@pytest.mark.parametrize("circular", [False, True])
def test_mmbench_circular_eval(tmp_path, circular):
  items = mmbench.load(mmb_fixture.build(tmp_path, circular=circular))
  parsed = [mmbench.parse(m, o) for m, o in zip(items, planted_outputs(items))]
  assert parsed.count("Z") == 2  # 113 rotation 1, 240 rotation 2
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
      "unparsed": 2,  # the 'Z' predictions, scored wrong and kept in the denominator
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
    unparsed[k] = "Z"
    metrics = mmbench.score(items, unparsed)
    assert metrics["circular_accuracy"] == 0.0 and metrics["unparsed"] == 1
    # rotation 0 alone decides the vanilla number
    assert metrics["vanilla_accuracy"] == (0.0 if k == 0 else 1.0)


# ---- can_infer v1 -----------------------------------------------------------------

# Section 1.6's table, v1 column: VLMEvalKit vlmeval/utils/matching_util.py can_infer at
# aca64dbb3113ebf09683e379c65fb8b5107cba3f (the 2024 leaderboard rule), executed on these
# outputs with choices {'A': 'red car', 'B': 'blue boat', 'C': 'green tree',
# 'D': 'yellow house'}. can_infer's False is None here; without a judge,
# multiple_choice.py extract_answer_from_item then predicts 'Z' (the last column).
CAR_BOAT = ("red car", "blue boat", "green tree", "yellow house")
V1_TABLE = [  # (raw output, can_infer v1, prediction under exact matching)
    ("Option B", "B", "B"),
    ("B, because it is blue boat", "B", "B"),  # letter anywhere (v1: no last-4-token rule)
    ("I think it is green tree", "C", "C"),  # option text inside the answer
    ("The answer is D, not A.", None, "Z"),  # two letters: unmatched
    ("(B) text", "B", "B"),
    ("B", "B", "B"),
    ("A dog is on the left.", "A", "A"),  # v1 reads the article as option A
    ("The correct answer is **C**. Here's why: the tree is green.", "C", "C"),
    ("The answer is B because the boat in the picture is blue and floating on water", "B", "B"),
    ("b", None, "Z"),  # letters are upper case only
    ("Answer: B", "B", "B"),
    ("Z", "Z", "Z"),
]
# More outputs, executed against the same can_infer (aca64dbb) with the same choices.
V1_MORE = [
    ("Cannot determine the answer", "Z", "Z"),  # one of the refusal strings
    ("Failed to obtain answer via API: red car", "A", "A"),  # no letter match; text still
    ("", None, "Z"),
    ("A or B", None, "Z"),
    ("B.", "B", "B"),
    ("B)", "B", "B"),
    ("**D**", "D", "D"),
    ("The answer is (C).", "C", "C"),
    ("C\n", "C", "C"),
    ("Red car?", "A", "A"),  # text match is case-insensitive
    ("Blue Boat.", "B", "B"),
    ("red car or blue boat", None, "Z"),  # two option texts
    ("Answer: b", None, "Z"),
    ("Ｂ", None, "Z"),  # a full-width letter is not the letter
    ("答案：B", None, "Z"),  # '：' is no separator: one token
    ("E", None, "Z"),  # not an option letter
    ("It looks like a fire truck", None, "Z"),
]


@pytest.mark.parametrize("output, inferred, predicted", V1_TABLE + V1_MORE)
def test_can_infer_v1(output, inferred, predicted):
  assert choice.can_infer(output, choice.item_choices(CAR_BOAT)) == inferred
  assert choice.match(output, CAR_BOAT) == predicted
  item = BenchItem(id="1", question="q", options=CAR_BOAT, answer="B")
  assert mmbench.parse(item, output) == seedbench.parse(item, output) == predicted
  assert mmbench.is_correct(item, predicted) == (predicted == "B")


# MMBench-CN and short option sets; executed against can_infer @aca64dbb as above.
@pytest.mark.parametrize(
    "options, output, predicted",
    [
        (("红色", "绿色", "蓝色", "黄色"), "蓝色", "C"),
        (("红色", "绿色", "蓝色", "黄色"), "答案是蓝色。", "C"),
        (("红色", "绿色", "蓝色", "黄色"), "C. 蓝色", "C"),
        (("红色", "绿色", "蓝色", "黄色"), "答案是 C", "C"),
        (("红色", "绿色", "蓝色", "黄色"), "答案：C", "Z"),
        (("红色", "绿色", "蓝色", "黄色"), "选C", "Z"),
        (("红色", "绿色", "蓝色", "黄色"), "红色或蓝色", "Z"),
        (("1", "2", "3"), "2", "B"),  # the option text "2"
        (("1", "2", "3"), "There are 2 squares, not 3", "Z"),
        (("1", "2", "3"), "D", "Z"),  # past the last option
        (("1", "2", "3"), "Two", "Z"),
    ],
)
def test_can_infer_v1_other_options(options, output, predicted):
  assert choice.match(output, options) == predicted


# ---- the LLM-judge fallback ----------------------------------------------------------

CIRCLE = BenchItem(
    id="15",
    question="What color is the circle?",
    options=("red", "green", "blue", "yellow"),
    answer="A",
)
# vlmeval/dataset/utils/multiple_choice.py build_prompt(question, build_option_str(choices),
# prediction) @aca64dbb (build_option_str: vlmeval/smp/vlm.py), executed for CIRCLE and the
# output "It looks like a fire truck". Note the doubled "?" the template adds.
CIRCLE_JUDGE_PROMPT = (
    "You are an AI assistant who will help me to match an answer with several options of a "
    "single-choice question. You are provided with a question, several options, and an answer, "
    "and you need to find which option is most similar to the answer. If the meaning of all "
    "options are significantly different from the answer, output Z. Your should output a single "
    "uppercase character in A, B, C, D (if they are valid options), and Z. \nExample 1: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: a cute teddy bear\nYour output: A\nExample 2: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: Spider\nYour output: Z\nExample 3: \n"
    "Question: What color is the circle??\nOptions: There are several options: \n"
    "A. red\nB. green\nC. blue\nD. yellow\n\nAnswer: It looks like a fire truck\nYour output: "
)
# build_prompt_cn, chosen by cn_string(question) (vlmeval/smp/misc.py), same commit.
TRIANGLE = BenchItem(
    id="240",
    question="图中的三角形是什么颜色？",
    options=("红色", "绿色", "蓝色", "黄色"),
    answer="C",
)
TRIANGLE_JUDGE_PROMPT = (
    "你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。你会被提供：一个问题，多个选项，一个答案。"
    "你的任务是找到与答案意义最相近的选项。如果所有选项的意义都与答案显著不同，则输出 Z。"
    "你应该输出一个单个的大写字母，例如 A, B, C, D（如果它们是有效选项），或 Z。例 1:"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 一只可爱的泰迪熊\n输出: A\n"
    "例 2: \n问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 蜘蛛\n输出: Z\n"
    "例 3: \n问题: 图中的三角形是什么颜色？?\n选项: There are several options: \n"
    "A. 红色\nB. 绿色\nC. 蓝色\nD. 黄色\n\n答案: 不知道\n输出: "
)


def scripted(*replies):
  """An `ask` that answers with `replies` in turn and records each request."""
  calls = []

  def ask(prompt, max_tokens, temperature):
    calls.append((prompt, max_tokens, temperature))
    return replies[len(calls) - 1]

  return ask, calls


def test_judge_not_asked_when_can_infer_matches():
  def ask(*args):
    raise AssertionError("the judge must not be asked")

  for output, letter in [
      ("B", "B"),
      ("I think it is blue", "C"),
      ("Cannot determine the answer", "Z"),
  ]:
    parsed = mmbench.parse(CIRCLE, output)
    assert parsed == letter
    assert mmbench.judge(CIRCLE, output, parsed, ask) == (letter, {})


def test_judge_matches_an_unmatched_answer():
  output = "It looks like a fire truck"
  assert mmbench.parse(CIRCLE, output) == "Z"
  ask, calls = scripted("B")
  assert mmbench.judge(CIRCLE, output, "Z", ask) == ("B", {"judged": True, "replies": ["B"]})
  # VLMEvalKit's prompt; the request as OpenAIWrapper's defaults make it (gpt.py @aca64dbb)
  assert calls == [(CIRCLE_JUDGE_PROMPT, 2048, 0.0)]


def test_judge_prompt_in_chinese_for_chinese_questions():
  ask, calls = scripted("选项 C", "C")
  parsed, log = seedbench.judge(TRIANGLE, "不知道", "Z", ask)
  assert calls[0][0] == TRIANGLE_JUDGE_PROMPT
  # "选项 C" has the token C: matched on the first reply
  assert (parsed, log) == ("C", {"judged": True, "replies": ["选项 C"]})


def test_judge_retries_then_matches():
  # each reply goes through can_infer; a reply with the API's failure text is not read
  # (it would text-match "red"), it only spends a try
  ask, calls = scripted("I am not sure", "Failed to obtain answer via API: red", "The answer is C")
  parsed, log = mmbench.judge(CIRCLE, "It looks like a fire truck", "Z", ask)
  assert parsed == "C" and len(calls) == 3
  assert log == {
      "judged": True,
      "replies": ["I am not sure", "Failed to obtain answer via API: red", "The answer is C"],
  }
  ask, _ = scripted("Z")  # the judge's "no option matches": wrong
  parsed, _ = mmbench.judge(CIRCLE, "It looks like a fire truck", "Z", ask)
  assert parsed == "Z" and not mmbench.is_correct(CIRCLE, parsed)


def test_judge_random_pick_after_three_useless_replies():
  useless = ("hmm", "A or B", "b")
  picks = {}
  for n in range(40):
    item = BenchItem(id=f"q{n}", question="Which?", options=("x", "y", "z"), answer="A")
    ask, calls = scripted(*useless)
    parsed, log = seedbench.judge(item, "no idea", "Z", ask)
    assert len(calls) == 3  # JUDGE_TRIES, no more
    assert log == {"judged": True, "replies": list(useless), "random_pick": True}
    assert parsed in ("A", "B", "C", "Z")  # VLMEvalKit: rd.choice(list(choices) + ['Z'])
    # seeded by the item id: a rerun (or a resumed run) picks the same
    again, _ = seedbench.judge(item, "no idea", "Z", scripted(*useless)[0])
    assert again == parsed
    picks[item.id] = parsed
  assert set(picks.values()) == {"A", "B", "C", "Z"}  # a pick, not a constant


def test_judge_errors_propagate():
  def ask(*args):
    raise JudgeError("judge x: no answer")

  with pytest.raises(JudgeError, match="no answer"):
    mmbench.judge(CIRCLE, "It looks like a fire truck", "Z", ask)


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
  # SEEDBench_IMG is an ImageMCQDataset: the same build_prompt, no hint (image_mcq.py)
  assert seedbench.prompt(item) == (
      "<image_placeholder>Question: How many circles are in the image?\n"
      "Options:\nA. One\nB. Two\nC. Three\nD. Four\n" + INSTRUCTION
  )
  assert (
      seedbench.prompt(item)
      == "<image_placeholder>"
      + vlmevalkit_prompt(
          "How many circles are in the image?", ("One", "Two", "Three", "Four")
      ).strip()
  )


def test_seed_scores(tmp_path):
  """Vanilla evaluation (mcq_vanilla_eval): hit = prediction == answer per question;
  accuracy = mean hit (report_acc Overall), per dimension likewise; 'Z' is a miss."""
  items = seedbench.load(seed_fixture.build(tmp_path))
  outputs = {
      "101669": "C",  # right
      "101670": "I think it is light blue.",  # option text: B, right
      "101671": "The answer is D, not A.",  # two letters: Z (answer D)
      "101672": "A or B",  # two letters: Z (answer A)
      "101673": "A square.",  # the lone token A: A, right
  }
  parsed = [seedbench.parse(m, outputs[m.id]) for m in items]
  assert parsed == ["C", "B", "Z", "Z", "A"]
  assert seedbench.score(items, parsed) == {
      "accuracy": 3 / 5,
      "category/Instances Counting": 1.0,
      "category/Scene Understanding": 1.0,
      "category/Spatial Relation": 0.0,  # 'Z' counts wrong
      "category/Text Understanding": 0.0,
      "num_items": 5,
      "unparsed": 2,
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

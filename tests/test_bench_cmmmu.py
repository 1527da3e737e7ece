"""CMMMU: the loader on fixtures in both public layouts, VLMEvalKit's prompt with images at
the release's tags, the official answer rules as tables of raw outputs, the seeded random
picks in the official order, format errors, and a harness run that resumes.

Every expected parse and verdict below was computed by running the official code, the
CMMMU repository (CMMMU-Benchmark/CMMMU) `eval/utils/eval_utils.py` @e1ba883284c61e5f6bbf552
addb87f6e48de87bc (get_multi_choice_prediction, get_TF_prediction, get_fill_blank_prediction,
normalize_str, evaluate_response) driven as `eval/eval_response.py`
@6e0ae6dfc420d3044682b4b60a364e61d42ea364 does, in a scratch directory outside the repo (the
functions also match VLMEvalKit's copies in vlmeval/dataset/cmmmu.py @e8e78f05 statement for
statement). "RANDOM" rows are those where the official code calls random.choice.
"""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest
from benchmark_fixtures import cmmmu as fixture

from dsvl_jax.eval.benchmarks import cmmmu, registry
from dsvl_jax.eval.benchmarks.base import BenchItem, Benchmark, BenchmarkFormatError
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

PH = IMAGE_TOKEN
RED, BLUE, GREEN = fixture.RED, fixture.BLUE, fixture.GREEN


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return fixture.build(tmp_path_factory.mktemp("cmmmu"))


@pytest.fixture(scope="module")
def github_root(tmp_path_factory):
  return fixture.build_jsonl(tmp_path_factory.mktemp("cmmmu_github"))


@pytest.fixture(scope="module")
def items(root):
  return cmmmu.load(root)


@pytest.fixture(scope="module")
def by_id(items):
  return {it.id: it for it in items}


def center(image):
  return image.getpixel((48, 48))


# ------------------------------------------------------------------ loading


def test_registry_module_satisfies_the_protocol():
  module = registry.get("cmmmu")
  assert module is cmmmu and isinstance(module, Benchmark)
  assert cmmmu.MAX_NEW_TOKENS == 512 and "VLMEvalKit" in cmmmu.SETUP


def test_loads_val_in_the_hugging_face_layout(items, by_id):
  # categories in eval_response.py's order, rows in file order
  assert [it.id for it in items] == ["201", "202", "301", "101", "102", "103", "104"]
  types = {it.id: it.extra["type"] for it in items}
  assert types == {
      "201": "判断",
      "202": "选择",
      "301": "填空",
      "101": "选择",
      "102": "填空",
      "103": "判断",
      "104": "选择",
  }
  it = by_id["101"]
  assert (it.category, it.answer, it.options) == (
      "science",
      "C",
      ("三角形", "正方形", "五边形", "圆形"),
  )
  assert (it.extra["subcategory"], it.extra["split"], it.extra["subfield"]) == (
      "数学",
      "val",
      "['图形']",
  )
  assert it.question == '如图<img="q_00101_001.png">所示的图形是（）'
  assert by_id["202"].answer == "AC" and by_id["202"].category == "art_and_design"
  assert by_id["201"].answer == "错" and by_id["201"].options == ()
  assert by_id["102"].answer == "12" and by_id["301"].category == "business"


def test_the_repository_jsonl_layout_gives_the_same_items(items, github_root):
  other = cmmmu.load(github_root)
  assert [it.id for it in other] == [it.id for it in items]
  for a, b in zip(items, other):
    assert (a.question, a.options, a.answer, a.category) == (
        b.question,
        b.options,
        b.answer,
        b.category,
    )
    assert cmmmu.prompt(a) == cmmmu.prompt(b)
    assert [center(x) for x in a.images()] == [center(x) for x in b.images()]
  assert other[0].extra["subfield"] == ["图形"]  # lists in the jsonl release


def test_splits_single_files_and_merged_layout(root, github_root, tmp_path):
  assert [it.id for it in cmmmu.load(root, split="dev")] == ["901"]
  assert [it.id for it in cmmmu.load(github_root, split="dev")] == ["901"]
  one = cmmmu.load(root / "science" / "val-00000-of-00001.parquet")
  assert [it.id for it in one] == ["101", "102", "103", "104"]
  jsonl = github_root / "cmmmu-data-val" / "business" / "business.jsonl"
  assert [it.id for it in cmmmu.load(jsonl)] == ["301"]
  # lmms-lab/CMMMU: the same columns merged into data/<split>-*.parquet
  rows = []
  for f in sorted(root.glob("*/val-*.parquet")):
    rows += pq.read_table(f).to_pylist()
  fixture.write_parquet(tmp_path / "data" / "val-00000-of-00001.parquet", rows)
  assert {it.id for it in cmmmu.load(tmp_path)} == {it.id for it in cmmmu.load(root)}
  with pytest.raises(ValueError, match="split"):
    cmmmu.load(root, split="validation")


def test_multiple_choice_prompt_is_vlmevalkits(by_id):
  # vlmeval/dataset/cmmmu.py CMMMU.build_prompt @e8e78f05, the image at its tag
  assert cmmmu.prompt(by_id["101"]) == (
      f"问题: 如图{PH}所示的图形是（）\nOptions:\nA. 三角形\nB. 正方形\nC. 五边形\nD. 圆形\n"
      "请回答上述多项选择题，并选出正确选项。这些题目可能包括单选和多选题型。"
      "如果所提供的信息不足以确定一个明确的答案，那么请根据可用的数据和你的判断来选择最可能正确的选项。"
  )
  assert [center(x) for x in by_id["101"].images()] == [GREEN]


def test_two_images_go_where_their_tags_are(by_id):
  it = by_id["103"]  # tags: q_00103_002 (blue square) first, then q_00103_001 (red circle)
  assert it.num_images == 2
  assert cmmmu.prompt(it) == (
      f"{PH}中的图形比{PH}中的图形大。（）\n"
      "请回答上述判断题，并根据题目描述和所给的信息来判断问题中陈述的对错。"
      "如果信息不完整或不足以作出绝对判断，请运用你的逻辑推理和现有信息来做出最可能的判断。"
  )
  assert [center(x) for x in it.images()] == [BLUE, RED]


def test_option_images_and_untagged_images(by_id):
  it = by_id["104"]  # img_list / image_k order: a_..001, a_..002, q_..001
  assert cmmmu.prompt(it).startswith(
      f"问题: 与{PH}形状相同的是（）\nOptions:\nA. {PH}\nB. {PH}\nC. 都不是\nD. 都是\n"
  )
  assert [center(x) for x in it.images()] == [GREEN, BLUE, RED]
  fill = by_id["301"]  # its image is named by no tag: shown before the text
  assert cmmmu.prompt(fill) == (
      f"{PH}上表中利润最高的是_公司\n"
      "请回答上述填空题，并根据题目的要求和所提供的信息来给出最恰当的答案。"
      "如果信息不足以确切回答，那么请依据现有的数据和你的推理能力来填写最合理的答案。"
  )
  assert fill.num_images == 1


# ------------------------------------------------------------------ official rules

RANDOM = "RANDOM"
OPTS = ("三角形", "正方形", "五边形", "圆形")
COLOURS = ("红色", "绿色", "蓝色", "黑色")

# 选择: (raw output, options, answer, official predicted_answer, official verdict).
# get_multi_choice_prediction(response, ['A','B','C','D'], index2ans) under
# evaluate_response (eval_utils.py @e1ba883): bracketed letters counted, else bare
# capital letters anywhere, else option texts; most frequent joined in A-D order;
# empty response -> no prediction ("") and wrong; nothing found -> random.choice.
MC_TABLE = [
    ("C", OPTS, "C", "C", True),
    ("(C) 五边形", OPTS, "C", "C", True),
    ("正确答案是(C) 五边形。", OPTS, "C", "C", True),
    ("Answer: C", OPTS, "C", "AC", False),  # the A of "Answer" ties with C
    ("答案是B", OPTS, "C", "B", False),
    ("The answer is B", OPTS, "B", "B", True),
    ("Based on the image, the answer is D", OPTS, "D", "BD", False),
    ("C.", OPTS, "C", "C", True),
    ("'C'", OPTS, "C", "C", True),
    ("(A)(B)", OPTS, "C", "AB", False),
    ("(B) 正方形，不是(C)", OPTS, "C", "BC", False),
    ("五边形", OPTS, "C", "C", True),  # option text, any length
    ("圆形和正方形", OPTS, "D", "BD", False),
    ("C\n因为它有五条边", OPTS, "C", "C", True),
    # Yi-VL-34B's answer to val id 11907 (eval/example/Yi-VL-34B-response/science.jsonl)
    (
        "(A) 往碳酸镁中加入稀盐酸:\n(B) 浓碱溶液中加入铝片:\n(C) 氯化钙与碳酸氢钾溶液混合: \n"
        "(D) 用惰性电极电解氯化溶液:",
        OPTS,
        "C",
        "ABCD",
        False,
    ),
    ("(A) 红色 (C) 蓝色", COLOURS, "AC", "AC", True),  # several letters: a multi-answer item
    ("A和C", COLOURS, "AC", "AC", True),
    ("红色", COLOURS, "AC", "A", False),
    ("我不知道", ("是", "否", "", ""), "A", "CD", False),  # an empty option text occurs everywhere
    # the edge characters are stripped one after the other, whitespace is not
    ("答案 3.\n", ("1.", "2.", "3.", "4."), "C", "C", True),
    ("3,.", ("1,", "2,", "3,", "4,"), "C", "C", True),
    ("答案 3.", ("1.", "2.", "3.", "4."), "C", RANDOM, None),
    ("", OPTS, "C", "", False),  # no prediction, no random pick
    ("无法确定", OPTS, "C", RANDOM, None),
    ("   ", ("是", "否", "", ""), "A", RANDOM, None),  # no word: option texts are not tried
    ("(c)", OPTS, "C", RANDOM, None),
    ("正确答案是30秒。", OPTS, "A", RANDOM, None),  # Yi-VL-34B, val id 10441
]

# 判断: (raw output, answer, official vote, official verdict). get_TF_prediction's key
# phrases, phrases with an ambiguous word dropped, positive ('正确','对',...) before
# negative words per phrase, the majority; a tie -> random.choice(['对', '错'])
# (evaluate_response, eval_utils.py @e1ba883).
TF_TABLE = [
    ("正确", "对", "对", True),
    ("错误", "错", "错", True),
    ("对", "对", "对", True),
    ("错", "错", "错", True),
    ("不对", "错", "对", False),  # holds 对
    ("不正确", "错", "对", False),  # holds 正确
    ("该说法不准确", "错", "对", False),  # holds 准确
    ("这个说法是错误的。", "错", "错", True),
    ("陈述正确", "对", "对", True),
    ("答案：对。这个说法是正确的", "对", "对", True),
    ("正确。\n错误。", "对", "对", True),  # no indicator word: the whole text, holding 正确
    ("1. 线粒体起源于细菌。（对）\n2. 二者共生联系更加密切。（对）", "对", "对", True),
    # Yi-VL-34B, val id 2014: the key phrase after 是 holds no 是否 but 否既有...
    (
        "这个问题没有足够的信息来给出一个确定的答案。我们需要更多的信息来确定B是否既有顺反结构又有对映异构。",
        "错",
        "对",
        False,
    ),
    ("我无法判断对错", "对", RANDOM, None),  # the phrase "对错" is ambiguous
    ("结果为正确，答案是", "对", RANDOM, None),  # 是's empty tail gives way; 答案's "是" wins
    ("", "对", RANDOM, None),
    ("The statement is true.", "对", RANDOM, None),
]

# 填空: (raw output, answer, official get_fill_blank_prediction (sorted), verdict).
# Key phrases after 是/为/所以/等于/.../答案/结果 ('=' in the last sentence), numbers in them,
# normalize_str against the answer; right when a text candidate contains the answer
# text or a number equals the answer's number (evaluate_response, eval_utils.py @e1ba883).
FILL_TABLE = [
    ("12", "12", [12.0], True),
    ("答案是12。", "12", [12.0], True),
    ("12.0", "12", [12.0], True),
    ("十二", "12", ["十二"], False),
    ("首先，计算得到 x = 3 + 9 = 12", "12", [12.0], True),
    ("P点离焦点的距离为0.36mm", "0.36", [0.36, "0.36mm"], True),
    ("甲公司", "甲", ["甲公司"], True),
    ("利润最高的是乙公司，不是甲公司", "甲", ["甲公司"], True),  # after the last 是
    ("1000", "1,000", [1000.0], True),
    ("摩擦力为34.64N", "34.6", [34.64, "34.64N"], False),
    ("34.6 N", "34.6", [34.6, "34.6 N"], True),
    ("12，000", "12", [0.0, 1.0, "12，000"], False),
    ("", "12", [""], False),
    ("B", "A", ["B"], False),
    ("a", "A", ["a"], False),
    ("PAX5 gene", "pax5", [5.0], False),  # too many letters more than the answer: dropped
    ("pax5", "pax5", [5.0, "pax5"], True),
    (
        "这是一种常见于变质岩中的线理，它的形成与构造运动密切相关，具体为拉伸",
        "拉伸",
        ["拉伸"],
        True,
    ),
    (
        "它的名称是拉伸线理，这种线理常见于变质岩中并与构造运动密切相关",
        "拉伸",
        [],  # the tail after 是 is > 20 characters longer than the answer: dropped
        False,
    ),
    ("首先，我们需要计算飞轮的角速度。所以动能等于490J", "490", [490.0, "490J"], True),
    ("β_A < β_B", "<", ["β_A < β_B"], True),
    ("1/2", "0.5", [1.0, 2.0, "1/2"], False),
    ("12.004", "12", [12.0], True),  # rounded to 2 decimals
    (" 甲。", "甲", ["甲"], True),  # no key phrase: the stripped response
    ("答案是:", "12", ["答案是:"], False),  # a lone punctuation tail does not count
    ("结果为12，答案是", "12", ["是"], False),  # an empty tail gives way to a longer one
    ("x = 12\n所以答案是13", "12", [13.0], False),  # "=" counts in the last sentence only
]


def _item(qtype, answer, options=(), category="science", item_id="1"):
  return BenchItem(
      id=item_id,
      question="",
      options=tuple(options),
      answer=answer,
      category=category,
      extra={"type": qtype, "leading_images": 0},
  )


@pytest.mark.parametrize("output,options,answer,official,verdict", MC_TABLE)
def test_multiple_choice_table(output, options, answer, official, verdict):
  item = _item("选择", answer, options)
  parsed = cmmmu.parse(item, output)
  if official == RANDOM:
    assert parsed is None and cmmmu.fallback(item, output)
    assert not cmmmu.is_correct(item, parsed)
  else:
    assert parsed == official and not cmmmu.fallback(item, output)
    assert cmmmu.is_correct(item, parsed) is verdict
    assert cmmmu.is_correct(item, json.loads(json.dumps(parsed))) is verdict


@pytest.mark.parametrize("output,answer,official,verdict", TF_TABLE)
def test_true_false_table(output, answer, official, verdict):
  item = _item("判断", answer)
  parsed = cmmmu.parse(item, output)
  if official == RANDOM:
    assert parsed is None and cmmmu.fallback(item, output)
  else:
    assert parsed == official and not cmmmu.fallback(item, output)
    assert cmmmu.is_correct(item, parsed) is verdict


@pytest.mark.parametrize("output,answer,official,verdict", FILL_TABLE)
def test_fill_in_table(output, answer, official, verdict):
  item = _item("填空", answer)
  parsed = cmmmu.parse(item, output)
  assert list(parsed) == official and not cmmmu.fallback(item, output)
  assert cmmmu.is_correct(item, parsed) is verdict
  # as the predictions file gives it back
  assert cmmmu.is_correct(item, json.loads(json.dumps(parsed))) is verdict


# ------------------------------------------------------------------ scoring


def test_score_of_planted_answers_on_the_fixture(items):
  """Official eval_response.py run on these rows and responses: art_and_design 1/2,
  business 1/1, science 1/4 (the three random picks, drawn in its order, all wrong)."""
  outputs = {
      "201": "无法判断",  # no vote: random
      "202": "(A) 红色 (C) 蓝色",
      "301": "利润最高的是甲公司。",
      "101": "我不确定",  # no letter: random
      "102": "答案是13",
      "103": "",  # no vote: random
      "104": "Answer: A",  # A counted twice: "A"
  }
  parsed = [cmmmu.parse(it, outputs[it.id]) for it in items]
  assert sum(cmmmu.fallback(it, outputs[it.id]) for it in items) == 3
  expected = {
      "accuracy": 3 / 7,
      "category/art_and_design": 0.5,
      "category/business": 1.0,
      "category/science": 0.25,
      "accuracy_multiple_choice": 2 / 3,
      "accuracy_true_false": 0.0,
      "accuracy_fill_blank": 0.5,
      "num_items": 7,
      "unparsed": 3,
      "fallbacks_right": 0,
  }
  assert cmmmu.score(items, parsed) == pytest.approx(expected)
  assert cmmmu.score(items, json.loads(json.dumps(parsed))) == pytest.approx(expected)


def _synthetic():
  """24 questions, every answer a random pick, four categories interleaved."""
  cats = ["science", "art_and_design", "technology_and_engineering", "business"]
  out = []
  for k in range(24):
    mc = (k // 4) % 2 == 0
    answer = "ABCD"[k % 4 if k % 3 else (k + 1) % 4] if mc else "对错"[(k // 3) % 2]
    options = ("甲", "乙", "丙", "丁") if mc else ()
    out.append(_item("选择" if mc else "判断", answer, options, cats[k % 4], str(k + 1)))
  return out


# Per-item verdicts of the official run on _synthetic()'s questions, each category's rows
# in list order, every response "无法确定" (eval_response.py @6e0ae6d, seed 42 at import).
SYNTHETIC_RIGHT = {"1", "4", "8", "9", "10", "12", "13", "14", "15", "18", "19", "21", "23"}


def test_random_picks_are_drawn_in_the_official_order():
  items = _synthetic()
  parsed = [cmmmu.parse(it, "无法确定") for it in items]
  assert parsed == [None] * 24
  flags, lucky = cmmmu.verdicts(items, parsed)
  assert {it.id for it, f in zip(items, flags) if f} == SYNTHETIC_RIGHT
  assert lucky == 13
  s = cmmmu.score(items, parsed)
  assert s["accuracy"] == pytest.approx(13 / 24)
  assert s["category/science"] == pytest.approx(4 / 6)
  assert s["category/art_and_design"] == s["category/business"] == pytest.approx(0.5)
  assert (s["unparsed"], s["fallbacks_right"]) == (24, 13)
  # drawing in the list's order instead would disagree on 8 items
  rng = random.Random(cmmmu.SEED)
  naive = [
      rng.choice(cmmmu.CHOICES if it.options else cmmmu.TF_ANSWERS) == it.answer for it in items
  ]
  assert sum(n != f for n, f in zip(naive, flags)) == 8
  # how the categories interleave does not matter, each category's row order does
  regrouped = sorted(items, key=lambda it: it.category)  # stable: row order kept
  flags2, _ = cmmmu.verdicts(regrouped, [None] * 24)
  assert {it.id for it, f in zip(regrouped, flags2) if f} == SYNTHETIC_RIGHT
  flags3, _ = cmmmu.verdicts(items[::-1], [None] * 24)
  assert {it.id for it, f in zip(items[::-1], flags3) if f} != SYNTHETIC_RIGHT


# ------------------------------------------------------------------ format errors


def test_a_bad_row_names_its_file_and_row(root, tmp_path):
  src = root / "science" / "val-00000-of-00001.parquet"
  rows = pq.read_table(src).to_pylist()
  rows[1]["type"] = "简答"
  bad = tmp_path / "science" / "val-00000-of-00001.parquet"
  fixture.write_parquet(bad, rows)
  with pytest.raises(
      BenchmarkFormatError, match=r"val-00000-of-00001\.parquet row 1 .*'102'.*简答"
  ):
    cmmmu.load(tmp_path)
  rows = pq.read_table(src).to_pylist()
  rows[0]["answer"] = "E"
  fixture.write_parquet(bad, rows)
  with pytest.raises(BenchmarkFormatError, match=r"row 0 .*answer 'E'"):
    cmmmu.load(bad)
  rows = pq.read_table(src).to_pylist()
  rows[2]["question"] = rows[2]["question"].replace("q_00103_001", "q_00103_009")
  fixture.write_parquet(bad, rows)
  with pytest.raises(BenchmarkFormatError, match=r'row 2 .*<img="q_00103_009.png">'):
    cmmmu.load(bad)


def test_a_missing_column_or_key_names_the_file(root, github_root, tmp_path):
  table = pq.read_table(root / "business" / "val-00000-of-00001.parquet")
  bad = tmp_path / "val-00000-of-00001.parquet"
  pq.write_table(table.drop(["image_1_filename"]), bad)
  with pytest.raises(
      BenchmarkFormatError, match=r"val-00000-of-00001\.parquet: no column 'image_1_filename'"
  ):
    cmmmu.load(bad)
  src = github_root / "cmmmu-data-val" / "science" / "science.jsonl"
  lines = src.read_text(encoding="utf-8").splitlines()
  row = json.loads(lines[1])
  del row["category"]
  lines[1] = json.dumps(row, ensure_ascii=False)
  d = tmp_path / "science"
  d.mkdir()
  for f in src.parent.iterdir():
    if f.suffix == ".png":
      (d / f.name).write_bytes(f.read_bytes())
  (d / "science.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
  with pytest.raises(BenchmarkFormatError, match=r"science\.jsonl:2: missing 'category'"):
    cmmmu.load(d / "science.jsonl")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(BenchmarkFormatError, match="no <category>/val-"):
    cmmmu.load(empty)


# ------------------------------------------------------------------ harness


class _Scripted:
  """An answerer that says "无法确定" to everything (the harness's answerer interface)."""

  batch_size = 3

  def __init__(self):
    self.lengths = []

  def identity(self, max_new_tokens=None):
    return {"model": "scripted", "max_new_tokens": max_new_tokens}

  def __call__(self, samples, max_new_tokens=None):
    self.lengths.append(max_new_tokens)
    return ["无法确定"] * len(samples)


def test_harness_scores_and_resumes(root, tmp_path):
  """Batched, written, resumed: the summary is the official one for these answers
  (eval_response.py on the fixture with every response "无法确定": art_and_design 0/2,
  business 0/1, science 2/4)."""
  from dsvl_jax.config.files import load_config
  from dsvl_jax.eval.harness import run_benchmark
  from dsvl_jax.models import VLMConfig
  from dsvl_jax.processor.layout import TokenLayout
  from dsvl_jax.processor.tokenizer import make_tokenizer

  cfg = VLMConfig.from_dict(load_config("configs/tiny.py").model)
  tok = make_tokenizer("builtin:bytes", TokenLayout.of(cfg))
  answerer = _Scripted()
  args = ("cmmmu", "cmmmu", str(root), answerer, tok, cfg, tmp_path)
  first = run_benchmark(*args, system_prompt="", progress=False)
  assert set(answerer.lengths) == {512}  # MAX_NEW_TOKENS
  assert first["num_items"] == 7 and first["generated_now"] == 7
  assert first["accuracy"] == pytest.approx(2 / 7)
  assert first["category/science"] == pytest.approx(0.5)
  assert (first["unparsed"], first["fallbacks"], first["fallbacks_right"]) == (5, 5, 2)
  again = run_benchmark(*args, system_prompt="", progress=False)
  assert again["generated_now"] == 0
  drop = ("generated_now", "seconds")
  assert {k: v for k, v in again.items() if k not in drop} == {
      k: v for k, v in first.items() if k not in drop
  }

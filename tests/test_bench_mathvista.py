"""MathVista testmini: both release layouts, the prompt, MathVista's own extraction and
scoring rules (tables of raw outputs executed against the official code), and the LLM
extraction fallback with a scripted judge.

Every expected value below was produced by executing the official functions of
lupantech/MathVista at 53d525874bdde205128e6b160b7357a88277d479 in a scratch directory
outside this repository, on this fixture's problems (tests/benchmark_fixtures/mathvista.py):
  evaluation/extract_answer.py::extract_answer(model, response, problem, quick_extract=True)
      (model: a stand-in whose get_response returns the scripted judge reply, or raises
      like an unreachable endpoint, whereupon extract_answer returns "")
  evaluation/calculate_score.py::normalize_extracted_answer(extraction, choices,
      question_type, answer_type, precision) and ::safe_equal(prediction, answer)
  evaluation/calculate_score.py::main (the scores) on a results file of the same problems
      (pandas 2.3, Levenshtein 0.27)
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from benchmark_fixtures import mathvista as fx

from dsvl_jax.eval.benchmarks import mathvista, registry
from dsvl_jax.eval.benchmarks.base import Benchmark, BenchmarkFormatError
from dsvl_jax.eval.judge import JudgeError
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

PIDS = [str(i) for i in range(1, 9)]


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory):
  return fx.build(tmp_path_factory.mktemp("mathvista_hf"))


@pytest.fixture(scope="module")
def gh_data(tmp_path_factory):
  return fx.build_github(tmp_path_factory.mktemp("mathvista_gh"))


@pytest.fixture(scope="module")
def items(hf_root):
  return {it.id: it for it in mathvista.load(hf_root)}


def center(image, xy=(48, 48)):
  return image.getpixel(xy)


def close(a, b, tol=40):
  return all(abs(x - y) <= tol for x, y in zip(a, b))


# ------------------------------------------------------------------ module and loading


def test_registered_and_satisfies_the_protocol():
  assert registry.get("mathvista") is mathvista and mathvista.NAME == "mathvista"
  assert isinstance(mathvista, Benchmark)
  # generate_response.py --max_new_tokens default; VLMEvalKit's DeepSeek-VL wrapper: 512
  assert mathvista.MAX_NEW_TOKENS == 512
  assert mathvista.JUDGE == "fallback" and "53d5258" in mathvista.SETUP


def test_loads_the_hugging_face_layout(items):
  assert sorted(items, key=int) == PIDS
  one = items["1"]
  assert one.options == ("triangle", "square", "pentagon", "circle")
  assert (one.answer, one.category, one.num_images) == ("pentagon", "geometry problem solving", 1)
  assert one.extra["question_type"] == "multi_choice" and one.extra["answer_type"] == "text"
  assert one.extra["precision"] is None and one.extra["metadata"]["skills"] == [
      "geometry reasoning"
  ]
  assert items["5"].extra["precision"] == 1 and items["6"].extra["precision"] == 2
  assert items["6"].extra["metadata"]["language"] == "chinese"
  assert items["4"].extra["unit"] == "g" and items["3"].options == ()
  assert items["7"].answer == "[2007, 2008]" and items["7"].extra["answer_type"] == "list"
  # the release's trailing spaces in choices are kept (pid 340 has them)
  assert items["8"].options == ("Legal ", "Code ", "Science")
  assert close(center(one.images()[0]), fx.GREEN)
  assert close(center(items["3"].images()[0], (20, 48)), fx.RED)


def test_the_github_layout_gives_the_same_items(gh_data, items):
  for source in (gh_data, gh_data.parent, gh_data / "testmini.json"):
    loaded = {it.id: it for it in mathvista.load(source)}
    assert sorted(loaded, key=int) == PIDS
    for pid in PIDS:
      a, b = loaded[pid], items[pid]
      assert (a.question, a.options, a.answer, a.category) == (
          b.question,
          b.options,
          b.answer,
          b.category,
      )
      assert a.extra == b.extra  # the query from query.json; precision 1 == 1.0
  jpeg = {it.id: it for it in mathvista.load(gh_data)}
  assert close(center(jpeg["1"].images()[0]), fx.GREEN)


def test_a_single_parquet_file_and_the_split_option(hf_root, tmp_path):
  one = mathvista.load(hf_root / "data" / fx.PARQUET_NAME)
  assert [it.id for it in one] == PIDS
  with pytest.raises(FileNotFoundError, match="test-"):
    mathvista.load(hf_root, split="test")
  (tmp_path / "data").mkdir()
  shutil.copy(hf_root / "data" / fx.PARQUET_NAME, tmp_path / "data" / "test-00000-of-00002.parquet")
  assert len(mathvista.load(tmp_path, split="test")) == 8


def test_the_prompt_is_the_query_after_the_image(items):
  assert mathvista.prompt(items["1"]) == (
      IMAGE_TOKEN + "Hint: Please answer the question and provide the correct option letter, "
      "e.g., A, B, C, D, at the end.\nQuestion: Which shape is drawn in the image?\n"
      "Choices:\n(A) triangle\n(B) square\n(C) pentagon\n(D) circle"
  )
  assert mathvista.prompt(items["4"]) == (
      IMAGE_TOKEN + "Hint: Please answer the question requiring an integer answer and provide "
      "the final value, e.g., 1, 2, 3, at the end.\nQuestion: What is the weight printed on "
      "the label? (Unit: g)"
  )


def _write_github(tmp_path, problems, queries=None):
  data = tmp_path / "data"
  (data / "images").mkdir(parents=True)
  for pid in problems:
    fx.image(pid).save(data / "images" / f"{pid}.jpg")
  (data / "testmini.json").write_text(json.dumps(problems))
  if queries is not None:
    (data / "query.json").write_text(json.dumps(queries))
  return data


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda p, q: p["2"].update(question_type="mc"), BenchmarkFormatError, "pid '2'.*mc"),
        (lambda p, q: p["1"].update(answer="hexagon"), BenchmarkFormatError, "not one of"),
        (lambda p, q: p["3"]["metadata"].pop("task"), BenchmarkFormatError, "no 'task'"),
        (lambda p, q: q.pop("5"), BenchmarkFormatError, "no query for pid '5'"),
        (lambda p, q: p["6"].update(image="images/missing.jpg"), FileNotFoundError, "missing"),
    ],
)
def test_format_errors_name_the_problem(tmp_path, change, error, message):
  problems, queries = fx.problems(), fx.queries()
  change(problems, queries)
  with pytest.raises(error, match=message):
    mathvista.load(_write_github(tmp_path, problems, queries))


def test_json_without_queries_and_parquet_without_a_column(tmp_path, hf_root):
  with pytest.raises(FileNotFoundError, match="query.json"):
    mathvista.load(_write_github(tmp_path / "a", fx.problems()))
  schema = fx.SCHEMA.remove(fx.SCHEMA.get_field_index("query"))
  rows = [{k: v for k, v in r.items() if k != "query"} for r in fx.rows()]
  fx.write_parquet(tmp_path / "b" / fx.PARQUET_NAME, rows, schema)
  with pytest.raises(BenchmarkFormatError, match="no column 'query'"):
    mathvista.load(tmp_path / "b")


# ------------------------------------------------------------------ the official rules

# (pid, output, judge reply or None for no judge,
#  official: LLM asked?, extraction, normalised prediction, safe_equal verdict)
# Rules: lupantech/MathVista @53d5258 evaluation/extract_answer.py::extract_answer
# (quick_extract=True; with no judge the failed LLM call leaves ""), and
# evaluation/calculate_score.py::normalize_extracted_answer + ::safe_equal. Outputs are
# as the official answer files hold them (stripped).
TABLE = [
    # multi_choice, choices triangle/square/pentagon/circle, answer "pentagon"
    ("1", "pentagon", None, False, "pentagon", "pentagon", True),
    ("1", "C", None, True, "", "square", False),  # empty: the shortest choice
    ("1", "C", "C", True, "C", "pentagon", True),
    ("1", 'The answer is "C".', None, False, "C", "pentagon", True),
    ("1", 'The answer is "(C) pentagon".', None, False, "(C) pentagon", "pentagon", True),
    ("1", "", None, False, "", "square", False),
    ("1", "Pentagon", "pentagon", True, "pentagon", "pentagon", True),
    ("1", 'The answer is "hexagon".', None, False, "hexagon", "pentagon", True),  # nearest
    ("1", 'The answer is "E".', None, False, "E", "square", False),  # beyond the choices
    ("1", 'The answer is "C". Not "A".', None, False, 'C". Not "A', "triangle", False),
    ("1", "I think it is (C).", "(C) pentagon", True, "(C) pentagon", "pentagon", True),
    ("1", "I think it is (C).", "C)", True, "C)", "square", False),
    # multi_choice, choices A..E, answer "E"
    ("2", "E", None, False, "E", "E", True),
    ("2", "(E)", None, True, "", "A", False),
    ("2", "(E)", "E", True, "E", "E", True),
    ("2", "e", "e", True, "e", "A", False),  # lower case is no letter: nearest, first
    # integer, answer "3"
    ("3", "3", None, False, "3", "3", True),
    ("3", "+3", None, False, "3", "3", True),
    ("3", "3.0", None, True, "", None, False),  # int() refuses "3.0"
    ("3", "3.0", "3.0", True, "3.0", "3", True),
    ("3", "There are 3 red circles.", "3", True, "3", "3", True),
    ("3", "There are 3 red circles.", "three", True, "three", None, False),
    ("3", 'The answer is "3".', None, False, "3", "3", True),
    ("3", "", None, False, "", None, False),
    # integer, answer "1000"
    ("4", "1000", None, False, "1000", "1000", True),
    ("4", "1_000", None, False, "1000", "1000", True),  # Python's int() accepts it
    ("4", "1,000", "1,000", True, "1,000", None, False),
    ("4", "About 999.9 g", "999.9", True, "999.9", "999", False),  # truncated
    # float, precision 1, answer "1.2"
    ("5", "1.2", None, False, "1.2", "1.2", True),
    ("5", "1.24", None, False, "1.24", "1.2", True),
    ("5", "1.25", None, False, "1.25", "1.2", True),
    ("5", "1", None, False, "1.0", "1.0", False),
    ("5", "1.2 m", "1.2", True, "1.2", "1.2", True),
    ("5", "1.2 m", None, True, "", None, False),
    # float, precision 2, answer "0.13"
    ("6", "0.13", None, False, "0.13", "0.13", True),
    ("6", ".13", None, False, "0.13", "0.13", True),
    ("6", "0.125", None, False, "0.125", "0.12", False),
    ("6", "$0.13", None, True, "", None, False),
    ("6", "$0.13", "$0.13", True, "$0.13", None, False),
    ("6", "$0.13", "0.13", True, "0.13", "0.13", True),
    # list, answer "[2007, 2008]"
    ("7", "[2007, 2008]", None, True, "", "", False),
    ("7", "[2007, 2008]", "[2007, 2008]", True, "[2007, 2008]", "[2007, 2008]", True),
    ("7", "[2007, 2008]", "[2007,2008]", True, "[2007,2008]", "[2007,2008]", False),
    ("7", 'The answer is "[2007, 2008]".', None, False, "[2007, 2008]", "[2007, 2008]", True),
    # multi_choice, choices "Legal ", "Code ", "Science", answer "Science"
    ("8", "Science", None, False, "Science", "Science", True),
    ("8", "C", None, True, "", "Code ", False),
    ("8", "C", "C", True, "C", "Science", True),
    ("8", "The domain is code.", "Code", True, "Code", "Code ", False),
]


class Scripted:
  """A judge endpoint: replies in turn, recording each request."""

  def __init__(self, *replies):
    self.replies, self.requests = list(replies), []

  def __call__(self, prompt, max_tokens, temperature):
    self.requests.append((prompt, max_tokens, temperature))
    return self.replies.pop(0)


def refuse(prompt, max_tokens, temperature):
  raise AssertionError("the judge was asked although the rules decided")


@pytest.mark.parametrize("row", TABLE, ids=[f"{r[0]}:{r[1]!r}:{r[2]!r}" for r in TABLE])
def test_official_extraction_normalisation_and_verdict(items, row):
  pid, output, reply, asked, extraction, official_prediction, verdict = row
  item = items[pid]
  # the rules decide exactly where the official script does not ask its LLM
  assert mathvista.extract(item, output) == (None if asked else extraction)
  parsed = mathvista.parse(item, output)
  if reply is None:
    if not asked:  # the judge hook leaves a rule-decided answer alone
      assert mathvista.judge(item, output, parsed, refuse) == (parsed, {})
  else:
    ask = Scripted(reply)
    parsed, log = mathvista.judge(item, output, parsed, ask)
    assert len(ask.requests) == 1 and log["judged"] and log["extraction"] == extraction
  assert mathvista.prediction(item, parsed) == official_prediction
  assert mathvista.is_correct(item, parsed) is verdict
  # parsed is the official prediction, or None for an empty extraction (scored by
  # calculate_score's default for "") or one that normalises to None
  empty = extraction.strip() == ""
  assert parsed == (None if empty else official_prediction)


def test_outputs_are_stripped_as_the_official_answer_files_hold_them(items):
  assert mathvista.parse(items["1"], "pentagon\n") == "pentagon"
  assert mathvista.parse(items["3"], "  3 ") == "3"
  ask = Scripted("3")
  mathvista.judge(items["3"], "\nThere are 3 red circles.\n", None, ask)
  assert "\n\nThere are 3 red circles.\n\nExtracted answer: " in ask.requests[0][0]


def test_edit_distance_and_nearest_choice():
  assert mathvista.edit_distance("kitten", "sitting") == 3
  assert mathvista.edit_distance("", "abc") == 3 and mathvista.edit_distance("abc", "abc") == 0
  assert mathvista.edit_distance("flaw", "lawn") == 2
  # ties: the first choice (get_most_similar takes distances.index(min))
  assert mathvista.most_similar("", ["bb", "aa", "c", "d"]) == "c"


# ------------------------------------------------------------------ the LLM extraction


def test_the_judge_prompt_is_the_official_one(items):
  # evaluation/prompts/ext_ans.py demo_prompt.strip() @53d5258: 1696 characters
  digest = hashlib.sha256(mathvista.DEMO_PROMPT.encode()).hexdigest()
  assert len(mathvista.DEMO_PROMPT) == 1696
  assert digest == "2c251ab9e219c5d7db855ad5a9ef44d5bdb10639244b8d28e3ee66a5bda3f71c"
  ask = Scripted("3")
  parsed, log = mathvista.judge(items["3"], "There are 3 red circles.", None, ask)
  prompt, max_tokens, temperature = ask.requests[0]
  # create_test_prompt's text for this item, as extract_answer.py sent it: 1902 chars
  assert len(prompt) == 1902
  assert hashlib.sha256(prompt.encode()).hexdigest() == (
      "494fedb4a94f720509a591ac6d730304748e40ca1da2e7e37b628cb46e26b33f"
  )
  assert prompt.startswith(mathvista.DEMO_PROMPT + "\n\n" + items["3"].extra["query"] + "\n\n")
  assert prompt.endswith("\n\nThere are 3 red circles.\n\nExtracted answer: ")
  assert (max_tokens, temperature) == (1024, 0.0)  # models/gpt.py GPT_Model defaults
  assert parsed == "3" and log == {"judged": True, "replies": ["3"], "extraction": "3"}


def test_the_reply_is_normalised(items):
  assert mathvista.judge(items["1"], "B?", None, Scripted(" (C) pentagon \n"))[0] == "pentagon"
  assert mathvista.judge(items["8"], "the third", None, Scripted("C"))[0] == "Science"
  assert mathvista.judge(items["5"], "1.2 m", None, Scripted("1.24"))[0] == "1.2"
  assert mathvista.judge(items["3"], "three", None, Scripted("three"))[0] is None


def test_an_empty_reply_is_asked_again_then_is_an_empty_extraction(items):
  ask = Scripted("", "C")
  assert mathvista.judge(items["1"], "B?", None, ask)[0] == "pentagon"
  assert len(ask.requests) == 2
  ask = Scripted("", "  ", "")
  parsed, log = mathvista.judge(items["1"], "B?", None, ask)
  assert len(ask.requests) == mathvista.JUDGE_TRIES == 3
  assert parsed is None and log["replies"] == ["", "  ", ""] and log["extraction"] == ""
  assert mathvista.prediction(items["1"], parsed) == "square"  # calculate_score on ""


def test_a_failing_judge_stops_the_evaluation(items):
  def down(prompt, max_tokens, temperature):
    raise JudgeError("judge x: no answer after 4 tries")

  with pytest.raises(JudgeError):
    mathvista.judge(items["1"], "B?", None, down)


def test_the_judge_is_not_asked_for_an_empty_output(items):
  assert mathvista.judge(items["1"], "", None, refuse) == (None, {})


# ------------------------------------------------------------------ the scores

OUTPUTS = {
    "1": "C",
    "2": "E",
    "3": "3",
    "4": "1,000",
    "5": "1.25",
    "6": "0.125",
    "7": 'The answer is "[2007, 2008]".',
    "8": "C",
}
REPLIES = {"1": "C", "4": "1000", "8": "C"}

# calculate_score.py::main @53d5258 on these outputs: "average" and each target key's
# {value: (correct, total)}.
OFFICIAL = {
    "no judge": (
        (4, 8),
        {
            "question_type": {"free_form": (3, 5), "multi_choice": (1, 3)},
            "answer_type": {"list": (1, 1), "integer": (1, 2), "float": (1, 2), "text": (1, 3)},
            "language": {"english": (4, 7), "chinese": (0, 1)},
            "source": {"FixtureSet": (4, 8)},
            "category": {"math-targeted-vqa": (3, 6), "general-vqa": (1, 2)},
            "task": {
                "figure question answering": (3, 3),
                "visual question answering": (1, 2),
                "geometry problem solving": (0, 1),
                "math word problem": (0, 1),
                "textbook question answering": (0, 1),
            },
            "context": {
                "puzzle test": (1, 1),
                "synthetic scene": (1, 1),
                "bar chart": (1, 1),
                "line plot": (1, 1),
                "geometry diagram": (0, 1),
                "natural image": (0, 1),
                "table": (0, 1),
                "document image": (0, 1),
            },
            "grade": {"daily life": (4, 7), "elementary school": (0, 1)},
            "skills": {
                "logical reasoning": (1, 1),
                "statistical reasoning": (2, 3),
                "arithmetic reasoning": (1, 3),
                "scientific reasoning": (0, 1),
                "geometry reasoning": (0, 1),
                "numeric commonsense": (0, 1),
            },
        },
    ),
    "judged": (
        (7, 8),
        {
            "question_type": {"multi_choice": (3, 3), "free_form": (4, 5)},
            "answer_type": {"text": (3, 3), "integer": (2, 2), "list": (1, 1), "float": (1, 2)},
            "language": {"english": (7, 7), "chinese": (0, 1)},
            "source": {"FixtureSet": (7, 8)},
            "category": {"general-vqa": (2, 2), "math-targeted-vqa": (5, 6)},
            "task": {
                "geometry problem solving": (1, 1),
                "figure question answering": (3, 3),
                "visual question answering": (2, 2),
                "textbook question answering": (1, 1),
                "math word problem": (0, 1),
            },
            "context": {
                "geometry diagram": (1, 1),
                "puzzle test": (1, 1),
                "synthetic scene": (1, 1),
                "natural image": (1, 1),
                "bar chart": (1, 1),
                "line plot": (1, 1),
                "document image": (1, 1),
                "table": (0, 1),
            },
            "grade": {"elementary school": (1, 1), "daily life": (6, 7)},
            "skills": {
                "logical reasoning": (1, 1),
                "scientific reasoning": (1, 1),
                "geometry reasoning": (1, 1),
                "numeric commonsense": (1, 1),
                "statistical reasoning": (2, 3),
                "arithmetic reasoning": (2, 3),
            },
        },
    ),
}


@pytest.mark.parametrize("setting", sorted(OFFICIAL))
def test_scores_match_calculate_score(items, setting):
  ordered = [items[pid] for pid in PIDS]
  parsed = []
  for it in ordered:
    p = mathvista.parse(it, OUTPUTS[it.id])
    if setting == "judged" and it.id in REPLIES:
      p, _ = mathvista.judge(it, OUTPUTS[it.id], p, Scripted(REPLIES[it.id]))
    parsed.append(json.loads(json.dumps(p)))  # as the predictions file gives it back
  got = mathvista.score(ordered, parsed)
  (correct, total), groups = OFFICIAL[setting]
  assert got["accuracy"] == correct / total and got["num_items"] == total
  expected = {f"{k}/{v}": c / t for k, by in groups.items() for v, (c, t) in by.items()}
  assert {k: v for k, v in got.items() if "/" in k} == pytest.approx(expected)
  # no judge: pids 1, 4, 8 have empty extractions; 1 and 8 (multi_choice) took the default
  assert (got["unparsed"], got["fallbacks"]) == ((3, 2) if setting == "no judge" else (0, 0))

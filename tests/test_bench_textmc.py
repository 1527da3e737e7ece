"""MMLU and HellaSwag (`textmc`, mmlu.py, hellaswag.py) against the official rules.

Test table sources (expected values come from executing the official code, copied into a
scratch folder outside the repository, on these fixtures; or from
/work/official_rules_backup.md sections 5a / 5b, whose worked examples were executed):
  MMLU       hendrycks/test @4450500 evaluate.py: format_subject, format_example,
             gen_prompt (the prompt), eval (the crop loop; pred = argmax of the " A".." D"
             log-probs), main (pd.read_csv(header=None); dev_df[:ntrain]; subjects =
             sorted *_test.csv names; "Average accuracy" = np.mean(np.concatenate(all_cors)))
  HellaSwag  EleutherAI/lm-evaluation-harness @4e7e0d47 lm_eval/tasks/hellaswag/utils.py
             (preprocess, process_docs), hellaswag.yaml, lm_eval/api/task.py
             (build_qa_turn: few-shot "q" + " " + answer + "\\n\\n"; process_results:
             pred = argmax(lls), pred_norm = argmax(lls / completion_len), completion_len
             = len(choice) in characters)
"""

from __future__ import annotations

import json

import pytest
from benchmark_fixtures import hellaswag as hellaswag_fixture
from benchmark_fixtures import mmlu as mmlu_fixture
from benchmark_fixtures import textmc as textmc_fixture

from dsvl_jax.eval.benchmarks import hellaswag, mmlu, registry, textmc
from dsvl_jax.eval.benchmarks.base import BenchmarkFormatError, LikelihoodBenchmark

SUBJECTS = ("abstract_algebra", "world_religions")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return mmlu_fixture.build(tmp_path_factory.mktemp("mmlu"))


@pytest.fixture(scope="module")
def hs(tmp_path_factory):
  return hellaswag_fixture.build(tmp_path_factory.mktemp("hellaswag"))


# ---------------------------------------------------------------------------------------
# HellaSwag: lm-eval utils.py preprocess / process_docs @4e7e0d47

PREPROCESS_TABLE = [
    # backup 5a, worked example 2 (executed against utils.py)
    (
        "Personal Care and Style: [header] How to dye your hair [title] Buy the dye. [step] "
        "Choose a shade.",
        "Personal Care and Style: How to dye your hair. Buy the dye. Choose a shade.",
    ),
    # the rest executed against utils.py preprocess in a scratch folder
    (
        "Pick a permanent dye for lasting colour. [title] Read the box.",
        "Pick a permanent dye for lasting colour.. Read the box.",
    ),
    ("[substeps] Mix the dye  with the developer.", " Mix the dye with the developer."),
    ("Paint the pot [title]", "Paint the pot. "),
    (" Ask a friend to help you. ", "Ask a friend to help you."),
    ("a   b", "a  b"),  # one pass of "  " -> " "
]


@pytest.mark.parametrize("text, expected", PREPROCESS_TABLE)
def test_hellaswag_preprocess_table(text, expected):
  assert hellaswag.preprocess(text) == expected


# (ind, query, choices, gold, completion_len): utils.py process_docs and task.py's
# completion_len executed on the fixture's val rows.
HELLASWAG_DOCS = [
    (
        4,
        # backup 5a, worked example 1
        "Removing ice from car: Then, the man writes over the snow covering the window of a "
        "car, and a woman wearing winter clothes smiles. Then",
        (
            ", the man adds wax to the windshield and cuts it.",
            ", a person boards a ski lift.",
            ", the man puts on a christmas coat.",
            ", the man continues removing the snow on his car.",
        ),
        3,
        (49, 29, 35, 49),
    ),
    (
        10,
        "Personal Care and Style: How to dye your hair. Buy the dye. Choose a shade.",
        (
            "Pick a permanent dye for lasting colour.. Read the box.",
            " Mix the dye with the developer.",
            "Wash your hair every day.",
            "Ask a friend to help you.",
        ),
        1,
        (55, 32, 25, 25),
    ),
    (
        25,
        "Playing violin: A woman holds a violin under her chin. The woman",  # capitalize()
        (
            "plays a slow song with a bow.",
            "eats the violin.",
            "throws the bow into a lake.",
            "paints the violin green.",
        ),
        0,
        (29, 16, 27, 24),
    ),
]


def test_hellaswag_rows_become_lm_eval_queries_and_choices(hs):
  items = textmc.load(hs)
  assert items == hellaswag.load(hs)
  assert len(items) == len(hellaswag_fixture.VAL)  # every row scored
  for item, (ind, query, choices, gold, lengths) in zip(items, HELLASWAG_DOCS):
    row = hellaswag_fixture.VAL[[r["ind"] for r in hellaswag_fixture.VAL].index(ind)]
    assert item.question == query, ind
    assert item.options == choices and item.answer == gold
    assert tuple(len(o) for o in item.options) == lengths
    assert item.type == row["activity_label"] and item.images == ()
  # backup 5a: the scored continuation of worked example 1 (target_delimiter " " + choice)
  assert " " + items[0].options[3] == " , the man continues removing the snow on his car."


def test_hellaswag_continuation_keeps_a_leading_space(hs):
  from dsvl_jax.config.files import load_config
  from dsvl_jax.eval.prompts import continuation_ids
  from dsvl_jax.models import VLMConfig
  from dsvl_jax.processor.layout import TokenLayout
  from dsvl_jax.processor.tokenizer import make_tokenizer

  cfg = VLMConfig.from_dict(load_config("configs/tiny.py").model)
  tok = make_tokenizer("builtin:bytes", TokenLayout.of(cfg))
  option = textmc.load(hs)[1].options[1]  # " Mix the dye with the developer."
  ids = continuation_ids(option, tok, score_eos=False)
  assert tok.decode(list(ids)) == "  Mix the dye with the developer."  # " " + choice


# task.py process_results executed on these planted log-likelihoods and the docs above:
# (pred, pred_norm) per row; acc 1/3, acc_norm 3/3.
PLANTED_HELLASWAG = [
    ([-30.0, -20.0, -25.0, -29.0], 1, 3),  # acc wrong (gold 3), acc_norm right
    ([-40.0, -22.0, -20.0, -30.0], 2, 1),  # acc wrong (gold 1), acc_norm right
    ([-10.0, -12.0, -30.0, -30.0], 0, 0),  # both right
]


def test_hellaswag_acc_and_acc_norm_table(hs):
  items = textmc.load(hs)
  lls = [row for row, _, _ in PLANTED_HELLASWAG]
  for item, (row, pred, pred_norm) in zip(items, PLANTED_HELLASWAG):
    assert textmc.score([item], [row])["accuracy"] == float(pred == item.answer)
    assert textmc.score([item], [row])["accuracy_norm"] == float(pred_norm == item.answer)
  metrics = textmc.score(items, lls)
  assert metrics["accuracy"] == pytest.approx(1 / 3)  # lm-eval acc
  assert metrics["accuracy_norm"] == 1.0  # lm-eval acc_norm
  assert metrics["category/Playing violin"] == 1.0


def test_hellaswag_shots_come_from_the_dev_file(hs):
  items = textmc.load(hs, shots=2, dev="hellaswag_train.jsonl")
  assert [it.id for it in items] == [it.id for it in textmc.load(hs)]  # all scored
  # build_qa_turn: query + " " + gold choice + "\n\n" per shot (target_delimiter " ",
  # fewshot_delimiter "\n\n"); the train rows' processed docs executed with utils.py.
  shots = (
      "Washing dishes: A man fills a sink with water. He adds soap and washes the plates.\n\n"
      "Home and Garden: How to water a plant. Check the soil.  Pour water slowly.\n\n"
  )
  for item, (_, query, *_) in zip(items, HELLASWAG_DOCS):
    assert item.question == shots + query
  assert textmc.load(hs, shots=2, dev=str(hs.parent / "hellaswag_train.jsonl")) == items


def test_hellaswag_refusals(hs, tmp_path):
  with pytest.raises(BenchmarkFormatError, match="dev=<jsonl"):
    textmc.load(hs, shots=1)  # every line is scored: shots need another file
  with pytest.raises(BenchmarkFormatError, match="dev is the scored file"):
    textmc.load(hs, shots=1, dev=hs.name)
  with pytest.raises(BenchmarkFormatError, match="3 shots but dev has 2 rows"):
    textmc.load(hs, shots=3, dev="hellaswag_train.jsonl")
  row = dict(hellaswag_fixture.VAL[0], label="")  # the unlabelled test split
  (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n")
  with pytest.raises(BenchmarkFormatError, match="test.jsonl:1: label ''"):
    textmc.load(tmp_path / "test.jsonl")
  row = {k: v for k, v in hellaswag_fixture.VAL[0].items() if k not in ("ctx_a", "ctx_b")}
  (tmp_path / "old.jsonl").write_text(json.dumps(row) + "\n")
  with pytest.raises(BenchmarkFormatError, match=r"missing field\(s\) \['ctx_a', 'ctx_b'\]"):
    textmc.load(tmp_path / "old.jsonl")
  with pytest.raises(BenchmarkFormatError, match="apply to MMLU"):
    textmc.load(hs, split="val")


# ---------------------------------------------------------------------------------------
# MMLU: hendrycks/test evaluate.py @4450500

AA_SHOTS_2 = (
    "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
    "Find the order of the element 2 in the additive group Z_5.\nA. 1\nB. 2\nC. 4\nD. 5\n"
    "Answer: D\n\n"
    "How many elements does the group Z_2 x Z_3 have?\nA. 2\nB. 3\nC. 5\nD. 6\nAnswer: D\n\n"
)
# (id, shots, cells, prompt): evaluate.py's gen_prompt(dev_df, subject, k) +
# format_example(test_df, i, include_answer=False), pandas 3.1.1, executed on the fixture;
# cells="text" expected = the same with the file's own text in the two cells pandas rewrites.
MMLU_PROMPTS = [
    (
        "abstract_algebra:0",
        2,
        "pandas",
        AA_SHOTS_2 + "What is the order of the symmetric group S_3?\nA. 3\nB. 6\nC. 9\nD. 12.0\n"
        "Answer:",
    ),
    (
        "abstract_algebra:0",
        2,
        "text",
        AA_SHOTS_2 + "What is the order of the symmetric group S_3?\nA. 3\nB. 6\nC. 9\nD. 12\n"
        "Answer:",
    ),
    (
        "abstract_algebra:2",
        2,
        "pandas",
        AA_SHOTS_2 + "Which of the following rings has a zero divisor?\nA. Z_5\nB. Z_6\nC. Z_7\n"
        "D. nan\nAnswer:",
    ),
    (
        "abstract_algebra:2",
        2,
        "text",
        AA_SHOTS_2 + "Which of the following rings has a zero divisor?\nA. Z_5\nB. Z_6\nC. Z_7\n"
        "D. None\nAnswer:",
    ),
    (
        "abstract_algebra:1",
        0,
        "pandas",
        "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
        "Find the degree of the field extension Q(sqrt(2)) over Q.\nA. 0\nB. 1\nC. 2\nD. 0.5\n"
        "Answer:",
    ),
    (
        "world_religions:1",
        2,
        "text",
        "The following are multiple choice questions (with answers) about  world religions.\n\n"
        "In which city is the Kaaba located?\nA. Medina\nB. Mecca\nC. Jerusalem\nD. Cairo\n"
        "Answer: B\n\n"
        "Which religion has the Guru Granth Sahib as scripture?\nA. Sikhism\nB. Jainism\n"
        "C. Hinduism\nD. Buddhism\nAnswer: A\n\n"
        "Which religion, founded in Persia,\nteaches of Ahura Mazda?\nA. Zoroastrianism\n"
        "B. Shinto\nC. Taoism\nD. Bahai\nAnswer:",
    ),
]


@pytest.mark.parametrize("item_id, shots, cells, expected", MMLU_PROMPTS)
def test_mmlu_prompt_table(data, item_id, shots, cells, expected):
  items = {it.id: it for it in textmc.load(data, shots=shots, cells=cells)}
  assert items[item_id].question == expected
  assert "about  " in expected  # format_subject's double space


def test_mmlu_every_test_item_is_scored_with_the_subjects_dev_shots(data):
  items = mmlu.load(data, shots=5)
  assert items == textmc.load(data, shots=5)
  # every row of every subject's test CSV, subjects sorted (evaluate.py main)
  assert [it.id for it in items] == [f"{s}:{n}" for s in SUBJECTS for n in range(3)]
  for item in items:
    subject = item.type
    dev = mmlu_fixture.SUBJECTS[subject]["dev"]
    test = mmlu_fixture.SUBJECTS[subject]["test"]
    n = int(item.id.split(":")[1])
    positions = [item.question.index(row[0] + "\n") for row in dev]  # the 5 dev rows, in order
    assert positions == sorted(positions)
    assert item.question.count("\nAnswer: ") == 5 and item.question.endswith("\nAnswer:")
    assert [row[0] in item.question for row in test] == [k == n for k in range(3)]
    assert item.options == ("A", "B", "C", "D") and item.options[item.answer] == test[n][5]
  for subject in SUBJECTS:  # the same shots for every question of a subject
    rows = mmlu_fixture.SUBJECTS[subject]["test"]
    ours = [it for it in items if it.type == subject]
    assert len({it.question[: it.question.index(r[0])] for it, r in zip(ours, rows)}) == 1

  assert [it.id for it in mmlu.load(data)] == [it.id for it in items]  # 0-shot: all too


def test_mmlu_val_split_and_the_folder_above_data(data):
  items = textmc.load(data, shots=5, split="val")
  assert [it.id for it in items] == [f"{s}:{n}" for s in SUBJECTS for n in range(2)]
  assert "Where was the Buddha born?" in items[2].question
  assert textmc.load(data.parent, shots=1) == textmc.load(data, shots=1)


def test_mmlu_crop_drops_shots_per_question(data, tmp_path):
  """evaluate.py's crop loop with a one-token-per-byte tokenizer standing in for GPT-2 and
  a 650-token limit: the shots each question kept when executed (per question, not per
  subject)."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers

  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  tok = tokenizers.Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.save(str(tmp_path / "bytes.json"))
  kept = {
      "abstract_algebra:0": 5,
      "abstract_algebra:1": 4,
      "abstract_algebra:2": 4,
      "world_religions:0": 5,
      "world_religions:1": 4,
      "world_religions:2": 5,
  }
  cropped = textmc.load(
      data, shots=5, cells="pandas", crop_tokenizer=str(tmp_path / "bytes.json"), crop_tokens=650
  )
  for item in cropped:
    k = kept[item.id]
    uncropped = {it.id: it for it in textmc.load(data, shots=k, cells="pandas")}
    assert item.question == uncropped[item.id].question, item.id
    assert len(item.question.encode()) <= 650
  tiny = textmc.load(data, shots=5, crop_tokenizer=str(tmp_path / "bytes.json"), crop_tokens=10)
  assert tiny == textmc.load(data, shots=0)  # 0 shots kept though still too long


def test_mmlu_jsonl_rows_read_like_the_csv_release(data, tmp_path):
  """Hugging Face cais/mmlu rows (answer an index) give the CSV prompts; the shots come
  from the dev jsonl, per subject."""

  def rows(split):
    return [
        {"question": r[0], "subject": s, "choices": list(r[1:5]), "answer": "ABCD".index(r[5])}
        for s in SUBJECTS
        for r in mmlu_fixture.SUBJECTS[s][split]
    ]

  (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows("test")))
  dev = rows("dev")  # interleaved: abstract_algebra, world_religions, abstract_algebra, ...
  dev = [r for pair in zip(dev[:5], dev[5:]) for r in pair]
  (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev))
  items = textmc.load(tmp_path / "test.jsonl")
  assert [it.id for it in items] == [f"test:{n}" for n in range(1, 7)]  # every line scored
  assert [it.question for it in items] == [it.question for it in textmc.load(data)]
  items = textmc.load(tmp_path / "test.jsonl", shots=2, dev="dev.jsonl")
  csv_items = textmc.load(data, shots=2)
  assert [it.question for it in items] == [it.question for it in csv_items]
  assert [(it.answer, it.type) for it in items] == [(it.answer, it.type) for it in csv_items]
  with pytest.raises(BenchmarkFormatError, match="dev=<jsonl"):
    textmc.load(tmp_path / "test.jsonl", shots=2)
  with pytest.raises(BenchmarkFormatError, match="apply to the CSV release"):
    textmc.load(tmp_path / "test.jsonl", split="val")


def test_mmlu_refusals(data, tmp_path):
  with pytest.raises(BenchmarkFormatError, match="6 shots but subject 'abstract_algebra' has 5"):
    textmc.load(data, shots=6)  # evaluate.py would fail with an IndexError
  with pytest.raises(BenchmarkFormatError, match="split must be one of"):
    textmc.load(data, split="dev")
  with pytest.raises(BenchmarkFormatError, match="cells must be one of"):
    textmc.load(data, cells="numbers")
  with pytest.raises(BenchmarkFormatError, match="come from dev/"):
    textmc.load(data, shots=1, dev="dev.jsonl")
  bad = mmlu_fixture.write(
      tmp_path / "bad",
      {"astronomy": {"test": [("Q?", "a", "b", "c", "d", "E")], "dev": []}},
  )
  with pytest.raises(BenchmarkFormatError, match=r"astronomy_test.csv row 1: answer 'E'"):
    textmc.load(bad)
  (bad / "test" / "astronomy_test.csv").write_text("Q?,a,b,c,A\n")
  with pytest.raises(BenchmarkFormatError, match="expected 6 cells"):
    textmc.load(bad)
  (bad / "test" / "astronomy_test.csv").write_text("Q?,a,b,c,d,A\n")
  with pytest.raises(BenchmarkFormatError, match="astronomy_dev.csv: no rows"):
    textmc.load(bad, shots=1)
  (bad / "dev" / "astronomy_dev.csv").unlink()
  assert len(textmc.load(bad)) == 1  # 0 shots: no dev file needed
  with pytest.raises(FileNotFoundError, match="astronomy_dev.csv"):
    textmc.load(bad, shots=1)


# hendrycks' decision executed on planted letter log-probs for textmc's fixture (2
# abstract_algebra questions, answers B and C; 1 world_religions question, answer B):
# pred = {0: "A", ...}[np.argmax(lprobs)] (a tie goes to A); per-subject np.mean(cors);
# "Average accuracy" np.mean(np.concatenate(all_cors)) = 2/3 (the mean of the subjects'
# accuracies would be 0.5).
PLANTED_MMLU = [[-2.0, -1.0, -3.0, -4.0], [-5.0, -6.0, -1.0, -9.0], [-2.0, -2.0, -3.0, -4.0]]


def test_mmlu_accuracy_is_the_micro_average(tmp_path):
  items = textmc.load(textmc_fixture.build(tmp_path), shots=1)
  assert [it.id for it in items] == [
      "abstract_algebra:0",
      "abstract_algebra:1",
      "world_religions:0",
  ]
  metrics = textmc.score(items, PLANTED_MMLU)
  assert metrics["accuracy"] == pytest.approx(2 / 3)
  assert metrics["category/abstract_algebra"] == 1.0
  assert metrics["category/world_religions"] == 0.0
  assert metrics["accuracy_norm"] == metrics["accuracy"]  # one-letter options
  with pytest.raises(ValueError, match="3 items but 2 rows"):
    textmc.score(items, PLANTED_MMLU[:2])


def test_mmlu_letters_are_one_token_of_the_released_tokenizer(tok):
  """The official score is the next-token log-prob of " A".." D" after "Answer:": with
  DeepSeek's tokenizer each letter continuation is that single token, so its summed
  log-likelihood without EOS (textmc.SCORING) is that log-prob."""
  from dsvl_jax.eval.prompts import continuation_ids

  for letter in mmlu.CHOICES:
    ids = continuation_ids(letter, tok, score_eos=False)
    assert len(ids) == 1
    assert tok.encode("Answer: " + letter, add_bos=False)[-1] == ids[0]
  assert textmc.SCORING == {"normalize": "sum", "score_eos": False, "template": "none"}


def test_the_registry_name_reads_both_and_the_modules_are_likelihood_benchmarks(data, hs):
  module = registry.get("textmc")
  assert module is textmc
  for m in (textmc, mmlu, hellaswag):
    assert isinstance(m, LikelihoodBenchmark)
    assert isinstance(m.MAX_NEW_TOKENS, int) and m.SETUP
  assert {it.type for it in module.load(data)} == set(SUBJECTS)
  assert {it.type for it in module.load(hs)} == {r["activity_label"] for r in hellaswag_fixture.VAL}
  (hs.parent / "other.jsonl").write_text('{"text": "x"}\n')
  with pytest.raises(BenchmarkFormatError, match="expected an MMLU row"):
    module.load(hs.parent / "other.jsonl")


def test_scored_through_the_likelihood_sets_with_the_official_settings(tmp_path, data, hs):
  """The tiny random model through the Evaluator, with the eval config's own defaults
  (mean, EOS, chat template): the release sets are scored by their SCORING instead
  (summed log-likelihoods, no EOS, BOS + the plain prompt), every item is scored, and
  mc_accuracy is the official accuracy of the log-likelihoods it records."""
  import jax

  from dsvl_jax.config.files import load_config
  from dsvl_jax.eval.eval_config import EvalConfig
  from dsvl_jax.eval.evaluator import Evaluator
  from dsvl_jax.models import VLMConfig
  from dsvl_jax.models.init import init_params
  from dsvl_jax.processor.layout import TokenLayout
  from dsvl_jax.processor.tokenizer import make_tokenizer

  cfg = VLMConfig.from_dict(load_config("configs/tiny.py").model)
  tokenizer = make_tokenizer("builtin:bytes", TokenLayout.of(cfg))
  eval_cfg = EvalConfig.from_dict(
      dict(
          generate=False,
          batch_size=4,
          progress=False,
          few_shot=1,
          sets={"mmlu": f"mmlu:{textmc_fixture.build(tmp_path)}", "hellaswag": f"hellaswag:{hs}"},
          set_options={"hellaswag": {"dev": "hellaswag_train.jsonl"}},
      )
  )
  assert (eval_cfg.normalize, eval_cfg.score_eos) == ("mean", True)
  evaluator = Evaluator(cfg, tokenizer, eval_cfg)
  results = evaluator(init_params(cfg, jax.random.key(0)))
  for name in ("mmlu", "hellaswag"):
    prepared = evaluator.likelihood.sets[name]
    items, m = prepared.items, results[name]
    for item, enc in zip(items, prepared.prompts):  # no chat turn, no system prompt
      assert list(enc.ids) == tokenizer.encode(item.question, add_bos=True)
    assert m["num_items"] == len(items) == len(m["predictions"]) == 3
    lls = [p["log_likelihoods"] for p in m["predictions"]]
    assert [p["scores"] for p in m["predictions"]] == lls  # sums, no EOS
    official = textmc.score(items, lls)
    assert m["mc_accuracy"] == official["accuracy"] == m["accuracy"]
    assert m["accuracy_norm"] == official["accuracy_norm"]
    assert m["mc_accuracy_by_type"] == {
        k.split("/", 1)[1]: v for k, v in official.items() if k.startswith("category/")
    }
  # " A" in bytes is 2 tokens (space, letter); no EOS is scored
  assert {tuple(p["num_tokens"]) for p in results["mmlu"]["predictions"]} == {(2, 2, 2, 2)}

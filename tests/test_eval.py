"""Evaluation: multiple-choice scoring by option likelihood, greedy exact match, items.

The model is made to prefer a planted option per item by a few Adam steps on that
option's negative log-likelihood, computed here with a plain forward and log_softmax
(right-padded, unrelated to the scorer's left-padded, bucketed layout).
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from dsvl_jax.config.files import load_config
from dsvl_jax.data import synthetic
from dsvl_jax.eval.eval_config import EvalConfig, default_config
from dsvl_jax.eval.evaluator import Evaluator, evaluate, flat_metrics
from dsvl_jax.eval.items import ItemError, load_items
from dsvl_jax.eval.metrics import exact_match, normalize_answer
from dsvl_jax.eval.prompts import build_prompt
from dsvl_jax.eval.run import run
from dsvl_jax.eval.scoring import choose, score_rows
from dsvl_jax.models import DeepseekVL
from dsvl_jax.models.init import init_params
from dsvl_jax.processor.conversation import (
    SYSTEM_PROMPT,
    Message,
    Template,
    encode_conversation,
    template_for,
)
from dsvl_jax.processor.image_processor import ImageProcessorConfig, load_image, process
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN, Tokenizer

PAD_T = 128  # right padding of the test's own forward passes

# (question, number of images, options, planted index, type). The planted option is
# neither the longest nor the shortest and sits at different indices.
ITEMS = [
    ("What colour is the shape?", 1, ["red", "dark blue", "light green"], 1, "colour"),
    ("Which word is written?", 1, ["the word is CAT", "SUN", "BOAT"], 2, "word"),
    ("Count the shapes in both pictures.", 2, ["four", "two", "three"], 0, "count"),
    ("What is 2 plus 3?", 0, ["5", "five", "it is five"], 1, "math"),
    (f"Is {IMAGE_TOKEN} the same as {IMAGE_TOKEN}?", 2, ["yes", "no", "maybe so"], 0, "count"),
    ("Name the shape.", 1, ["a circle", "square", "a big triangle"], 0, ""),
]


def _write_set(root, items=ITEMS, name="set.jsonl"):
  """Writes PNGs (odd sizes: the processor resizes and pads) and the jsonl."""
  rng = np.random.default_rng(0)
  (root / "img").mkdir(exist_ok=True)
  lines = []
  for k, (question, n, options, planted, kind) in enumerate(items):
    paths = []
    for m in range(n):
      rel = f"img/{k}_{m}.png"
      synthetic.draw(synthetic.make_scene(rng), 40).crop((0, 0, 40, 30 + 4 * k)).save(root / rel)
      paths.append(rel)
    # the answer as text or as an index: both forms are accepted
    answer = options[planted] if k % 2 else planted
    lines.append(
        json.dumps(
            dict(
                id=f"q{k}",
                question=question,
                images=paths,
                options=options,
                answer=answer,
                type=kind,
            )
        )
    )
  path = root / name
  path.write_text("\n".join(lines) + "\n")
  return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  cfg = tiny_config("siglip")
  tok = Tokenizer.builtin_bytes(cfg)
  path = _write_set(tmp_path_factory.mktemp("eval"))
  return cfg, tok, path


def _prompt(cfg, tok, question, image_paths):
  """Prompt ids and processed images, built here without dsvl_jax.eval."""
  content = question if IMAGE_TOKEN in question else IMAGE_TOKEN * len(image_paths) + question
  enc = encode_conversation(
      [Message("user", content)], tok, cfg, add_generation_prompt=True, template=Template(system="")
  )
  proc = ImageProcessorConfig.for_model(cfg)
  images = np.stack([process(load_image(p), proc) for p in image_paths]) if image_paths else None
  return enc.ids, images


def _answer_ids(tok, option):
  return np.array(tok.encode(" " + option, add_bos=False) + [tok.eos_id], np.int32)


def _rows(cfg, tok, path):
  """Per item: (prompt ids, images, [answer ids per option])."""
  out = []
  for line in path.read_text().splitlines():
    d = json.loads(line)
    ids, images = _prompt(cfg, tok, d["question"], [path.parent / p for p in d["images"]])
    out.append((ids, images, [_answer_ids(tok, o) for o in d["options"]]))
  return out


def _right_pad(seqs):
  ids = np.zeros((len(seqs), PAD_T), np.int32)
  for b, s in enumerate(seqs):
    ids[b, : len(s)] = s
  return ids


def _token_logps(cfg, params, prompt, images, answer):
  """log p(answer token | everything before) [C], one row, plain forward + log_softmax."""
  fwd = _forward(cfg)
  ids = np.concatenate([prompt, answer])
  logp = jax.nn.log_softmax(fwd(params, _right_pad([ids]), images)[0], -1)
  pos = np.arange(len(prompt) - 1, len(ids) - 1)
  return np.asarray(logp[pos, answer])


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  """Jitted logits [B, T, V] of a right-padded batch (no mask: causal attention keeps
  the padding after a sequence out of its logits)."""
  model = DeepseekVL(cfg)
  return jax.jit(lambda p, ids, images: model.apply({"params": p}, ids, images)["logits"])


@pytest.fixture(scope="module")
def trained(setup):
  """Random init, then Adam on the planted options' NLL until the model prefers them."""
  cfg, tok, path = setup
  rows = _rows(cfg, tok, path)
  seqs, weights, images = [], np.zeros((len(rows), PAD_T), np.float32), []
  for b, ((prompt, imgs, answers), item) in enumerate(zip(rows, ITEMS)):
    answer = answers[item[3]]
    seqs.append(np.concatenate([prompt, answer]))
    weights[b, len(prompt) - 1 : len(prompt) - 1 + len(answer)] = 1.0  # predicting positions
    if imgs is not None:
      images.append(imgs)
  ids, images = _right_pad(seqs), np.concatenate(images)
  targets = np.roll(ids, -1, axis=1)
  model = DeepseekVL(cfg)
  opt = optax.adam(3e-3)

  def loss_fn(llm, rest):  # the towers stay fixed: a cheaper gradient to compile
    logits = model.apply({"params": {**rest, "llm": llm}}, ids, images)["logits"]
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), targets[..., None], -1)
    return -jnp.sum(picked[..., 0] * weights) / weights.sum()

  @jax.jit
  def step(llm, rest, state):
    loss, grads = jax.value_and_grad(loss_fn)(llm, rest)
    updates, state = opt.update(grads, state, llm)
    return optax.apply_updates(llm, updates), state, loss

  init = init_params(cfg, jax.random.key(1))
  llm, rest = init["llm"], {k: v for k, v in init.items() if k != "llm"}
  state = opt.init(llm)
  for _ in range(60):
    llm, state, loss = step(llm, rest, state)
  print(f"planted-answer NLL per token after training: {float(loss):.4f}")
  assert float(loss) < 0.05, float(loss)  # the planted answers are now near-certain
  return init, {**rest, "llm": llm}


def _eval_cfg(**kw):
  d = default_config()
  # No system prompt and one length bucket: short prompts and few compiled shapes keep
  # the tests fast (test_default_system_prompt_is_the_released_one covers the default).
  d.update(dict(batch_size=4, max_new_tokens=12, system_prompt="", length_bucket=PAD_T), **kw)
  return EvalConfig.from_dict(d)


@pytest.fixture(scope="module")
def evaluator(setup):
  """One evaluator for the toy set (with generation), shared: its compiles are reused."""
  cfg, tok, path = setup
  return Evaluator(cfg, tok, _eval_cfg(), {"toy": path})


def test_choose_is_argmax_and_normalisation_changes_the_winner():
  # Option 0: 6 tokens averaging -1; option 1: 2 tokens averaging -2 (sum -4 > -6).
  sums, counts = [-6.0, -4.0], [6, 2]
  assert choose(sums, counts, "mean") == 0
  assert choose(sums, counts, "sum") == 1
  assert choose([-3.0, -1.0, -2.0], [1, 1, 1], "mean") == 1  # the largest, not the smallest
  with pytest.raises(ValueError):
    choose(sums, counts, "max")


def test_scoring_picks_the_planted_option(trained, evaluator):
  init, params = trained
  results = evaluator(params)["toy"]
  picks = [p["choice"] for p in results["predictions"]]
  assert picks == [options[planted] for _, _, options, planted, _ in ITEMS]
  assert results["mc_accuracy"] == 1.0
  assert results["mc_accuracy_by_type"] == {"colour": 1.0, "count": 1.0, "math": 1.0, "word": 1.0}
  assert results["num_items_by_type"] == {"colour": 1, "count": 2, "math": 1, "word": 1}
  assert results["chance_accuracy"] == pytest.approx(1 / 3)
  # The planted answers were trained with their EOS, so greedy decoding says exactly them.
  assert [p["generated"] for p in results["predictions"]] == picks
  assert results["exact_match"] == 1.0
  assert results["exact_match_by_type"] == results["mc_accuracy_by_type"]
  # Untrained, this init picks none of them (over 20 init seeds untrained accuracy
  # averages 0.4, chance 1/3): the preference comes from the training, not the set.
  before = evaluator(init)["toy"]
  assert before["mc_accuracy"] < 0.5 and before["exact_match"] == 0.0


def test_batched_scores_equal_one_row_at_a_time(setup, trained, evaluator):
  """Rows of items with 0, 1 and 2 images and unequal lengths, 4 to a left-padded batch
  (the last one filled with dummy rows), against each row alone, unpadded on the left."""
  cfg, tok, path = setup
  _, params = trained
  batched = evaluator(params)["toy"]["predictions"]
  for (prompt, images, answers), pred in zip(_rows(cfg, tok, path), batched):
    ref = [_token_logps(cfg, params, prompt, images, ans) for ans in answers]
    assert pred["num_tokens"] == [len(r) for r in ref]
    np.testing.assert_allclose(
        pred["log_likelihoods"], [r.sum() for r in ref], rtol=1e-6, atol=1e-5
    )
    np.testing.assert_allclose(pred["scores"], [r.mean() for r in ref], rtol=1e-6, atol=1e-5)


def test_length_normalisation_end_to_end(setup, trained, tmp_path):
  """Options of unequal length whose mean and summed log-likelihoods disagree."""
  cfg, tok, _ = setup
  _, params = trained
  question = "What is 2 plus 3?"
  prompt, _ = _prompt(cfg, tok, question, [])
  # Untrained strings of different lengths: per-token log-likelihoods are similar, so
  # sums fall with length while means need not; take a pair where the two rules differ.
  candidates = ["x", "qz", "kvw", "jqxzv", "wvkqjzx", "zzqxjvkwqz", "vjqkxzwqjvkzx"]
  ll = {c: _token_logps(cfg, params, prompt, None, _answer_ids(tok, c)) for c in candidates}
  pair = next(
      (short, long)
      for short in candidates
      for long in candidates
      if len(long) > len(short)
      and ll[long].mean() > ll[short].mean()
      and ll[long].sum() < ll[short].sum()
  )
  short, long = pair
  print(f"mean prefers {long!r}, sum prefers {short!r}")
  path = tmp_path / "len.jsonl"
  path.write_text(json.dumps(dict(question=question, options=[long, short], answer=long)))
  for normalize, winner in (("mean", long), ("sum", short)):
    res = evaluate(cfg, params, tok, _eval_cfg(generate=False, normalize=normalize), {"s": path})[
        "s"
    ]
    pred = res["predictions"][0]
    assert pred["choice"] == winner
    np.testing.assert_allclose(
        pred["log_likelihoods"], [ll[long].sum(), ll[short].sum()], atol=1e-5
    )
    assert pred["num_tokens"] == [len(long) + 2, len(short) + 2]  # space, bytes, EOS
  assert res["mc_accuracy"] == 0.0  # under "sum" the short option wins
  # score_eos=False scores the same tokens without the final EOS.
  res = evaluate(cfg, params, tok, _eval_cfg(generate=False, score_eos=False), {"s": path})
  pred = res["s"]["predictions"][0]
  assert pred["num_tokens"] == [len(long) + 1, len(short) + 1]
  np.testing.assert_allclose(
      pred["log_likelihoods"], [ll[long][:-1].sum(), ll[short][:-1].sum()], atol=1e-5
  )


def test_evaluator_reuses_compiled_functions_across_parameters(trained, evaluator):
  init, params = trained
  evaluator(init)
  sizes = (
      score_rows._cache_size(),
      evaluator.answerer.generator._prefill._cache_size(),
      evaluator.answerer.generator._step._cache_size(),
  )
  second = evaluator(params)["toy"]
  assert (
      score_rows._cache_size(),
      evaluator.answerer.generator._prefill._cache_size(),
      evaluator.answerer.generator._step._cache_size(),
  ) == sizes
  assert second["mc_accuracy"] == second["exact_match"] == 1.0  # the new weights are used
  flat = flat_metrics({"toy": second})
  assert flat["eval/toy/mc_accuracy"] == 1.0 and flat["eval/toy/exact_match_by_type/word"] == 1.0
  assert flat["eval/toy/num_items"] == len(ITEMS)
  assert not any("predictions" in k for k in flat)


@pytest.mark.parametrize(
    "text, answer, same",
    [
        ("Red.", "red", True),
        ("  red  ", "Red", True),
        ("RED!", "red.", True),
        ("dark   blue", "Dark blue", True),
        ("Ｒｅｄ", "red", True),
        ("Red car", "Red", False),
        ("A.", "A) red", False),
        ("red.", "re", False),
    ],
)
def test_exact_match_normalisation(text, answer, same):
  assert exact_match(text, answer) is same
  assert normalize_answer("Straße.") == normalize_answer("STRASSE")


GOOD = {"question": "q?", "options": ["a", "b"], "answer": "a"}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "not valid JSON"),
        ({"options": ["a", "b"], "answer": "a"}, "missing field 'question'"),
        ({"question": "q", "answer": "a"}, "missing field 'options'"),
        ({"question": "q", "options": ["a", "b"]}, "missing field 'answer'"),
        ({**GOOD, "answer": "c"}, "not one of the options"),
        ({**GOOD, "answer": 2}, "out of range"),
        ({**GOOD, "answer": True}, "'answer' must be"),
        ({**GOOD, "options": ["a"]}, "at least two"),
        ({**GOOD, "options": ["a", " a "]}, "not distinct"),
        ({**GOOD, "images": ["missing.png"]}, "image file not found"),
        ({**GOOD, "question": f"{IMAGE_TOKEN}{IMAGE_TOKEN}", "images": ["ok.png"]}, "1 image(s)"),
        ({**GOOD, "choices": []}, "unknown field"),
        ({**GOOD, "id": "first"}, "already used"),
    ],
)
def test_bad_items_name_file_and_line(tmp_path, bad, message):
  synthetic.draw(synthetic.make_scene(np.random.default_rng(0)), 16).save(tmp_path / "ok.png")
  path = tmp_path / "bad.jsonl"
  line = bad if isinstance(bad, str) else json.dumps(bad)
  path.write_text(
      json.dumps({**GOOD, "id": "first", "images": ["ok.png"], "question": "q?"})
      + "\n\n"
      + line
      + "\n"
  )
  with pytest.raises(ItemError) as e:
    load_items(path)
  assert f"{path}:3" in str(e.value) and message in str(e.value)


def test_unreadable_image_names_the_item(setup, tmp_path):
  cfg, tok, _ = setup
  (tmp_path / "broken.png").write_bytes(b"not a png")
  path = tmp_path / "s.jsonl"
  path.write_text(json.dumps({**GOOD, "images": ["broken.png"]}) + "\n")
  evaluator = Evaluator(cfg, tok, _eval_cfg(generate=False), {"s": path})
  with pytest.raises(ItemError, match=f"{path}:1: cannot read image"):
    evaluator(None)


def test_items_resolve_images_and_answers(setup):
  _, _, path = setup
  items = load_items(path)
  assert [it.answer for it in items] == [planted for *_, planted, _ in ITEMS]
  assert items[2].images[1] == path.parent / "img/2_1.png"
  assert [it.id for it in load_items(path, max_items=2)] == ["q0", "q1"]


def test_run_writes_eval_json(setup, tmp_path):
  _, _, path = setup
  config = load_config("configs/tiny.py")
  config.eval = default_config()
  config.eval.update(
      sets={"toy": str(path)},
      tokenizer="builtin:bytes",
      max_new_tokens=4,
      batch_size=4,
      system_prompt="",
      length_bucket=PAD_T,
  )  # shapes as above
  results = run(config, str(tmp_path / "work"))
  saved = json.loads((tmp_path / "work" / "eval.json").read_text())
  assert saved == results
  toy = saved["toy"]
  assert set(toy) == {
      "num_items",
      "chance_accuracy",
      "mc_accuracy",
      "mc_accuracy_by_type",
      "num_items_by_type",
      "exact_match",
      "exact_match_by_type",
      "predictions",
  }
  assert toy["num_items"] == len(ITEMS) == len(toy["predictions"])
  assert 0.0 <= toy["mc_accuracy"] <= 1.0 and 0.0 <= toy["exact_match"] <= 1.0
  assert toy["chance_accuracy"] == pytest.approx(np.mean([1 / len(i[2]) for i in ITEMS]))


def test_default_system_prompt_is_the_released_one(setup):
  cfg, tok, path = setup
  item = load_items(path)[3]  # text only
  config = EvalConfig.from_dict(default_config())
  prompt = build_prompt(item, tok, cfg, template_for(config.system_prompt))
  assert tok.decode(prompt.ids) == f"{SYSTEM_PROMPT}\n\nUser: {item.question}\n\nAssistant:"
  bare = build_prompt(item, tok, cfg, Template(system=""))
  assert tok.decode(bare.ids) == f"User: {item.question}\n\nAssistant:"


def test_config_errors_name_the_field():
  for field, value in (("normalize", "max"), ("batch_size", 0), ("max_items", -1)):
    d = default_config()
    d[field] = value
    with pytest.raises(ValueError, match=f"eval.{field}"):
      EvalConfig.from_dict(d)
  d = default_config()
  d.sets = {"a": 3}
  with pytest.raises(ValueError, match="eval.sets.a"):
    EvalConfig.from_dict(d)

"""The benchmark harness end to end: every fixture through `--config.mode=eval` on a
tiny random model, resuming after an interruption, and batched = one at a time."""

import json
import pathlib
import types

import pytest
from benchmark_fixtures import NAMES, build_all
from PIL import Image

from dsvl_jax.config.files import load_config
from dsvl_jax.eval import run as eval_run
from dsvl_jax.eval.benchmarks.base import BenchItem, exact_match
from dsvl_jax.eval.generation import AnswerGenerator


def _config(sets, **eval_fields):
  c = load_config("configs/tiny.py")
  c.mode = "eval"
  c.eval.tokenizer = "builtin:bytes"
  c.eval.sets = {name: spec for name, spec in sets.items()}
  # textmc is scored by likelihood alone (generate=False), as the paper scores MMLU
  defaults = dict(
      max_new_tokens=6,
      batch_size=4,
      length_bucket=64,
      progress=False,
      few_shot=1,
      system_prompt="",
      generate=False,
  )
  c.eval.update({**defaults, **eval_fields})
  return c


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
  return build_all(tmp_path_factory.mktemp("benchmarks"))


@pytest.fixture
def counted(monkeypatch):
  """Counts the prompts the generator answers."""
  calls = []
  original = AnswerGenerator.__call__

  def wrapped(self, prompts, max_new_tokens=None):
    calls.append(len(prompts))
    return original(self, prompts, max_new_tokens)

  monkeypatch.setattr(AnswerGenerator, "__call__", wrapped)
  return calls


def test_every_fixture_runs_and_resumes_without_recomputing(fixtures, tmp_path, counted):
  sets = {name: f"{name}:{path}" for name, path in fixtures.items()}
  first = eval_run.run(_config(sets), str(tmp_path))
  assert set(first) == set(NAMES)
  generated = sum(counted)
  for name in NAMES:
    if name == "textmc":  # likelihood-scored: no predictions file
      assert first[name]["num_items"] == 3 and "mc_accuracy" in first[name]
      continue
    summary = json.loads((tmp_path / f"{name}.summary.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / f"{name}.predictions.jsonl").open()]
    assert len({r["id"] for r in rows}) == len(rows) >= 2
    assert all(set(r) == {"id", "prompt", "output", "parsed", "correct"} for r in rows)
    assert summary["generated_now"] == len(rows) and summary["unparsed"] <= len(rows)
  assert generated == sum(s["generated_now"] for n, s in first.items() if n != "textmc")

  # An interruption: POPE's file lost its last two lines and holds a cut-off one.
  pope = tmp_path / "pope.predictions.jsonl"
  lines = pope.read_text().splitlines()
  pope.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:25])
  counted.clear()
  again = eval_run.run(_config(sets), str(tmp_path))
  assert again["pope"]["generated_now"] == 2 and sum(counted) == 2
  assert all(again[n]["generated_now"] == 0 for n in NAMES if n not in ("pope", "textmc"))
  for name in NAMES:
    if name != "textmc":
      drop = ("generated_now", "seconds")
      assert {k: v for k, v in again[name].items() if k not in drop} == {
          k: v for k, v in first[name].items() if k not in drop
      }, name


class _Mixed(types.ModuleType):
  """A benchmark whose items hold 0, 1 and 2 images and questions of unequal length."""

  NAME = "mixed"

  def __init__(self):
    super().__init__("mixed")
    colours = ["red", "blue", "green", "yellow", "purple", "white", "black"]
    self.items = []
    for i, colour in enumerate(colours):
      n = i % 3
      imgs = [Image.new("RGB", (32 + 8 * k, 40), colour) for k in range(n)]
      self.items.append(
          BenchItem(
              id=f"q{i}",
              question="Describe " + "this " * (i * 3) + "?",
              options=(),
              answer="",
              load_images=lambda imgs=imgs: imgs,
              num_images=n,
          )
      )
      if n:  # POPE-like: more questions about the same image(s), a shared prefix
        for j, q in enumerate(("Is it red?", "What colour is the background, exactly?")):
          self.items.append(
              BenchItem(
                  id=f"q{i}-{j}",
                  question=q,
                  options=(),
                  answer="",
                  load_images=lambda imgs=imgs: imgs,
                  num_images=n,
              )
          )

  def load(self, path):
    return list(self.items)

  def prompt(self, item):
    return "<image_placeholder>" * item.num_images + item.question

  def parse(self, item, output):
    return output or None

  is_correct = staticmethod(exact_match)

  def score(self, items, parsed):
    return {"num_items": len(items), "unparsed": sum(p is None for p in parsed)}


def test_batched_equals_one_at_a_time(tmp_path):
  import jax

  from dsvl_jax.eval.harness import run_benchmark
  from dsvl_jax.models import VLMConfig
  from dsvl_jax.models.init import init_params
  from dsvl_jax.processor.layout import TokenLayout
  from dsvl_jax.processor.tokenizer import make_tokenizer

  cfg = VLMConfig.from_dict(load_config("configs/tiny.py:hybrid").model)
  tok = make_tokenizer("builtin:bytes", TokenLayout.of(cfg))
  params = init_params(cfg, jax.random.key(3))
  outputs, shared_rows = {}, []
  for batch in (1, 4):
    gen = AnswerGenerator(cfg, tok, batch_size=batch, max_new_tokens=8, prompt_bucket=16)
    gen.set_params(params)
    original = gen.generator.generate_shared
    gen.generator.generate_shared = lambda p, s, g, *a, **k: (  # noqa: E731
        shared_rows.append(len(s)) or original(p, s, g, *a, **k)
    )
    run_benchmark(
        "mixed",
        _Mixed(),
        "",
        gen,
        tok,
        cfg,
        tmp_path / str(batch),
        system_prompt="",
        progress=False,
    )
    rows = [json.loads(x) for x in (tmp_path / str(batch) / "mixed.predictions.jsonl").open()]
    outputs[batch] = {r["id"]: r["output"] for r in rows}
  assert len(outputs[1]) == 7 + 2 * 4 and outputs[1] == outputs[4]
  assert sum(shared_rows) >= 8  # batches of 4 shared their images' prefixes
  assert len(set(outputs[1].values())) > 1  # the answers depend on the prompt


def test_the_command_line_runs_every_fixture(fixtures, tmp_path):
  """`python -m dsvl_jax.main --config=configs/tiny.py --config.mode=eval
  --config.eval.sets=...` with every fixture, as a user runs it."""
  import os
  import subprocess
  import sys

  root = pathlib.Path(__file__).resolve().parents[1]
  sets = json.dumps({name: f"{name}:{path}" for name, path in fixtures.items()})
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "dsvl_jax.main",
          "--config=configs/tiny.py",
          "--config.mode=eval",
          "--config.eval.tokenizer=builtin:bytes",
          "--config.eval.max_new_tokens=4",
          "--config.eval.progress=False",
          "--config.eval.generate=False",
          f"--config.eval.sets={sets}",
          f"--workdir={tmp_path}",
      ],
      cwd=root,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root)},
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "eval.json").read_text())
  assert set(results) == set(NAMES)
  for name in NAMES:
    if name != "textmc":
      assert (tmp_path / f"{name}.summary.json").is_file()
      assert f"{name} ({name}):" in out.stdout


def test_rows_split_over_devices_give_the_same_answers(tmp_path):
  """Generation data-parallel over the 8 simulated devices (batch 8: a row each) =
  one device."""
  import jax
  import numpy as np

  from dsvl_jax.eval.harness import run_benchmark
  from dsvl_jax.models import VLMConfig
  from dsvl_jax.models.init import init_params
  from dsvl_jax.processor.layout import TokenLayout
  from dsvl_jax.processor.tokenizer import make_tokenizer

  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices (conftest simulates 8 on CPU)")
  cfg = VLMConfig.from_dict(load_config("configs/tiny.py").model)
  tok = make_tokenizer("builtin:bytes", TokenLayout.of(cfg))
  params = init_params(cfg, jax.random.key(5))
  outputs = {}
  for name, mesh in (
      ("one", None),
      ("eight", jax.sharding.Mesh(np.asarray(jax.devices()), ("rows",))),
  ):
    gen = AnswerGenerator(cfg, tok, batch_size=8, max_new_tokens=6, prompt_bucket=16, mesh=mesh)
    gen.set_params(params)
    if mesh is not None:
      assert (
          len(
              jax.tree.leaves(gen.generator.params["model"]["llm"]["embed_tokens"])[
                  0
              ].sharding.device_set
          )
          == 8
      )
    run_benchmark(
        "mixed", _Mixed(), "", gen, tok, cfg, tmp_path / name, system_prompt="", progress=False
    )
    rows = [json.loads(x) for x in (tmp_path / name / "mixed.predictions.jsonl").open()]
    outputs[name] = {r["id"]: r["output"] for r in rows}
  assert outputs["one"] == outputs["eight"]


def test_a_rerun_by_another_model_or_settings_refuses_to_mix_answers(fixtures, tmp_path):
  """Predictions are resumed only for the model, generation settings and prompts that
  made them (NAME.run.json); anything else stops in one line naming what differs."""
  from dsvl_jax.config.schema import ConfigError

  sets = {"pope": f"pope:{fixtures['pope']}"}
  eval_run.run(_config(sets, max_items=4), str(tmp_path))
  again = eval_run.run(_config(sets), str(tmp_path))  # same model: the rest is answered
  assert again["pope"]["generated_now"] == again["pope"]["num_items"] - 4
  # answers the official rule decided by its default "yes" are counted
  from dsvl_jax.eval.benchmarks import pope

  rows = [json.loads(x) for x in (tmp_path / "pope.predictions.jsonl").open()]
  assert again["pope"]["fallbacks"] == sum(pope.fallback(None, r["output"]) for r in rows)
  for field, value, differs in (
      ("seed", 1, "params"),
      ("eval.max_new_tokens", 7, "max_new_tokens"),
      ("eval.system_prompt", "default", "system_prompt"),
  ):
    config = _config(sets)
    node, leaf = (config.eval, field[5:]) if field.startswith("eval.") else (config, field)
    assert node[leaf] != value
    node[leaf] = value
    with pytest.raises(ConfigError, match=f"another model or other settings .*{differs}") as e:
      eval_run.run(config, str(tmp_path))
    assert "\n" not in str(e.value)
  (tmp_path / "pope.run.json").unlink()
  with pytest.raises(ConfigError, match="no record of the model"):
    eval_run.run(_config(sets), str(tmp_path))


def test_set_options_reach_the_loader_and_a_wrong_one_fails_in_one_line(fixtures, tmp_path):
  """eval.set_options[name] are the loader's keywords: POPE's questions in one folder
  and its COCO images in another run only with image_dir given; an option the loader
  lacks, or options for a set that is not there, stop at start in one line."""
  import shutil

  from dsvl_jax.config.schema import ConfigError

  questions, coco = tmp_path / "pope", tmp_path / "coco" / "val2014"
  shutil.copytree(pathlib.Path(fixtures["pope"]).parent / "val2014", coco)
  questions.mkdir()
  for f in pathlib.Path(fixtures["pope"]).glob("coco_pope_*.json"):
    shutil.copy(f, questions)
  sets = {"pope": f"pope:{questions}"}
  with pytest.raises(FileNotFoundError, match="image folder"):
    eval_run.run(_config(sets, max_items=2), str(tmp_path / "out"))
  c = _config(sets, max_items=2)
  c.eval.set_options = {"pope": {"image_dir": str(coco)}}
  assert eval_run.run(c, str(tmp_path / "out"))["pope"]["num_items"] == 2
  for options, message in (
      ({"pope": {"image_root": "x"}}, r"pope has no option \['image_root'\]; its options"),
      ({"other": {"split": "dev"}}, r"not in eval.sets: \['other'\]"),
  ):
    c = _config(sets)
    c.eval.set_options = options
    with pytest.raises(ConfigError, match=message) as e:
      eval_run.run(c, str(tmp_path / "bad"))
    assert "\n" not in str(e.value)


def test_each_benchmark_answers_at_its_published_length(fixtures, tmp_path, monkeypatch):
  """eval.max_new_tokens=0: each benchmark's MAX_NEW_TOKENS reaches the generator and
  its run record; a number given overrides every set."""
  from dsvl_jax.eval.benchmarks import registry

  seen = []
  original = AnswerGenerator.__call__

  def wrapped(self, prompts, max_new_tokens=None):
    seen.append(max_new_tokens)
    return original(self, prompts, 3)  # short answers: the test is about the setting

  monkeypatch.setattr(AnswerGenerator, "__call__", wrapped)
  sets = {"pope": f"pope:{fixtures['pope']}"}
  eval_run.run(_config(sets, max_items=2, max_new_tokens=0), str(tmp_path / "a"))
  published = registry.get("pope").MAX_NEW_TOKENS
  assert seen and set(seen) == {published}
  record = json.loads((tmp_path / "a" / "pope.run.json").read_text())
  assert record["max_new_tokens"] == published
  seen.clear()
  eval_run.run(_config(sets, max_items=2, max_new_tokens=9), str(tmp_path / "b"))
  assert set(seen) == {9}


class _Judged(types.ModuleType):
  """Five text questions whose answers only a judge can read ("judged:<id>" -> right)."""

  NAME = "judged"
  JUDGE = "fallback"

  def __init__(self):
    super().__init__("judged")
    self.items = [
        BenchItem(id=f"j{i}", question=f"q{i}", options=(), answer="ok") for i in range(5)
    ]

  def load(self, path):
    return self.items

  def prompt(self, item):
    return item.question

  def parse(self, item, output):
    return None

  def judge(self, item, output, parsed, ask):
    return ask(item.id, 4, 0.0), {"judged": True}

  def is_correct(self, item, parsed):
    return parsed == item.answer

  def score(self, items, parsed):
    return {
        "accuracy": sum(p == "ok" for p in parsed) / len(items),
        "num_items": len(items),
        "unparsed": 0,
    }


class _Echo:
  """An answerer without a model: each prompt's length as text."""

  batch_size = 2

  def __call__(self, prompts, max_new_tokens=None):
    return [str(len(p.ids)) for p in prompts]


def test_a_judge_that_fails_stops_the_run_and_keeps_every_answer_before_it(tmp_path):
  """The judge endpoint fails at the fourth item: the three rows judged before it are in
  the predictions file (the batch in flight included), and a rerun with a working judge
  answers only the other two; mode=eval reports the failure in one line."""
  from dsvl_jax.eval.harness import run_benchmark
  from dsvl_jax.eval.judge import JudgeError
  from dsvl_jax.models import VLMConfig
  from dsvl_jax.processor.layout import TokenLayout
  from dsvl_jax.processor.tokenizer import make_tokenizer

  cfg = VLMConfig.from_dict(load_config("configs/tiny.py").model)
  tok = make_tokenizer("builtin:bytes", TokenLayout.of(cfg))
  asked = []

  class Failing:
    name = "flaky @ http://judge/v1"

    def __call__(self, prompt, max_tokens=1024, temperature=0.0):
      asked.append(prompt)
      if len(asked) == 4:
        raise JudgeError("judge flaky: no answer after 4 tries (HTTP 503)")
      return "ok"

  bench = _Judged()
  run = dict(system_prompt="", progress=False, judge=Failing())
  with pytest.raises(JudgeError):
    run_benchmark("judged", bench, "", _Echo(), tok, cfg, tmp_path, **run)
  kept = [json.loads(x) for x in (tmp_path / "judged.predictions.jsonl").open()]
  assert len(kept) == 3 and all(r["parsed"] == "ok" and r["judge"] for r in kept)
  summary = run_benchmark("judged", bench, "", _Echo(), tok, cfg, tmp_path, **run)
  assert summary["generated_now"] == 2 and summary["judged"] == 5 and summary["accuracy"] == 1.0
  assert summary["judge"] == Failing.name


def test_mode_eval_reports_a_failed_judge_in_one_line(fixtures, tmp_path, monkeypatch):
  from dsvl_jax.eval.evaluator import Evaluator
  from dsvl_jax.eval.judge import JudgeError

  def failing(self, params, outdir=None):
    raise JudgeError("judge m @ http://127.0.0.1:9/v1: no answer after 4 tries (URLError)")

  monkeypatch.setattr(Evaluator, "__call__", failing)
  with pytest.raises(SystemExit) as e:
    eval_run.run(_config({"pope": f"pope:{fixtures['pope']}"}), str(tmp_path))
  message = str(e.value.code)
  assert message.startswith("error: judge m @") and "rerun to resume" in message
  assert "\n" not in message

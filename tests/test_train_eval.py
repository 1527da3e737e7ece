"""A public benchmark evaluated during training (`train.eval_every`) through the same
`Evaluator` as `--config.mode=eval`: the trainer's numbers at a step are the ones
mode=eval gives on that step's checkpoint."""

import json

import pytest
from benchmark_fixtures import pope, textmc
from test_bench_harness import _config
from train_fixtures import run_config

from dsvl_jax.config.schema import ConfigError
from dsvl_jax.eval import run as eval_run
from dsvl_jax.train.trainer import Trainer


def _with_eval(c, sets):
  """The benchmark harness tests' evaluation settings, six items a set."""
  c.eval.sets = sets
  c.eval.update({k: v for k, v in _config({}).eval.items() if k != "sets"}, max_items=6)
  return c


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
  root = tmp_path_factory.mktemp("bench")
  return {"pope": f"pope:{pope.build(root / 'pope')}", "mc": f"textmc:{textmc.build(root / 'mc')}"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sets):
  wd = tmp_path_factory.mktemp("run")
  c = _with_eval(run_config(**{"train.steps": 2, "train.eval_every": 2}), sets)
  summary = Trainer(c, wd).run()
  return wd, c, summary


def test_the_benchmark_is_evaluated_and_logged_during_training(trained):
  wd, _, summary = trained
  out = wd / "eval" / "step_2"
  written = json.loads((out / "pope.summary.json").read_text())
  rows = [json.loads(line) for line in (out / "pope.predictions.jsonl").open()]
  assert written["benchmark"] == "pope" and written["num_items"] == len(rows) == 6
  assert summary["eval/pope/accuracy"] == written["accuracy"]
  assert "eval/mc/mc_accuracy" in summary
  logged = [json.loads(line) for line in (wd / "metrics.jsonl").open()]
  at_2 = {k: v for line in logged if line.get("step") == 2 for k, v in line.items()}
  assert at_2["eval/pope/f1"] == written["f1"]
  assert not (wd / "eval" / "step_1").exists()  # eval_every=2


def test_training_and_mode_eval_give_the_same_numbers(trained, sets, tmp_path):
  """mode=eval on the step-2 checkpoint: the same predictions and metrics."""
  wd, c, summary = trained
  c = _with_eval(run_config(), sets)
  c.mode = "eval"
  c.eval.checkpoint = str(wd)
  c.eval.tokenizer = c.data.tokenizer
  results = eval_run.run(c, str(tmp_path))
  assert results["mc"]["mc_accuracy"] == summary["eval/mc/mc_accuracy"]
  assert [p["scores"] for p in results["mc"]["predictions"]]  # likelihoods were computed
  for key, value in results["pope"].items():
    if key not in ("seconds", "path"):
      assert summary.get(f"eval/pope/{key}", value) == value, key

  def outputs(path):
    return {r["id"]: r["output"] for r in map(json.loads, path.open())}

  assert outputs(tmp_path / "pope.predictions.jsonl") == outputs(
      wd / "eval" / "step_2" / "pope.predictions.jsonl"
  )


def test_a_bad_benchmark_set_fails_before_training(tmp_path):
  c = _with_eval(run_config(**{"train.eval_every": 2}), {"pope": f"pope:{tmp_path / 'missing'}"})
  with pytest.raises((ConfigError, OSError, ValueError)):
    Trainer(c, tmp_path / "wd")
  assert not (tmp_path / "wd" / "checkpoints").exists()

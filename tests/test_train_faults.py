"""Training faults a user meets (issue 24): a damaged latest checkpoint, a kill between
checkpoints. The tiny run of tests/test_train.py, 6 steps, against an uninterrupted one."""

import json
import logging
import pathlib
import shutil
import struct
import subprocess
import sys
import time

import chex
import pytest
from test_train import _final, _losses
from train_fixtures import run_config

from dsvl_jax.train.metrics import MetricsWriter
from dsvl_jax.train.trainer import Trainer

REPO = pathlib.Path(__file__).parent.parent
EVERY_2 = {"train.checkpoint_every": 2, "train.keep_checkpoints": 2}  # keeps steps 2 and 4


@pytest.fixture(scope="module")
def full(tmp_path_factory):
  wd = tmp_path_factory.mktemp("full")
  Trainer(run_config(), wd).run()
  return wd


@pytest.fixture(scope="module")
def stopped_at_4(tmp_path_factory):
  """A workdir stopped at step 4 with checkpoints 2 and 4; each test damages a copy."""
  wd = tmp_path_factory.mktemp("at4")
  Trainer(run_config(**EVERY_2), wd).run(until=4)
  assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir()) == [2, 4]
  return wd


def _copy(src, tmp_path):
  shutil.copytree(src, tmp_path / "run")
  return tmp_path / "run"


def _truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage_params(workdir, step):
  files = [p for p in (workdir / "checkpoints" / str(step) / "params").rglob("*") if p.is_file()]
  _truncate(max(files, key=lambda p: p.stat().st_size))


def _damage_data(workdir, step):
  _truncate(workdir / "checkpoints" / str(step) / "data" / "process_0-of-1.json")


def _main(tmp_path, fields, prelude=""):
  """`python -m dsvl_jax.main` on run_config(**fields) (a config file that builds it);
  `prelude` runs in the child first."""
  config_file = tmp_path / "config.py"
  config_file.write_text(
      f"import sys, time\nsys.path.insert(0, {str(REPO / 'tests')!r})\n"
      f"from train_fixtures import run_config\n{prelude}\n"
      f"def get_config(arg=None):\n  return run_config(**{fields!r})\n"
  )
  return [sys.executable, "-m", "dsvl_jax.main", f"--config={config_file}"]


@pytest.mark.parametrize("damage", [_damage_params, _damage_data], ids=["params", "data"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(
    damage, full, stopped_at_4, tmp_path, caplog
):
  wd = _copy(stopped_at_4, tmp_path)
  damage(wd, 4)
  with caplog.at_level(logging.WARNING):
    assert Trainer(run_config(**EVERY_2), wd).run()["step"] == 6
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any("checkpoint step 4 does not restore" in w for w in warnings), warnings
  moved = list((wd / "checkpoints_damaged").iterdir())  # kept, outside orbax's directory
  assert len(moved) == 1 and moved[0].name.startswith("4-") and (moved[0] / "params").is_dir()
  # Resumed exactly from step 2: the same state and losses as the uninterrupted run.
  step_a, params_a, train_a, data_a = _final(full)
  step_b, params_b, train_b, data_b = _final(wd)
  assert step_a == step_b == 6
  chex.assert_trees_all_equal(params_a, params_b)
  chex.assert_trees_all_equal(train_a, train_b)
  assert data_a == data_b
  assert _losses(wd) == _losses(full)


def test_no_restorable_checkpoint_is_one_line_and_moves_nothing(stopped_at_4, tmp_path):
  wd = _copy(stopped_at_4, tmp_path)
  _damage_params(wd, 4)
  _damage_data(wd, 2)
  out = subprocess.run(
      _main(tmp_path, EVERY_2) + [f"--workdir={wd}"],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert out.returncode != 0
  assert "Traceback" not in out.stderr, out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert str(wd) in last and "no checkpoint restores" in last, out.stderr
  assert "step 4" in out.stderr and "step 2" in out.stderr  # the warnings name each
  # Nothing moved: a rerun says the same, and the user decides.
  assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == ["2", "4"]
  assert not (wd / "checkpoints_damaged").exists()


# The child marks its metric lines and, once step 5 is logged (checkpoint at 3), waits
# for the kill: the kill lands past the last checkpoint however fast the host is.
HOLD_AT_5 = """
from dsvl_jax.train import metrics
_write = metrics.MetricsWriter.write
def _marked(self, step, values, console=None):
  _write(self, step, {**values, "killed_run": 1.0}, console)
  if step == 5:
    time.sleep(600)
metrics.MetricsWriter.write = _marked
"""


def test_metrics_hold_each_step_once_after_a_kill(full, tmp_path):
  wd = tmp_path / "run"
  fields = {"train.checkpoint_every": 3}
  proc = subprocess.Popen(
      _main(tmp_path, fields, HOLD_AT_5) + [f"--workdir={wd}"],
      cwd=REPO,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
  )
  metrics = wd / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and '"step": 5' in metrics.read_text():
      break
    time.sleep(0.05)
  proc.kill()
  _, err = proc.communicate(timeout=60)
  assert '"step": 5' in metrics.read_text(), err
  assert [p.name for p in (wd / "checkpoints").iterdir()] == ["3"]  # 4 and 5 will re-run
  assert Trainer(run_config(**fields), wd).run()["step"] == 6

  rows = [json.loads(l) for l in metrics.read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert [r["step"] for r in rows if "killed_run" in r] == [1, 2, 3]  # re-run: the new lines
  assert _losses(wd) == _losses(full)
  # TensorBoard: the resumed writer marks a restart at step 4 (TensorBoard then hides
  # the killed run's points from 4 on).
  starts = [
      e.step
      for f in (wd / "tensorboard").glob("events.out.tfevents.*")
      for e in _events(f)
      if e.session_log.status == e.session_log.START
  ]
  assert 4 in starts, starts


def test_metrics_writer_drops_later_steps_and_a_torn_line(tmp_path):
  lines = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)] + [{"step": 3, "eval/a": 0.5}]
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 6, "lo'
  )  # a kill mid-write
  writer = MetricsWriter(
      tmp_path, enabled=True, tensorboard=False, progress=False, total_steps=9, initial_step=3
  )
  writer.write(4, {"loss": 0.0})
  writer.close()
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows == lines[:3] + lines[5:] + [{"step": 4, "loss": 0.0}]
  assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def _events(path):
  """The Event protos of a TFRecord event file."""
  from tensorboardX.proto import event_pb2

  data, pos = path.read_bytes(), 0
  while pos + 12 <= len(data):
    (n,) = struct.unpack("<Q", data[pos : pos + 8])
    event = event_pb2.Event()
    event.ParseFromString(data[pos + 12 : pos + 12 + n])
    yield event
    pos += 12 + n + 4

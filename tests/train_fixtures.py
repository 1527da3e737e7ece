"""Training configs for tests (no pytest import: the SIGTERM test's subprocess uses it)."""

from dsvl_jax.config.files import load_config


def run_config(family="siglip", **fields):
  """configs/tiny.py trimmed for tests: short packed rows, 4 rows, one device, a metric
  line per step. `fields` override dotted keys: run_config(**{"train.steps": 3})."""
  c = load_config(f"configs/tiny.py:{family}")
  c.data.seq_len = 192
  c.data.global_batch_size = 4
  c.data.max_images_per_row = 2
  c.data.system_prompt = ""
  c.data.warmup_steps = 2
  c.train.update(
      steps=6,
      log_every=1,
      checkpoint_every=100,
      progress=False,
      tensorboard=True,
      peak_flops=1e11,
      async_checkpoints=False,
  )
  c.mesh.num_devices = 1
  for key, value in fields.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def sigterm_then_resume(tmp_path, fields: dict):
  """`python -m dsvl_jax.main` on run_config(**fields) in tmp_path/run, SIGTERM once two
  metric lines are written, then the same command again to the end. Returns (workdir,
  the step the interrupted run saved, its output); asserts both exit 0."""
  import os
  import pathlib
  import signal
  import subprocess
  import sys
  import time

  repo = pathlib.Path(__file__).parent.parent
  config_file = tmp_path / "config.py"  # the same run_config() as the in-process runs
  config_file.write_text(
      f"import sys\nsys.path.insert(0, {str(repo / 'tests')!r})\n"
      "from train_fixtures import run_config\n"
      f"def get_config(arg=None):\n  return run_config(**{fields!r})\n"
  )
  workdir = tmp_path / "run"
  args = [sys.executable, "-m", "dsvl_jax.main", f"--config={config_file}", f"--workdir={workdir}"]
  env = dict(os.environ, PYTHONPATH=str(repo))
  proc = subprocess.Popen(
      args, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=240)
  assert proc.returncode == 0, out
  steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  return workdir, max(steps), out

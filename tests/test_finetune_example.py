"""BUILD.md's worked example ("Training on your data") on the tiny model: a LLaVA file as
released -> inspect -> stage-3 fine-tuning from the command line (its image
conversations and its text-only ones as two sources of one file) -> export to the
transformers layout, which loads back to the trained parameters."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
from format_fixtures import llava as llava_fixture

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", *args],
      cwd=ROOT,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)},
      capture_output=True,
      text=True,
      timeout=600,
  )


def test_a_llava_file_fine_tunes_from_the_command_line_and_exports(tmp_path):
  import dsvl_jax

  fields = llava_fixture.build(tmp_path / "llava")
  source = {k: v for k, v in fields.items() if k != "modality"}
  sources = json.dumps({"llava": source, "llava_text": {**source, "modality": "text"}})
  common = [
      "--config=configs/tiny.py",
      "--config.data.stage=3",
      "--config.data.multimodal_share=0.5",
      "--config.data.schedule=constant",
      f"--config.data.sources={sources}",
  ]
  shown = _run("dsvl_jax.data.inspect", *common, "--samples=2", f"--out={tmp_path / 'inspect.png'}")
  assert shown.returncode == 0, shown.stderr[-3000:]
  assert "<image" in shown.stdout and "[[" in shown.stdout  # placeholders, supervised spans
  assert (tmp_path / "inspect.png").stat().st_size > 0

  run = tmp_path / "run"
  trained = _run(
      "dsvl_jax.main",
      *common,
      f"--workdir={run}",
      "--config.train.steps=4",
      "--config.train.checkpoint_every=4",
      "--config.train.log_every=1",
  )
  assert trained.returncode == 0, trained.stderr[-3000:]
  metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
  last = [m for m in metrics if "data/samples/llava" in m][-1]
  assert last["data/samples/llava"] > 0 and last["data/samples/llava_text"] > 0
  assert last["data/skipped/malformed"] > 0  # the fixture's bad records, counted

  exported = _run("convert", "export", "--src", str(run), "--dst", str(tmp_path / "hf"))
  assert exported.returncode == 0, exported.stderr[-3000:]
  ours, theirs = dsvl_jax.load(str(run)), dsvl_jax.load(str(tmp_path / "hf"))
  for a, b in zip(jax.tree.leaves(ours.params), jax.tree.leaves(theirs.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

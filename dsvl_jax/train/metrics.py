"""Where training metrics go: the console, TensorBoard event files and metrics.jsonl.

Only process 0 writes (the caller passes `enabled`); every process computes the same
global metrics. One jsonl line per log step: {"step": s, "<name>": value, ...}.

A run resumed at step s (after a kill, from an earlier checkpoint, or from scratch) trains
the steps after s again: their old lines are dropped from metrics.jsonl first, so each
step is there once, the resumed run's. TensorBoard event files are append-only: the writer
marks a restart at s + 1 (tensorboardX's purge_step), and TensorBoard hides the older
points from that step on.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

import tqdm


class MetricsWriter:

  def __init__(
      self,
      workdir: str | pathlib.Path,
      *,
      enabled: bool,
      tensorboard: bool,
      progress: bool,
      total_steps: int,
      initial_step: int,
  ):
    self.enabled = enabled
    self._jsonl = self._tb = self._bar = None
    if not enabled:
      return
    workdir = pathlib.Path(workdir)
    _drop_after(workdir / "metrics.jsonl", initial_step)
    self._jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
    if tensorboard:
      import tensorboardX  # local: only the writing process needs it

      self._tb = tensorboardX.SummaryWriter(
          str(workdir / "tensorboard"), purge_step=initial_step + 1
      )
    if progress:
      self._bar = tqdm.tqdm(
          total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True, leave=True
      )

  def write(self, step: int, metrics: Mapping[str, Any], console: str | None = None) -> None:
    """Records scalar metrics at `step`; `console` is the line a reader sees."""
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items() if _is_number(v)}
    self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in clean.items():
        self._tb.add_scalar(k, v, step)
      self._tb.flush()
    if console:
      if self._bar is not None:
        self._bar.write(console)
      else:
        print(console, flush=True)

  def text(self, line: str) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(line)
    else:
      print(line, flush=True)

  def advance(self, n: int = 1, **postfix) -> None:
    if self._bar is not None:
      self._bar.update(n)
      if postfix:
        self._bar.set_postfix(postfix, refresh=False)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()


def _drop_after(path: pathlib.Path, step: int) -> None:
  """Drops the lines of steps after `step` and a line torn by a kill (no newline: the next
  line would be glued to it). Rewritten through a temporary file and os.replace, so that a
  kill during the rewrite leaves the old file or the new one."""
  if not path.is_file():
    return
  lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
  kept = [l for l in lines if l.endswith("\n") and _line_step(l) <= step]
  if kept == lines:
    return
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _line_step(line: str) -> float:
  """A line's step; -inf (kept) for a line that is not a step's record."""
  try:
    record = json.loads(line)
  except ValueError:
    return float("-inf")
  step = record.get("step") if isinstance(record, dict) else None
  return step if isinstance(step, (int, float)) else float("-inf")


def _is_number(v: Any) -> bool:
  try:
    float(v)  # NaN included: a non-finite loss is worth recording
    return True
  except (TypeError, ValueError):
    return False

"""Training checkpoints: orbax `CheckpointManager`, asynchronous, keeping the last N.

A training workdir:

  WORKDIR/config.json                the run's whole config (checked on restart)
  WORKDIR/checkpoints/<step>/params  every parameter (an orbax PyTree: what
                                     `dsvl_jax.load` and `python -m convert export` read);
                                     a LoRA run's only the trained ones, its frozen base
                                     named in WORKDIR/base.json (checkpoint/run_base.py)
  WORKDIR/checkpoints/<step>/train   optimizer state (trainable parameters only), step,
                                     PRNG key, skipped-update count
  WORKDIR/checkpoints/<step>/data    the grain iterator state, one JSON per host
                                     (process_<i>-of-<n>.json, grain's handler)

Restoring targets abstract arrays that carry shardings, so each device reads its own
shards, onto whatever mesh the restoring run has (another mesh shape, device count or
number of hosts). The data state follows: restored on another number of hosts, each
host regroups the saved hosts' row states into its own (pipeline.regroup_states).

A step that does not restore (a truncated file, a torn JSON) is skipped for the next
older one; once one restores, the newer damaged steps are moved to
WORKDIR/checkpoints_damaged/<step>-<UTC time>, never deleted (the resumed run trains through
those step numbers again and saves them). When no step restores nothing is moved and the
run stops with one line (CheckpointError).
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys
import time
from typing import Any, Callable

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from dsvl_jax.checkpoint import params_io
from dsvl_jax.config.schema import ConfigError
from dsvl_jax.data.pipeline import regroup_states
from dsvl_jax.models import lora
from dsvl_jax.train.step import TrainState

DAMAGED = "checkpoints_damaged"  # beside checkpoints/: orbax neither lists nor deletes it


class CheckpointError(ConfigError):
  """No checkpoint of the workdir restores. Like a bad field, the fix is on the command
  line (another --workdir), so dsvl_jax.main prints it as one line and exits 2."""


class Checkpoints:
  """Saves and restores (state, data iterator) under WORKDIR/checkpoints.

  saved: None (every parameter saved), or (mask, base): only the parameters where the
  mask (a tree like the params) is True are saved, and a restore lays them over `base()`
  (called once, outside the damaged-step handling: a missing or changed base is the
  run's error, not a damaged step's).
  """

  def __init__(
      self,
      workdir: str | pathlib.Path,
      keep: int,
      async_save: bool = True,
      saved: tuple[Any, Callable[[], Any]] | None = None,
  ):
    self.saved = saved
    self.directory = pathlib.Path(workdir).absolute() / params_io.TRAIN_CHECKPOINTS
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save
        ),
    )

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(self, state: TrainState, data_iterator: Any) -> None:
    """Saves at state.step (returns once device arrays are copied when async)."""
    step = int(jax.device_get(state.step))
    self._mngr.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(self._kept(state.params)),
            train=ocp.args.StandardSave(_train_item(state)),
            data=grain.checkpoint.CheckpointSave(data_iterator),
        ),
        force=True,
    )

  def _kept(self, tree: Any) -> Any:
    """What a checkpoint holds of a params-like tree."""
    if self.saved is None:
      return tree
    keep = lora.flatten(self.saved[0])
    return lora.unflatten({k: v for k, v in lora.flatten(tree).items() if keep[k]})

  def restore(
      self, step: int, abstract: TrainState, data_iterator: Any, base: Any = None
  ) -> TrainState:
    """State at `step` onto `abstract` (ShapeDtypeStructs with shardings); the data
    iterator is set in place once everything was read. Each item is read by its orbax
    handler, not through the manager, whose restore ends in a barrier that a process
    whose read failed never reaches (restore_latest has every process agree instead)."""
    step_dir = self.directory / str(step)
    index, count = data_iterator.get_state()["process"]
    data_dir = step_dir / "data"
    own = data_dir / f"process_{index}-of-{count}.json"  # grain's handler's file
    if own.exists():
      data_state = json.loads(own.read_text())
    else:  # saved by another number of hosts: regroup their rows
      files = sorted(data_dir.glob("process_*-of-*.json"))
      if not files:
        raise FileNotFoundError(f"no data iterator state in {data_dir}")
      data_state = regroup_states([json.loads(f.read_text()) for f in files], index, count)
    handler = ocp.StandardCheckpointHandler()
    try:
      params = handler.restore(
          epath.Path(step_dir / "params"),
          args=ocp.args.StandardRestore(self._kept(abstract.params)),
      )
      if base is not None:
        params = lora.merge(base, params)
      t = handler.restore(
          epath.Path(step_dir / "train"), args=ocp.args.StandardRestore(_train_item(abstract))
      )
    finally:
      handler.close()
    data_iterator.set_state(data_state)
    return TrainState(
        step=t["step"],
        params=params,
        opt_state=t["opt_state"],
        rng=t["rng"],
        nonfinite=t["nonfinite"],
    )

  def restore_latest(self, abstract: TrainState, data_iterator: Any) -> TrainState | None:
    """The newest step that restores completely on every process, or None when nothing
    was saved; raises CheckpointError when steps exist and none restores."""
    workdir = self.directory.parent
    damaged = []
    steps = self.all_steps()
    base = self.saved[1]() if steps and self.saved is not None else None
    for step in reversed(steps):
      before = data_iterator.get_state()  # set back if another process failed
      _ABANDONED_READS.watch(self.directory / str(step))  # stragglers can beat the error
      try:
        state, cause = self.restore(step, abstract, data_iterator, base), None
        _ABANDONED_READS.forget(self.directory / str(step))
      # orbax, tensorstore and json raise many types for a damaged file
      except Exception as e:  # pylint: disable=broad-except
        state, cause = None, _first_line(e)
      if _on_every_process(cause is None):
        for bad in damaged:  # only now: when no step restores, nothing moves
          logging.warning(
              "%s: moved the damaged checkpoint step %d to %s; resuming from step %d",
              workdir,
              bad,
              self.move_aside(bad),
              step,
          )
        logging.info("resuming %s from step %d", workdir, step)
        return state
      data_iterator.set_state(before)
      damaged.append(step)
      logging.warning(
          "%s: checkpoint step %d does not restore (%s)%s",
          workdir,
          step,
          cause or "it failed on another process",
          "; trying the previous one" if step != steps[0] else "",
      )
    if damaged:
      raise CheckpointError(
          f"{workdir}: no checkpoint restores (steps {', '.join(map(str, damaged))} damaged, "
          f"see the warnings above); start over with a new --workdir, or move "
          f"{self.directory} aside to start over in this one"
      )
    return None

  def move_aside(self, step: int) -> pathlib.Path:
    """Moves a step to WORKDIR/checkpoints_damaged/<step>-<UTC time> (kept for a look, never
    deleted) and forgets it, so that the run can save that step again. Every process
    calls it; process 0 moves."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = self.directory.parent / DAMAGED / f"{step}-{stamp}"
    if jax.process_index() == 0:
      dest.parent.mkdir(parents=True, exist_ok=True)
      (self.directory / str(step)).rename(dest)
    if jax.process_count() > 1:  # nobody re-reads the step list before the move
      multihost_utils.sync_global_devices(f"moved checkpoint {step} aside")
    self._mngr.reload()
    return dest

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def _train_item(state: TrainState) -> dict[str, Any]:
  return {
      "step": state.step,
      "opt_state": state.opt_state,
      "rng": state.rng,
      "nonfinite": state.nonfinite,
  }


def _on_every_process(ok: bool) -> bool:
  """Whether `ok` holds on every process, so that all resume from the same step."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


def _first_line(e: BaseException) -> str:
  """The cause of a failed restore in a line: the innermost exception (tensorstore's,
  which names the file; orbax's wrapper prints a page of spec)."""
  while e.__cause__ is not None:
    e = e.__cause__
  line = next((l.strip() for l in str(e).splitlines() if l.strip()), "")
  line = f"{type(e).__name__}: {line}" if line else type(e).__name__
  return line if len(line) <= 300 else line[:297] + "..."


class _AbandonedReads:
  """orbax gives up a failed restore with reads still in flight; as they finish or are
  collected (at exit too) asyncio and Python print their errors, tracebacks and all, pages
  for the one line already warned. While a step is being restored or has failed, the
  reports of reads of that step (their errors name its path) and of callbacks into the
  closed loop are dropped; every other report passes."""

  def __init__(self):
    self._paths: list[str] = []
    self._next_hook = None

  def watch(self, step_dir: pathlib.Path) -> None:
    if self._next_hook is None:
      self._next_hook = sys.unraisablehook
      sys.unraisablehook = self._unraisable
      logging.getLogger("asyncio").addFilter(self._keep_record)
    self._paths.append(f"{step_dir}/")

  def forget(self, step_dir: pathlib.Path) -> None:
    self._paths.remove(f"{step_dir}/")

  def _ours(self, e: BaseException | None) -> bool:
    for _ in range(8):  # an error and its causes
      if e is None or not self._paths:
        return False
      if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
        return True
      if any(p in str(e) for p in self._paths):
        return True
      e = e.__cause__
    return False

  def _unraisable(self, unraisable) -> None:
    if not self._ours(unraisable.exc_value):
      self._next_hook(unraisable)

  def _keep_record(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and self._ours(record.exc_info[1]))


_ABANDONED_READS = _AbandonedReads()

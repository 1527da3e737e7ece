"""Training checkpoints: orbax `CheckpointManager`, asynchronous, keeping the last N.

A training workdir:

  WORKDIR/config.json                the run's whole config (checked on restart)
  WORKDIR/checkpoints/<step>/params  every parameter (an orbax PyTree: what
                                     `dsvl_jax.load` and `python -m convert export` read)
  WORKDIR/checkpoints/<step>/train   optimizer state (trainable parameters only), step,
                                     PRNG key, skipped-update count
  WORKDIR/checkpoints/<step>/data    the grain iterator state, one JSON per host
                                     (process_<i>-of-<n>.json, grain's handler)

Restoring targets abstract arrays that carry shardings, so each device reads its own
shards, onto whatever mesh the restoring run has (another mesh shape, device count or
number of hosts). The data state follows: restored on another number of hosts, each
host regroups the saved hosts' row states into its own (pipeline.regroup_states).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from dsvl_jax import params_io
from dsvl_jax.data.pipeline import regroup_states
from dsvl_jax.train.step import TrainState


class Checkpoints:
  """Saves and restores (state, data iterator) under WORKDIR/checkpoints."""

  def __init__(self, workdir: str | pathlib.Path, keep: int, async_save: bool = True):
    self.directory = pathlib.Path(workdir).absolute() / params_io.TRAIN_CHECKPOINTS
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, state: TrainState, data_iterator: Any) -> None:
    """Saves at state.step (returns once device arrays are copied when async)."""
    step = int(jax.device_get(state.step))
    self._mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        train=ocp.args.StandardSave(_train_item(state)),
        data=grain.checkpoint.CheckpointSave(data_iterator)), force=True)

  def restore(self, step: int, abstract: TrainState, data_iterator: Any) -> TrainState:
    """State at `step` onto `abstract` (ShapeDtypeStructs with shardings); the data
    iterator is restored in place."""
    items = {"params": ocp.args.StandardRestore(abstract.params),
             "train": ocp.args.StandardRestore(_train_item(abstract))}
    index, count = data_iterator.get_state()["process"]
    data_dir = epath.Path(self.directory) / str(step) / "data"
    same_hosts = (data_dir / f"process_{index}-of-{count}.json").exists()
    if same_hosts:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    out = self._mngr.restore(step, args=ocp.args.Composite(**items))
    if not same_hosts:  # saved by another number of hosts: regroup their rows
      files = sorted(data_dir.glob("process_*-of-*.json"))
      if not files:
        raise FileNotFoundError(f"no data iterator state in {data_dir}")
      data_iterator.set_state(regroup_states([json.loads(f.read_text()) for f in files],
                                             index, count))
    t = out["train"]
    return TrainState(step=t["step"], params=out["params"], opt_state=t["opt_state"],
                      rng=t["rng"], nonfinite=t["nonfinite"])

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def _train_item(state: TrainState) -> dict[str, Any]:
  return {"step": state.step, "opt_state": state.opt_state, "rng": state.rng,
          "nonfinite": state.nonfinite}

"""The training loop: `--config.mode=train` (see BUILD.md, "Training").

  config -> typed configs (errors name the field) -> workdir (resume or start) -> mesh
  -> params (a checkpoint, a previous stage's workdir, or random) -> grain pipeline
  -> for each step: the step's modality and shapes pick a compiled program (compiled
     once per (modality, shape), counted and logged) -> metrics, evaluation,
     checkpoints (every K steps, at the end, and on SIGTERM: finish the step, save, exit 0)

Every process runs this same loop on its own slice of the global batch; process 0
writes the config, metrics and logs.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import pathlib
import shutil
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from dsvl_jax.checkpoint import params_io, run_base
from dsvl_jax.config.schema import ConfigError, check
from dsvl_jax.data.config import DataConfig
from dsvl_jax.data.mixing import MULTIMODAL, TEXT
from dsvl_jax.data.pipeline import TrainDataset
from dsvl_jax.eval.evaluator import Evaluator, flat_metrics, headline
from dsvl_jax.models import lora, quant
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.init import abstract_params, init_adapters, init_params, logical_axes
from dsvl_jax.models.vlm import DeepseekVL
from dsvl_jax.processor.layout import TokenLayout
from dsvl_jax.processor.tokenizer import make_tokenizer
from dsvl_jax.runtime import sharding
from dsvl_jax.train import flops as flops_lib
from dsvl_jax.train import freezing, partitioning
from dsvl_jax.train import workdir as workdir_lib
from dsvl_jax.train.checkpoints import CheckpointError, Checkpoints
from dsvl_jax.train.config import (
    MeshConfig,
    OptimizerConfig,
    TrainConfig,
    mesh_config,
    optimizer_config,
    train_config,
)
from dsvl_jax.train.memory_report import memory_report
from dsvl_jax.train.metrics import MetricsWriter
from dsvl_jax.train.optimizer import make_optimizer
from dsvl_jax.train.schedules import learning_rate
from dsvl_jax.train.step import BATCH_KEYS, TrainState, init_state, make_train_step


class NonFiniteError(RuntimeError):
  """A non-finite loss or gradient with train.nonfinite='stop' (a checkpoint was saved)."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Every typed part of a training config, validated together."""

  model: VLMConfig
  data: DataConfig
  train: TrainConfig
  optimizer: OptimizerConfig
  mesh: MeshConfig
  seed: int

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> "RunConfig":
    for part in ("model", "data", "train", "optimizer"):
      check(part in config and config[part] is not None, part, "missing from the config")
    train = train_config(config.train)
    data = config.data.to_dict()
    if not data.get("tokenizer"):  # "" = the files of the checkpoint training starts from
      check(
          bool(train.init_from),
          "data.tokenizer",
          "'' means the tokenizer of train.init_from, but train.init_from is '' too",
      )
      data["tokenizer"] = train.init_from
    run = cls(
        model=VLMConfig.from_dict(config.model),
        data=DataConfig.from_dict(data),
        train=train,
        optimizer=optimizer_config(config.optimizer),
        mesh=mesh_config(config.get("mesh") or {}),
        seed=int(config.get("seed", 0)),
    )
    b, a = run.data.global_batch_size, run.train.grad_accum_steps
    check(b % a == 0, "train.grad_accum_steps", f"{a} does not divide data.global_batch_size={b}")
    check(
        run.model.compute.quant.kind == "none",
        "model.compute.quant.kind",
        "weight-only quantisation is for inference (chat / eval / serve .quantize); to train "
        "over quantised frozen kernels set model.compute.lora.base_quant (QLoRA)",
    )
    return run


def _same_devices(leaf: Any, target: Any) -> bool:
  """Whether a jax array sits on the devices of `target` (a sharding)."""
  devices = getattr(leaf, "sharding", None)
  return target is not None and devices is not None and devices.device_set == target.device_set


def _shape_key(modality: str, batch: dict[str, np.ndarray]) -> tuple:
  return (modality,) + tuple((k, batch[k].shape, str(batch[k].dtype)) for k in BATCH_KEYS)


class Trainer:
  """Holds the mesh, the compiled steps, the state and the data iterator of one run."""

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      workdir: str | pathlib.Path,
      devices: list[Any] | None = None,
  ):
    """devices: the mesh's devices; None = jax.devices(). Abstract devices (a TPU
    topology, experiments/aot_compile.py) build the same compiled step without
    allocating anything: construction neither touches a device nor the workdir (with
    train.eval_every it reads the evaluation sets)."""
    self.config = config
    self.run_cfg = run = RunConfig.of(config)
    self.workdir = pathlib.Path(workdir).absolute()
    self.is_chief = jax.process_index() == 0
    if devices is None:
      devices = jax.devices()
    if run.mesh.num_devices:
      check(
          jax.process_count() == 1 and run.mesh.num_devices <= len(devices),
          "mesh.num_devices",
          f"{run.mesh.num_devices} of {len(devices)} devices (one process only)",
      )
      devices = devices[: run.mesh.num_devices]
    self.mesh = sharding.make_mesh(run.mesh.shape, devices)
    rows = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    per_pass = run.data.global_batch_size // run.train.grad_accum_steps
    check(
        per_pass % rows == 0,
        "data.global_batch_size",
        f"{per_pass} rows per accumulation step do not split over the mesh's "
        f"data x fsdp = {rows} devices",
    )
    self.model = DeepseekVL(run.model)

    abstract = abstract_params(run.model)
    self.mask = freezing.trainable_mask(abstract, run.train.trainable)
    labels = freezing.partition(freezing.group_labels(abstract), self.mask)[0]
    self.tx = make_optimizer(run.optimizer, run.train.steps, labels)
    self.schedule = learning_rate(run.optimizer, run.train.steps)
    pdtype = jnp.dtype(run.model.compute.param_dtype)
    # Float leaves in the storage dtype; a quantised kernel's integer codes as they are.
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(
            a.shape, pdtype if jnp.issubdtype(a.dtype, jnp.floating) else a.dtype
        ),
        abstract,
    )
    trainable, frozen = freezing.partition(abstract, self.mask)
    self.param_counts = {
        "params/trainable": freezing.count(trainable),
        "params/frozen": freezing.count(frozen),
        "params/trainable_bytes": freezing.nbytes(trainable),
        "params/frozen_bytes": freezing.nbytes(frozen),
    }
    state_abstract = jax.eval_shape(self._init_state, abstract)
    param_logical = logical_axes(run.model)
    self.state_sharding = partitioning.state_shardings(state_abstract, param_logical, self.mesh)
    self.memory_report = memory_report(
        state_abstract.params,
        self.state_sharding.params,
        param_logical,
        state_abstract.opt_state,
        self.state_sharding.opt_state,
        self.mesh,
    )
    self.state_abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        state_abstract,
        self.state_sharding,
    )
    self._step = jax.jit(
        make_train_step(
            self.model,
            self.tx,
            self.mask,
            accum=run.train.grad_accum_steps,
            loss_chunk=run.train.loss_chunk_tokens,
        ),
        in_shardings=(self.state_sharding, partitioning.batch_sharding(self.mesh)),
        out_shardings=(self.state_sharding, sharding.replicated(self.mesh)),
        donate_argnums=(0,),
    )
    self.compiled: dict[tuple, Any] = {}
    self.evaluator = None
    if run.train.eval_every:
      sets = (config.get("eval") or {}).get("sets") or {}
      check(
          bool(sets),
          "eval.sets",
          f"train.eval_every={run.train.eval_every} but no evaluation sets are configured",
      )
      # Built now (sets loaded, prompts tokenised): a bad set fails before training.
      tokenizer = make_tokenizer(run.data.tokenizer, TokenLayout.of(run.model))
      self.evaluator = Evaluator(run.model, tokenizer, config.eval, lockstep=True)
    self.compile_seconds = 0.0
    self.layout = TokenLayout.of(run.model)

  @functools.cached_property
  def checkpoints(self) -> Checkpoints:
    train = self.run_cfg.train
    # A LoRA run saves what it trains; the base is named once (checkpoint/run_base.py).
    # One whose steps were saved whole before base.json existed goes on saving them so.
    whole = (
        params_io.latest_params_dir(self.workdir) is not None
        and run_base.read(self.workdir) is None
    )
    lora_run = self.run_cfg.model.compute.lora.rank > 0
    saved = (self.mask, self.base_params) if lora_run and not whole else None
    return Checkpoints(self.workdir, train.keep_checkpoints, train.async_checkpoints, saved)

  # -- state ---------------------------------------------------------------------------

  def _init_state(self, params) -> TrainState:
    return init_state(params, self.tx, self.mask, self.run_cfg.seed)

  def initial_params(self) -> Any:
    """train.init_from: a checkpoint of any kind dsvl_jax.load reads (a previous stage's
    workdir included), or random initialisation; then train.init_groups replace the
    parameters of their groups from other checkpoints. With adapters
    (model.compute.lora) those checkpoints give the base, the adapters start fresh, the
    base is named in WORKDIR/base.json (written to WORKDIR/base first when it is no
    checkpoint yet), and with lora.base_quant its adapted kernels are quantised (QLoRA)."""
    run = self.run_cfg
    spec = run.model.compute.lora
    float_cfg, base_shardings, adapter_shardings, float_shardings = self._base_layout()
    key = jax.random.key(run.seed)
    adapters = None
    staged = self._staging(base_shardings)
    if run.train.init_from:
      base = self._read(run.train.init_from, "train.init_from", staged)
    else:
      adapters, base = lora.split(init_params(float_cfg, key, float_shardings))
    for group, path in run.train.init_groups:
      other = self._read(path, f"train.init_groups.{group}", staged)
      mask = freezing.group_mask(base, (group,), f"train.init_groups.{group}")
      base = freezing.merge(freezing.partition(other, mask)[0], freezing.partition(base, mask)[1])
    if not spec.rank:
      return base
    self._name_base(base)
    if adapters is None:
      adapters = init_adapters(run.model, key, adapter_shardings)
    return lora.merge(self._quantized(base), adapters)

  def _base_layout(self) -> tuple[Any, Any, Any, Any]:
    """(the model's config with float kernels (QLoRA's before quantising), the base's
    shardings, the adapters' shardings, the whole float tree's shardings)."""
    cfg = self.run_cfg.model
    float_cfg = cfg.replace(
        compute=dataclasses.replace(
            cfg.compute, lora=dataclasses.replace(cfg.compute.lora, base_quant="none")
        )
    )
    shardings = sharding.logical_to_mesh(
        logical_axes(float_cfg), self.mesh, shapes=abstract_params(float_cfg)
    )
    adapter_shardings, base_shardings = lora.split(shardings)
    return float_cfg, base_shardings, adapter_shardings, shardings

  def _staging(self, base_shardings: Any) -> Any:
    """Where a QLoRA run reads its float base: host memory when the host has a CPU
    backend beside the accelerator, so that the float base never sits on the devices
    whole (`_quantized` moves it over leaf by leaf); else, and without QLoRA, the
    base's own shardings."""
    if self.run_cfg.model.compute.lora.base_quant == "none" or jax.default_backend() == "cpu":
      return base_shardings
    try:
      host = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    except RuntimeError:  # JAX_PLATFORMS names the accelerator alone
      return base_shardings
    return jax.tree.map(lambda _: host, base_shardings)

  def _quantized(self, base: Any) -> Any:
    """The float base (on the devices or in host memory, `_staging`) placed as the run
    holds it, its adapted kernels quantised (lora.base_quant) one at a time and their
    float arrays deleted (`base` is consumed): the peak is the quantised base plus one
    float kernel beside what has not been quantised yet."""
    spec = self.run_cfg.model.compute.lora
    if spec.base_quant == "none":
      return base
    targets = lora.flatten(lora.split(self.state_sharding.params)[1])
    flat, out = lora.flatten(base), {}
    for path in list(flat):
      leaf = flat.pop(path)
      if not _same_devices(leaf, targets.get(path)):
        leaf = np.asarray(leaf)  # from host memory: the global value, on every process
      module, name = path.rsplit("/", 1)
      if name == "kernel" and spec.adapts(module):
        where = {k: targets[f"{module}/kernel_q/{k}"] for k in ("codes", "scale")}
        quantize = functools.partial(quant.quantize, kind=spec.base_quant, block=spec.quant_block)
        for k, v in jax.jit(quantize, out_shardings=where)(leaf).items():
          out[f"{module}/kernel_q/{k}"] = v
        if isinstance(leaf, jax.Array):  # on the devices already: its memory goes now
          leaf.delete()
      else:
        out[path] = jax.device_put(leaf, targets[path])
    return lora.unflatten(out)

  def _name_base(self, base: Any) -> None:
    """WORKDIR/base.json for a LoRA run's float base: train.init_from's checkpoint (a
    training workdir's step folder, which later steps of that run do not change) when
    the base is that checkpoint alone, else WORKDIR/base, written here."""
    train = self.run_cfg.train
    print_ = run_base.fingerprint(base)
    known = run_base.read(self.workdir)
    if known is not None:  # an earlier start of this run that saved no step yet
      run_base.check(known, base, self.workdir)
      return
    if train.init_from and not train.init_groups:
      trained = params_io.training_checkpoint(train.init_from)
      path = trained[0].parent if trained is not None else pathlib.Path(train.init_from)
    else:
      path = self.workdir / run_base.BASE_DIR
      if path.exists() and self.is_chief:  # a write cut short before base.json
        shutil.rmtree(path)
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices("cleared the run's base folder")
      params_io.save(path, base, run_base.plain(self.run_cfg.model))
    run_base.write(self.workdir, path, print_)

  def base_params(self) -> Any:
    """A LoRA run's frozen base as its checkpoints leave it out: read from the
    checkpoint WORKDIR/base.json names, checked against its fingerprint, quantised as
    the run's config says."""
    ref = run_base.read(self.workdir)
    if ref is None:
      raise CheckpointError(
          f"{self.workdir}: a LoRA run's checkpoints but no {run_base.BASE_FILE} naming "
          f"its base"
      )
    field = f"{self.workdir}/{run_base.BASE_FILE}"
    base = self._read(ref["path"], field, self._staging(self._base_layout()[1]))
    run_base.check(ref, base, self.workdir)
    return self._quantized(base)

  def _read(self, path: str, field: str, shardings: Any) -> Any:
    """Parameters of a checkpoint whose architecture must be config.model's (adapters
    aside: the base tree, placed by `shardings`)."""
    from dsvl_jax.checkpoint.formats import read_any  # pylint: disable=g-import-not-at-top

    run = self.run_cfg
    stored = params_io.stored_config(path)  # None: a PyTorch folder
    if stored is not None and stored.compute.quant.kind != "none":
      raise ConfigError(
          f"config field '{field}': {path} holds {stored.compute.quant.kind} quantised "
          f"kernels (an inference checkpoint); train from its float checkpoint (QLoRA "
          f"quantises the base itself: model.compute.lora.base_quant)"
      )
    loaded_cfg, params = read_any(
        path, dtype=run.model.compute.param_dtype, shardings_fn=lambda _: shardings
    )
    ours = workdir_lib.flatten({k: v for k, v in run.model.to_dict().items() if k != "compute"})
    theirs = workdir_lib.flatten({k: v for k, v in loaded_cfg.to_dict().items() if k != "compute"})
    diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if diff:
      raise ConfigError(
          f"config field '{field}': {path} holds a model whose "
          f"{', '.join('model.' + d for d in diff)} differ from config.model"
      )
    return params

  def restore_or_init(self, data_iterator) -> TrainState:
    """The newest checkpoint that restores (damaged newer ones are moved aside, and none
    restoring is a CheckpointError: Checkpoints.restore_latest), else a fresh state."""
    state = self.checkpoints.restore_latest(self.state_abstract, data_iterator)
    if state is not None:
      return state
    init = jax.jit(self._init_state, out_shardings=self.state_sharding)
    return init(self.initial_params())

  # -- the step ------------------------------------------------------------------------

  def compiled_step(
      self,
      state: TrainState,
      modality: str,
      batch: dict[str, jax.Array],
      writer: MetricsWriter | None = None,
  ):
    """The executable for this (modality, shapes), compiled on first sight."""
    key = _shape_key(modality, batch)
    exe = self.compiled.get(key)
    if exe is None:
      t0 = time.perf_counter()
      with jax.set_mesh(self.mesh), sharding.activation_rules():
        exe = self._step.lower(state, batch).compile()
      dt = time.perf_counter() - t0
      self.compile_seconds += dt
      self.compiled[key] = exe
      msg = (
          f"compiled the {modality} train step (#{len(self.compiled)}, {dt:.1f} s): "
          f"{ {k: tuple(batch[k].shape) for k in BATCH_KEYS} }"
      )
      logging.info(msg)
      if writer is not None:
        writer.text(msg)
    return exe

  # -- the loop ------------------------------------------------------------------------

  def run(self, until: int | None = None) -> dict[str, Any]:
    """Trains to train.steps (or to step `until`, then saves and returns)."""
    run = self.run_cfg
    resuming = self.checkpoints.latest_step() is not None
    workdir_lib.prepare(self.workdir, self.config, resuming, write=self.is_chief)
    if self.is_chief:
      workdir_lib.copy_tokenizer(run.data.tokenizer, self.workdir)
    data = TrainDataset(run.data, self.layout)
    it = iter(data)
    stop = _StopFlag()
    writer = None
    try:
      state = self.restore_or_init(it)
      start = int(jax.device_get(state.step))
      if it.step != start:
        raise RuntimeError(
            f"checkpoint state is at step {start} but its data iterator at {it.step}"
        )
      writer = MetricsWriter(
          self.workdir,
          enabled=self.is_chief,
          tensorboard=run.train.tensorboard,
          progress=run.train.progress,
          total_steps=run.train.steps,
          initial_step=start,
      )
      writer.text(
          f"{'resuming' if resuming else 'training'} {self.workdir} at step {start} "
          f"of {run.train.steps}: {self.param_counts['params/trainable']:,} trainable "
          f"and {self.param_counts['params/frozen']:,} frozen parameters "
          f"({self.param_counts['params/frozen_bytes'] / 2**20:,.1f} MiB stored) "
          f"({', '.join(run.train.trainable)} trained); mesh "
          f"{dict(self.mesh.shape)}"
      )
      writer.text(self.memory_report.text())
      summary = self._loop(state, it, writer, stop, min(until or run.train.steps, run.train.steps))
    finally:
      stop.restore()
      it.close()
      self.checkpoints.close()
      if writer is not None:
        writer.close()
    return summary

  def _loop(
      self, state: TrainState, it, writer: MetricsWriter, stop: "_StopFlag", until: int
  ) -> dict[str, Any]:
    run = self.run_cfg
    tcfg = run.train
    peak = tcfg.peak_flops or _device_peak_flops(run.model.compute.dtype)
    devices = self.mesh.size
    window = _Window()
    last_saved = int(jax.device_get(state.step))
    summary: dict[str, Any] = {"preempted": False}
    step = last_saved
    while step < until:
      host = next(it)
      modality = host["modality"]
      arrays = {k: host[k] for k in BATCH_KEYS}
      batch = partitioning.put_batch(arrays, self.mesh)
      exe = self.compiled_step(state, modality, batch, writer)
      if not window.started:
        window.start(self.compile_seconds)
      state, metrics = exe(state, batch)
      step += 1
      shape = flops_lib.BatchShape.of(host["segment_ids"], host["num_images"])
      window.add(modality, metrics, shape, flops_lib.step_flops(run.model, tcfg.trainable, shape))
      if tcfg.nonfinite == "stop" and not bool(jax.device_get(metrics["finite"])):
        self.checkpoints.save(state, it)
        self.checkpoints.wait()
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step}; saved a "
            f"checkpoint at step {step} (train.nonfinite='stop')"
        )
      writer.advance(1)
      if step % tcfg.log_every == 0 or step == until:
        logged = self._log(step, window, it, writer, peak, devices)
        summary.update(logged)
        window = _Window()
      if tcfg.eval_every and step % tcfg.eval_every == 0:
        summary.update(self.evaluate(state, step, writer))
      if step % tcfg.checkpoint_every == 0 or step == until or stop.set:
        self.checkpoints.save(state, it)
        last_saved = step
      if stop.set:
        writer.text(f"SIGTERM: saved step {step}; exiting")
        summary["preempted"] = True
        break
    if last_saved != step:
      self.checkpoints.save(state, it)
    self.checkpoints.wait()
    summary.update(
        {"step": step, "compilations": len(self.compiled), "compile_seconds": self.compile_seconds}
    )
    self.state = state
    return summary

  def _log(
      self, step: int, window: "_Window", it, writer: MetricsWriter, peak: float, devices: int
  ) -> dict[str, float]:
    values = window.summary()
    elapsed = max(window.elapsed(self.compile_seconds), 1e-9)
    lr = float(self.schedule(step - 1))
    out = {
        "loss": values["loss"],
        "grad_norm": values["grad_norm"],
        "lr": lr,
        "supervised_tokens": values["supervised_tokens"],
        "nonfinite_skipped": values["nonfinite"],
        "tokens_per_s": window.tokens / elapsed,
        "step_time_s": elapsed / window.steps,
        "model_flops_per_s": window.flops / elapsed,
        "compilations": float(len(self.compiled)),
        **self.param_counts,
    }
    if peak:  # unknown accelerators have no peak: no MFU rather than a wrong one
      out["mfu"] = window.flops / (elapsed * devices * peak)
    for m in (TEXT, MULTIMODAL):
      if f"loss/{m}" in values:
        out[f"loss/{m}"] = values[f"loss/{m}"]
    out.update(it.metrics(_global_counts(it.counts())))
    skipped = out.get("data/skipped", 0.0)
    writer.write(
        step,
        out,
        console=(
            f"step {step}: loss {out['loss']:.4f} lr {lr:.3g} grad {out['grad_norm']:.3g} "
            f"{out['tokens_per_s']:,.0f} tok/s {out['step_time_s'] * 1e3:.0f} ms/step"
            + (f" MFU {out['mfu']:.1%}" if "mfu" in out else "")
            + f" compiled {len(self.compiled)}"
            + (f" skipped samples {skipped:.0f}" if skipped else "")
        ),
    )
    return out

  def evaluate(self, state: TrainState, step: int, writer: MetricsWriter) -> dict[str, float]:
    """Every set of config.eval.sets (the `--config.mode=eval` evaluator), every
    train.eval_every steps; benchmark sets write into workdir/eval/step_<step>."""
    outdir = pathlib.Path(self.workdir) / "eval" / f"step_{step}"
    with jax.set_mesh(self.mesh), sharding.activation_rules():
      results = self.evaluator(state.params, outdir)
    flat = flat_metrics(results)
    shown = [f"{n}/{k} {v:.3f}" for n, m in results.items() for k, v in headline(m).items()]
    writer.write(step, flat, console=f"step {step}: eval " + ", ".join(shown))
    return flat


class _Window:
  """Metrics of the steps since the last log line (device values fetched at log time)."""

  def __init__(self):
    self.started = False
    self.steps = self.tokens = 0
    self.flops = 0.0
    self._device: list[tuple[str, dict]] = []

  def start(self, compile_seconds: float):
    self.started, self._t0, self._compile0 = True, time.perf_counter(), compile_seconds

  def elapsed(self, compile_seconds: float) -> float:
    """Wall time of the window's steps, compilations inside the window excluded."""
    return time.perf_counter() - self._t0 - (compile_seconds - self._compile0)

  def add(self, modality: str, metrics: dict, shape: flops_lib.BatchShape, flops: float):
    self.steps += 1
    self.tokens += shape.tokens
    self.flops += flops
    self._device.append((modality, metrics))

  def summary(self) -> dict[str, float]:
    fetched = jax.device_get([m for _, m in self._device])  # waits for the window's steps
    by = collections.defaultdict(list)
    for (modality, _), m in zip(self._device, fetched):
      by["loss"].append(float(m["loss"]))
      by[f"loss/{modality}"].append(float(m["loss"]))
      by["grad_norm"].append(float(m["grad_norm"]))
      by["supervised_tokens"].append(float(m["supervised_tokens"]))
      by["nonfinite"].append(0.0 if bool(m["finite"]) else 1.0)
    out = {k: float(np.mean(v)) for k, v in by.items()}
    out["nonfinite"] = float(np.sum(by["nonfinite"]))
    return out


class _StopFlag:
  """SIGTERM (preemption) sets the flag; the loop finishes its step, saves and exits 0."""

  def __init__(self):
    self.set = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.set = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _global_counts(local: dict[str, int]) -> dict[str, int]:
  """The data counters summed over processes (each host reads its own rows of every
  step), except `steps/*`, which every host counts alike. Every process must call it at
  the same steps: it runs two collectives when there are several processes."""
  if jax.process_count() == 1:
    return local

  blob = np.frombuffer(json.dumps(local).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.int32(blob.size))
  padded = np.zeros(int(np.max(sizes)), np.uint8)
  padded[: blob.size] = blob
  blobs = multihost_utils.process_allgather(padded)
  total: collections.Counter = collections.Counter()
  for n, b in zip(np.ravel(sizes), blobs):
    total.update(json.loads(bytes(b[: int(n)])))
  for k, v in local.items():
    if k.startswith("steps/"):
      total[k] = v
  return dict(total)


def _device_peak_flops(compute_dtype: str) -> float | None:
  """The per-device peak (dsvl_jax/runtime/perf.py table; measured once on a CPU), or None."""
  from dsvl_jax.runtime import perf  # pylint: disable=g-import-not-at-top

  return perf.device_peak_flops(jax.devices()[0], compute_dtype)


def run(config: ml_collections.ConfigDict, workdir: str | None) -> dict[str, Any]:
  """`--config.mode=train`."""
  if not workdir:
    raise ConfigError("--workdir is required for training (checkpoints, metrics, config)")
  return Trainer(config, workdir).run()

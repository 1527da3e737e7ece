"""The training-data pipeline on grain: modality-grouped global steps, rows, hosts, resume.

Layout of one global step (`global_batch_size` = B rows, H hosts, b = B / H rows each):

  step s -> modality m = step_modality(seed, s, schedule)   (the same on every host)
         -> the next batch of m's pipeline; host h holds global rows h*b .. h*b + b - 1

Each modality has its own pipeline, so a text step never waits for an image:

  sources of m: range(len).shuffle(seed).repeat()      (reshuffled every epoch)
    -> MapDataset.mix(..., weights)                    (grain: deterministic proportions)
    -> global row r's k-th sample is stream[k*B + (r + k) % B]   (rotated deal)
    -> SampleEncoder: parse, tokenise, loss mask, decode + preprocess images, or Skipped
    -> RowsIterDataset: whole samples into rows of seq_len (one per row unless packing)
    -> zip of the host's b rows -> one host batch (numpy)
    -> mp_prefetch(num_workers)                         (grain worker processes)
       or, without workers, a prefetch thread (prefetch_batches ahead)

Because a row's contents depend only on its global row index, a host's batch is the same
slice of the same global batch whatever the number of hosts. Worker processes split each
row's stream (worker w reads its w-th, (W+w)-th, ... sample), so, as everywhere in grain,
packed batches depend on `num_workers` (deterministically); a checkpoint records it.

Batches (numpy, per host; L = seq_len, M = max_images_per_row, or 0 on text steps):
  inputs, targets, segment_ids, positions [b, L] int32; weights [b, L] float32 (the loss
  mask); images [b, M, 3, S, S] float32 in [0, 1]; num_images [b] int32 (valid slots,
  first in each row); "modality" and "step". Model use: flat images = the valid slots in
  row order (`valid_images`), segment_ids and positions as `DeepseekVL` takes them.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import zlib
from typing import Any, Mapping

import grain
import numpy as np
from absl import flags

from dsvl_jax.data import sources as sources_lib
from dsvl_jax.data.config import FORMATS, DataConfig, SourceConfig
from dsvl_jax.data.encoding import SampleEncoder, Skipped, check_tokenizer, pixels_to_unit
from dsvl_jax.data.mixing import MULTIMODAL, TEXT, step_modality
from dsvl_jax.data.packing import RowBuilder
from dsvl_jax.processor.layout import TokenLayout
from dsvl_jax.processor.tokenizer import make_tokenizer

STATE_VERSION = 1


def _seed(*parts) -> int:
  """A 32-bit seed from the data seed and names (stable across runs and hosts)."""
  words = [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
  return int(np.random.SeedSequence(words).generate_state(1)[0])


def open_source(src: SourceConfig, image_size: int) -> sources_lib.Source:
  """A random-access source for one configured source."""
  if src.type == "jsonl":
    return sources_lib.JsonlSource(src.paths[0])
  if src.type == "array_record":
    return sources_lib.ArrayRecordSource(list(src.paths))
  if src.type in FORMATS:
    from dsvl_jax.data import formats  # pylint: disable=g-import-not-at-top

    return formats.open_format(src)
  return sources_lib.SyntheticSource(
      src.synthetic_seed, src.synthetic_size, image_size, src.synthetic_kinds
  )


@dataclasses.dataclass(frozen=True)
class _Tag:
  """index -> (source name, index): what the encoder needs to fetch and name a record."""

  name: str

  def __call__(self, index: int) -> tuple[str, int]:
    return self.name, int(index)


def mixed_stream(cfg: DataConfig, modality: str, lengths: Mapping[str, int]) -> grain.MapDataset:
  """The infinite, seeded stream of (source, index) for one modality."""
  parts, weights = [], []
  for name, src in sorted(cfg.sources_of(modality).items()):
    if lengths[name] == 0:
      raise ValueError(f"data source {name!r} has no records")
    ds = grain.MapDataset.range(lengths[name])
    if cfg.shuffle:
      ds = ds.shuffle(seed=_seed(cfg.seed, modality, name))
    parts.append(ds.repeat().map(_Tag(name)))
    weights.append(src.weight)
  return parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights)


# ---------------------------------------------------------------------------- rows


@dataclasses.dataclass(frozen=True)
class _RowSample:
  """Global row r's k-th sample: stream[k * B + (r + k) % B].

  Block k of the stream (B samples) is dealt to the B rows, rotated by one each time:
  grain's mix is a fixed pattern (weights 3:1 -> A A A B), so without the rotation a row
  would read one source forever whenever B is a multiple of the pattern, and packed rows
  would over-sample the source with the shortest samples.
  """

  stream: grain.MapDataset
  row: int
  rows: int

  def __call__(self, k: int) -> tuple[str, int]:
    return self.stream[k * self.rows + (self.row + k) % self.rows]


@dataclasses.dataclass(frozen=True)
class RowSpec:
  seq_len: int
  pad_id: int
  image_shape: tuple[int, int, int]
  max_images: int  # image slots per row (0 on text rows)
  max_segments: int | None  # 1 = unpacked
  max_consecutive_skips: int


class RowsIterDataset(grain.IterDataset):
  """Samples (or Skipped) -> rows; each row carries the counts of what went into it."""

  def __init__(self, parent: grain.IterDataset, spec: RowSpec):
    super().__init__(parent)
    self._spec = spec

  def __iter__(self) -> "_RowsIterator":
    return _RowsIterator(self._parent.__iter__(), self._spec)

  def __str__(self) -> str:
    return f"RowsIterDataset({self._spec})"


class _RowsIterator(grain.DatasetIterator):
  """State: the parent's state before the sample held over for the next row (a sample
  that did not fit), so a restored iterator rebuilds exactly the rows that follow."""

  def __init__(self, parent: grain.DatasetIterator, spec: RowSpec):
    super().__init__(parent)
    self._spec = spec
    self._pending = None
    self._pending_state = None

  def __next__(self) -> dict[str, Any]:
    spec = self._spec
    row = RowBuilder(
        spec.seq_len, spec.pad_id, spec.image_shape, spec.max_images, spec.max_segments, np.uint8
    )
    stats: collections.Counter = collections.Counter()
    run_of_skips = 0
    while not row.full:
      if self._pending is not None:
        item, self._pending = self._pending, None
      else:
        state = self._parent.get_state()
        try:
          item = next(self._parent)
        except StopIteration:
          if row.empty:
            raise
          break
      if isinstance(item, Skipped):
        stats[f"skipped/{item.reason}"] += 1
        run_of_skips += 1
        if run_of_skips >= spec.max_consecutive_skips:
          # All-bad data (say every sample longer than seq_len) would otherwise spin here.
          raise ValueError(
              f"{run_of_skips} bad samples in a row, the last {item.name}: "
              f"{item.reason}: {item.detail}; fix the data or the config "
              f"(data.max_consecutive_skips)"
          )
        continue
      run_of_skips = 0
      if not row.fits(len(item.ids), len(item.images)):
        if row.empty:  # the encoder already refuses these; keep the invariant loud
          raise ValueError(f"{item.name} cannot fit an empty row")
        self._pending, self._pending_state = item, state
        break
      row.add(item.ids, item.loss_mask, item.images)
      stats[f"samples/{item.source}"] += 1
    packed = row.build()
    stats["real_tokens"] += row.used_tokens
    stats["total_tokens"] += spec.seq_len
    return {
        "inputs": packed.inputs,
        "targets": packed.targets,
        "weights": packed.weights,
        "segment_ids": packed.segment_ids,
        "positions": packed.positions,
        "pixels": packed.images,
        "num_images": np.int32(packed.num_images),
        "stats": dict(stats),
    }

  def get_state(self) -> dict[str, Any]:
    return {
        "parent": self._pending_state if self._pending is not None else self._parent.get_state()
    }

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._pending = self._pending_state = None


def _stack_rows(rows: tuple[dict[str, Any], ...]) -> dict[str, Any]:
  out = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != "stats"}
  stats: collections.Counter = collections.Counter()
  for r in rows:
    stats.update(r["stats"])
  out["stats"] = dict(stats)
  return out


def modality_dataset(
    cfg: DataConfig,
    layout: TokenLayout,
    modality: str,
    opened: Mapping[str, Any],
    process_index: int,
    process_count: int,
    tokenizer=None,
) -> grain.IterDataset:
  """This host's batches of one modality (before worker prefetch)."""
  if cfg.global_batch_size % process_count:
    raise ValueError(
        f"data.global_batch_size={cfg.global_batch_size} is not divisible by "
        f"the {process_count} processes"
    )
  per_host = cfg.global_batch_size // process_count
  names = sorted(cfg.sources_of(modality))
  mine = {n: opened[n] for n in names}
  stream = mixed_stream(cfg, modality, {n: len(s) for n, s in mine.items()})
  encoder = SampleEncoder(cfg, layout, mine, modality, tokenizer)
  s = layout.image.image_size
  spec = RowSpec(
      cfg.seq_len,
      layout.pad_token_id,
      (3, s, s),
      cfg.max_images_per_row if modality == MULTIMODAL else 0,
      None if cfg.pack else 1,
      cfg.max_consecutive_skips,
  )
  read = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)  # workers parallelise
  b = cfg.global_batch_size
  rows = []
  for j in range(per_host):
    r = process_index * per_host + j  # global row index
    ds = grain.MapDataset.range(len(stream) // b).map(_RowSample(stream, r, b))
    rows.append(RowsIterDataset(ds.map(encoder).to_iter_dataset(read), spec))
  ds = grain.experimental.ZipIterDataset(rows).map(_stack_rows)
  if cfg.num_workers:
    # grain's multiprocessing reads absl flags; outside an absl app (notebooks, tests,
    # tools) they are unparsed, so take their defaults rather than fail in a worker.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(
        grain.MultiprocessingOptions(
            num_workers=cfg.num_workers, per_worker_buffer_size=cfg.worker_buffer_size
        )
    )
  elif cfg.prefetch_batches:
    # The train step runs asynchronously: a thread prepares the next batches meanwhile,
    # instead of the loop doing so between steps. grain hands out each batch with the
    # state after it, so checkpoints and resume are as without the thread.
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=cfg.prefetch_batches)
  return ds


# ------------------------------------------------------------------------ the steps


class TrainDataset(grain.IterDataset):
  """Modality-grouped global steps over the per-modality pipelines (module docstring)."""

  def __init__(
      self,
      cfg: DataConfig,
      layout: TokenLayout,
      process_index: int | None = None,
      process_count: int | None = None,
  ):
    if process_index is None:
      process_index = cfg.process_index if cfg.process_index >= 0 else _jax_process()[0]
    if process_count is None:
      process_count = cfg.process_count if cfg.process_count > 0 else _jax_process()[1]
    tokenizer = make_tokenizer(cfg.tokenizer, layout)
    check_tokenizer(tokenizer, layout)  # fail now, not sample by sample
    opened = {n: open_source(s, layout.image.image_size) for n, s in cfg.sources}
    self._by_modality = {
        m: modality_dataset(cfg, layout, m, opened, process_index, process_count, tokenizer)
        for m in (TEXT, MULTIMODAL)
        if cfg.sources_of(m)
    }
    super().__init__(list(self._by_modality.values()))
    self.cfg, self.layout = cfg, layout
    self.process_index, self.process_count = process_index, process_count

  def __iter__(self) -> "TrainIterator":
    return TrainIterator(self, {m: ds.__iter__() for m, ds in self._by_modality.items()})

  def __str__(self) -> str:
    return f"TrainDataset(process {self.process_index}/{self.process_count})"


def _jax_process() -> tuple[int, int]:
  import jax  # only when the config leaves the host layout to JAX

  return jax.process_index(), jax.process_count()


class TrainIterator(grain.DatasetIterator):
  """Yields one host batch per global step; `get_state` is JSON, for grain's orbax handler.

  `metrics()` reports realised modality shares, per-source samples, packing efficiency
  and skipped samples by reason, counted on this host since step 0 (kept in the state).
  """

  def __init__(self, ds: TrainDataset, iters: dict[str, grain.DatasetIterator]):
    super().__init__(list(iters.values()))
    self._ds, self._iters = ds, iters
    self._schedule = ds.cfg.modality_schedule
    self.step = 0
    self._counts: collections.Counter = collections.Counter()

  def __next__(self) -> dict[str, Any]:
    modality = step_modality(self._ds.cfg.seed, self.step, self._schedule)
    # Plain copies: arrays from worker processes live in shared memory that grain frees
    # only when its array objects are collected.
    batch = {
        k: v if k == "stats" else np.array(v, subok=False)
        for k, v in next(self._iters[modality]).items()
    }
    stats = dict(batch.pop("stats"))
    for k in ("real_tokens", "total_tokens"):
      self._counts[f"{k}/{modality}"] += stats.pop(k, 0)
    self._counts.update(stats)
    self._counts[f"steps/{modality}"] += 1
    batch["images"] = pixels_to_unit(batch.pop("pixels"))
    batch["modality"], batch["step"] = modality, self.step
    self.step += 1
    return batch

  def counts(self) -> dict[str, int]:
    """This host's raw counters (what `metrics` summarises; additive over hosts, except
    `steps/*`, which every host counts alike)."""
    return dict(self._counts)

  def metrics(self, counts: Mapping[str, int] | None = None) -> dict[str, float]:
    """Summaries of `counts` (default: this host's own; the trainer passes the sum over
    hosts)."""
    c = collections.Counter(self._counts if counts is None else counts)
    steps = c[f"steps/{TEXT}"] + c[f"steps/{MULTIMODAL}"]
    out = {
        "data/steps": float(steps),
        "data/multimodal_share": c[f"steps/{MULTIMODAL}"] / max(steps, 1),
    }
    for m in (TEXT, MULTIMODAL):
      if c[f"total_tokens/{m}"]:
        out[f"data/packing_efficiency/{m}"] = c[f"real_tokens/{m}"] / c[f"total_tokens/{m}"]
    samples = {k.split("/", 1)[1]: v for k, v in c.items() if k.startswith("samples/")}
    for m in (TEXT, MULTIMODAL):
      names = self._ds.cfg.sources_of(m)
      total = sum(samples.get(n, 0) for n in names)
      for n in names:
        out[f"data/samples/{n}"] = float(samples.get(n, 0))
        out[f"data/source_share/{n}"] = samples.get(n, 0) / max(total, 1)
    skipped = {k: v for k, v in c.items() if k.startswith("skipped/")}
    out["data/skipped"] = float(sum(skipped.values()))
    out.update({f"data/{k}": float(v) for k, v in skipped.items()})
    return out

  def get_state(self) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "step": self.step,
        **self._layout(),
        "counts": dict(self._counts),
        "pipelines": {m: it.get_state() for m, it in self._iters.items()},
    }

  def _layout(self) -> dict[str, Any]:
    """What a state is only valid under (grain would apply it silently to another)."""
    return {
        "process": [self._ds.process_index, self._ds.process_count],
        "num_workers": self._ds.cfg.num_workers,
        "config": self._ds.cfg.fingerprint(),
    }

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
      raise ValueError(
          f"data iterator state version {state.get('version')!r}, this code "
          f"reads {STATE_VERSION}"
      )
    for key, value in self._layout().items():
      saved = state.get(key)
      if saved == value:
        continue
      if key == "config" and isinstance(saved, dict):
        key = ", ".join(
            f"data.{k}" for k in sorted(set(saved) | set(value)) if saved.get(k) != value.get(k)
        )
        raise ValueError(
            f"data iterator state was saved under other values of {key}; "
            f"it would resume at the wrong samples"
        )
      raise ValueError(
          f"data iterator state has {key}={saved!r} but this pipeline has "
          f"{value!r}; restore with the same data.num_workers and host layout"
      )
    for m, it in self._iters.items():
      it.set_state(state["pipelines"][m])
    self.step = int(state["step"])
    self._counts = collections.Counter(state["counts"])
    logging.info("data pipeline restored at step %d", self.step)

  def close(self) -> None:
    """Stops worker processes and prefetch threads; call it when done (grain otherwise
    waits for GC)."""
    for it in self._iters.values():
      it.close()
    # Let the closed iterators go now: grain closes an iterator again when it is
    # collected, which fails (noisily) if that happens during interpreter shutdown.
    self._iters, self._parents = {}, ()


def valid_images(batch: Mapping[str, np.ndarray]) -> np.ndarray:
  """The batch's real images, flat [N, 3, S, S] in row order: the model's image input."""
  images, counts = batch["images"], batch["num_images"]
  return np.concatenate([images[i, :n] for i, n in enumerate(counts)], axis=0)


def regroup_states(
    states: list[dict[str, Any]], process_index: int, process_count: int
) -> dict[str, Any]:
  """The iterator state of host `process_index` of `process_count`, from the states every
  host of another layout saved (a checkpoint restored on more or fewer hosts).

  Each global row r is a pure function of (seed, r, its position), so a row's state
  moves to whichever host holds row r now (rows are dealt in blocks: host p holds
  rows p * B/n .. (p + 1) * B/n - 1). Only without worker processes: a worker
  pipeline's state interleaves its rows across workers. The per-host counters behind
  `metrics()` are summed onto process 0 (the others start from zero).
  """
  first = states[0]
  for s in states:
    if s.get("version") != STATE_VERSION:
      raise ValueError(
          f"data iterator state version {s.get('version')!r}, this code reads {STATE_VERSION}"
      )
    for key in ("step", "config", "num_workers"):
      if s.get(key) != first.get(key):
        raise ValueError(f"the hosts' data iterator states disagree on {key!r}")
  if first["num_workers"]:
    raise ValueError(
        "a data iterator state saved with data.num_workers > 0 restores only "
        "on the same number of hosts (worker pipelines interleave rows)"
    )
  saved_count = first["process"][1]
  if sorted(s["process"][0] for s in states) != list(range(saved_count)):
    raise ValueError(
        f"need the data iterator states of all {saved_count} saving hosts, "
        f"got {sorted(s['process'][0] for s in states)}"
    )
  batch = first["config"]["global_batch_size"]
  if batch % process_count:
    raise ValueError(
        f"data.global_batch_size={batch} is not divisible by the {process_count} processes"
    )
  rows: dict[str, dict[int, Any]] = collections.defaultdict(dict)
  for s in states:
    per = batch // saved_count
    for m, pipeline in s["pipelines"].items():
      for j, row in enumerate(pipeline["parents"]):
        rows[m][s["process"][0] * per + j] = row
  per = batch // process_count
  mine = range(process_index * per, (process_index + 1) * per)
  counts: collections.Counter = collections.Counter()
  if process_index == 0:
    for s in states:
      counts.update(s["counts"])
  return {
      **first,
      "process": [process_index, process_count],
      "counts": dict(counts),
      "pipelines": {m: {"parents": [r[i] for i in mine]} for m, r in rows.items()},
  }

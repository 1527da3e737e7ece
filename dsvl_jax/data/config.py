"""Typed, validated training-data configuration (`config.data` in configs/*.py).

`DataConfig.from_dict(config.data)` checks every field before any data is read; errors
name the dotted field. Sources are a mapping name -> source so that a command line can
reach each one (`--config.data.sources.captions.weight=2`). `default_config` gives configs
every field, so that each can be overridden (ml_collections refuses a key it lacks).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, Mapping

import ml_collections

from dsvl_jax.config.schema import build_dataclass, check, split_entries, with_defaults
from dsvl_jax.data import synthetic
from dsvl_jax.data.mixing import MULTIMODAL, SCHEDULES, TEXT, ModalitySchedule
from dsvl_jax.processor.tokenizer import EOS_TOKEN, IMAGE_TOKEN

# Choices, from the modules that implement them where one does (schema checks them).
# Our record schema (jsonl, array_record), the built-in data (synthetic), and public
# formats read as released (data/formats/: BUILD.md "Training on your data").
SourceType = Literal[
    "jsonl", "array_record", "synthetic", "llava", "parquet", "webdataset", "image_folder", "mmc4"
]
FORMATS = ("llava", "parquet", "webdataset", "image_folder", "mmc4")
Modality = Literal[TEXT, MULTIMODAL]
SyntheticKind = Literal[synthetic.KINDS]
ScheduleKind = Literal[SCHEDULES]  # data/mixing.py ModalitySchedule
Stage = Literal[1, 2, 3]  # the paper's training stage (its loss masks)


@dataclasses.dataclass(frozen=True)
class SourceConfig:
  """One named source of records (see sources.py for the record schema)."""

  type: SourceType = "synthetic"  # jsonl | array_record | synthetic | a public format
  modality: Modality = MULTIMODAL  # text | multimodal: which steps draw from it
  weight: float = 1.0  # relative weight among the sources of its modality
  # jsonl: one manifest; array_record: one or more files; llava: one .json / .jsonl;
  # parquet, webdataset, mmc4: shard files (or folders of them); image_folder: one folder
  paths: tuple[str, ...] = ()
  # llava, mmc4: the folder image paths are relative to ("" = the file's own folder)
  image_folder: str = ""
  # parquet: column names (Hugging Face datasets layout); a row has messages or text
  messages_column: str = "messages"  # [{"role", "content"}] or LLaVA's [{"from", "value"}]
  text_column: str = "text"  # a caption or document
  images_column: str = "images"  # {"bytes", "path"} structs, a list of them, or bytes
  # mmc4: images whose CLIP similarity to their matched sentence is below this are left
  # out (0 keeps every matched image; OpenFlamingo trains with 0.24)
  min_similarity: float = 0.0
  synthetic_seed: int = 0  # synthetic: generator seed
  synthetic_size: int = 10_000  # synthetic: records per epoch
  synthetic_kinds: tuple[SyntheticKind, ...] = ()  # synthetic: kinds drawn, in rotation

  def validate(self, path: str) -> "SourceConfig":
    check(self.weight > 0, f"{path}.weight", f"must be > 0, got {self.weight}")
    if self.type == "jsonl":
      check(len(self.paths) == 1, f"{path}.paths", "a jsonl source takes one manifest")
    elif self.type == "array_record":
      check(len(self.paths) >= 1, f"{path}.paths", "an array_record source needs files")
    elif self.type in FORMATS:
      check(len(self.paths) >= 1, f"{path}.paths", f"a {self.type} source needs its files")
      if self.type in ("llava", "image_folder"):
        check(len(self.paths) == 1, f"{path}.paths", f"a {self.type} source takes one path")
      if self.type == "image_folder":  # captioned images, nothing else
        check(self.modality == MULTIMODAL, f"{path}.modality", "an image_folder is multimodal")
      check(0.0 <= self.min_similarity <= 1.0, f"{path}.min_similarity", "must be in [0, 1]")
    else:
      check(self.synthetic_size > 0, f"{path}.synthetic_size", "must be > 0")
      check(
          bool(self.synthetic_kinds),
          f"{path}.synthetic_kinds",
          f"a non-empty subset of {synthetic.KINDS}",
      )
      text_kinds = set(synthetic.TEXT_KINDS)
      want_text = self.modality == TEXT
      check(
          all((k in text_kinds) == want_text for k in self.synthetic_kinds),
          f"{path}.synthetic_kinds",
          f"kinds {list(self.synthetic_kinds)} do not all match modality {self.modality!r}",
      )
    return self


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What the training pipeline reads and how it lays batches out."""

  stage: Stage = 2  # 1, 2: supervise all text tokens; 3: assistant answers and EOS only
  pack: bool = False  # several samples per row (the paper packs stage 2)
  seq_len: int = 4096  # tokens per row (model inputs; targets are shifted by one)
  global_batch_size: int = 256  # rows per step, all hosts together
  max_images_per_row: int = 1  # image slots of a multimodal row; more images are skipped
  seed: int = 0  # shuffling, mixing and modality choice
  shuffle: bool = True  # global shuffle of each source, reshuffled every epoch
  schedule: ScheduleKind = "constant"  # constant | warmup (language share 1.0 -> target)
  multimodal_share: float = 0.3  # target share of multimodal steps (paper 7:3)
  warmup_steps: int = 0  # warmup: steps from share 0 to multimodal_share
  tokenizer: str = "builtin:bytes"  # builtin:bytes, tokenizer.json/.model or a ckpt dir
  append_eos: bool = True  # documents ("text" records) end with a supervised EOS
  system_prompt: str = "default"  # chats: "default" = the released prompt, "" = none, or text
  strict: bool = False  # raise on a bad sample instead of counting and skipping it
  max_consecutive_skips: int = 1000  # a row meeting this many bad samples in a row raises
  num_workers: int = 0  # grain worker processes per modality (0: in the main process)
  worker_buffer_size: int = 2  # batches each worker prepares ahead
  prefetch_batches: int = 2  # without workers: batches a background thread prepares ahead
  process_index: int = -1  # this host; -1: jax.process_index()
  process_count: int = -1  # hosts; -1: jax.process_count()
  sources: tuple[tuple[str, SourceConfig], ...] = ()

  @property
  def modality_schedule(self) -> ModalitySchedule:
    return ModalitySchedule(self.schedule, self.multimodal_share, self.warmup_steps)

  def fingerprint(self) -> dict[str, Any]:
    """The fields that decide which sample lands where (a restored iterator state is
    only valid under the same values). The schedule may change between runs: it picks
    which pipeline a step reads, not what the pipelines hold."""
    keep = (
        "stage",
        "pack",
        "seq_len",
        "global_batch_size",
        "max_images_per_row",
        "seed",
        "shuffle",
        "tokenizer",
        "append_eos",
        "system_prompt",
    )
    out: dict[str, Any] = {k: getattr(self, k) for k in keep}
    out["sources"] = {n: dataclasses.asdict(s) for n, s in self.sources}
    return json.loads(json.dumps(out))  # tuples -> lists, as a stored state has them

  def sources_of(self, modality: str) -> dict[str, SourceConfig]:
    return {n: s for n, s in self.sources if s.modality == modality}

  def validate(self) -> "DataConfig":
    check(self.seq_len >= 2, "data.seq_len", f"must be >= 2, got {self.seq_len}")
    check(self.global_batch_size >= 1, "data.global_batch_size", "must be >= 1")
    check(self.max_images_per_row >= 1, "data.max_images_per_row", "must be >= 1")
    check(self.num_workers >= 0, "data.num_workers", "must be >= 0")
    check(self.max_consecutive_skips >= 1, "data.max_consecutive_skips", "must be >= 1")
    check(self.worker_buffer_size >= 1, "data.worker_buffer_size", "must be >= 1")
    check(self.prefetch_batches >= 0, "data.prefetch_batches", "must be >= 0")
    check(0.0 <= self.multimodal_share <= 1.0, "data.multimodal_share", "must be in [0, 1]")
    check(
        self.schedule == "constant" or self.warmup_steps > 0,
        "data.warmup_steps",
        "a warmup schedule needs warmup_steps > 0",
    )
    check(self.seed >= 0, "data.seed", f"must be >= 0, got {self.seed}")
    for token in (IMAGE_TOKEN, EOS_TOKEN):  # would add an image or end the prompt early
      check(token not in self.system_prompt, "data.system_prompt", f"contains {token}")
    check(
        self.process_count == -1 or self.process_count >= 1,
        "data.process_count",
        f"-1 (from JAX) or >= 1, got {self.process_count}",
    )
    check(
        (self.process_index == -1) == (self.process_count == -1),
        "data.process_index",
        "set process_index and process_count together (or leave both -1)",
    )
    if self.process_count > 0:
      check(
          0 <= self.process_index < self.process_count,
          "data.process_index",
          f"{self.process_index} not in [0, {self.process_count})",
      )
    check(bool(self.sources), "data.sources", "no sources configured")
    share = self.multimodal_share
    if share > 0:
      check(
          bool(self.sources_of(MULTIMODAL)),
          "data.sources",
          f"multimodal_share={share} but no source has modality 'multimodal'",
      )
    if share < 1 or self.schedule == "warmup":
      check(
          bool(self.sources_of(TEXT)),
          "data.sources",
          f"the schedule has text steps ({self.schedule}, multimodal_share={share}) but "
          f"no source has modality 'text'",
      )
    return self

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "DataConfig":
    d, raw_sources = split_entries(d, "sources", "data", "name -> source")
    cfg = build_dataclass(cls, d, "data")
    sources = tuple(
        (
            str(name),
            build_dataclass(SourceConfig, src, f"data.sources.{name}").validate(
                f"data.sources.{name}"
            ),
        )
        for name, src in sorted(raw_sources.items())
    )
    return dataclasses.replace(cfg, sources=sources).validate()


def default_source(**overrides: Any) -> dict[str, Any]:
  """One `config.data.sources` entry: every SourceConfig field, its defaults under `overrides`."""
  return with_defaults(SourceConfig, overrides, "data.sources")


def default_config(**overrides: Any) -> ml_collections.ConfigDict:
  """`config.data`: every DataConfig field, its defaults under `overrides`; `sources` is a
  mapping name -> source fields, each source completed by `default_source`."""
  d = with_defaults(DataConfig, overrides, "data")
  d["sources"] = {name: default_source(**src) for name, src in dict(d["sources"] or {}).items()}
  return ml_collections.ConfigDict(d)

"""`config.eval`: the typed, validated `EvalConfig` and its defaults (`default_config`).

Light imports only: config files import this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

import ml_collections

from dsvl_jax.config.schema import ConfigError, build_dataclass, check, split_entries, with_defaults
from dsvl_jax.infer.chat_config import KVCacheDtype, LoadDtype, LoadQuant

Normalize = Literal["mean", "sum"]  # option score: mean of token log-probs, or their sum


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Typed `config.eval`; every field overridable (--config.eval.sets='{"val": "v.jsonl"}')."""

  # name -> an item jsonl (BUILD.md, "Evaluation"), or '<benchmark>:<path>' of a public
  # benchmark release (mmbench, seedbench, pope, scienceqa, mmmu, ocrbench); a mapping
  # in config data (`default_config`)
  sets: tuple[tuple[str, str], ...] = ()
  # set name -> keyword options of its benchmark's loader, e.g. {"pope": {"image_dir":
  # "/coco/val2014"}}, {"mmmu": {"split": "dev"}} (BUILD.md lists each benchmark's)
  set_options: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
  checkpoint: str = ""  # mode=eval: what dsvl_jax.load reads ("" = random init of config.model)
  adapter: str = ""  # a PEFT LoRA folder applied over the checkpoint, unmerged ("" = none)
  dtype: LoadDtype = "float32"  # parameter dtype when loading a checkpoint
  quantize: LoadQuant = "none"  # weight-only int8 | int4 | nf4 of the loaded kernels
  quant_block: int = 64  # values per scale along a quantised kernel's last axis
  kv_cache_dtype: KVCacheDtype = "auto"  # the decoding KV cache: the compute dtype, or int8
  tokenizer: str = ""  # tokenizer.json / .model / 'builtin:bytes' ("" = the checkpoint's own)
  normalize: Normalize = "mean"  # option score: mean (length-normalised) or sum of log-probs
  score_eos: bool = True  # the option's EOS is part of its scored continuation
  batch_size: int = 8  # rows (item x option) per scoring forward; prompts per generation batch
  length_bucket: int = 64  # rows and prompts are padded to a multiple of this (fewer compiles)
  generate: bool = True  # also greedy-generate answers and report exact match
  # generation length limit per answer; 0 = each benchmark's published setup (its
  # MAX_NEW_TOKENS), 32 for item-jsonl exact match
  max_new_tokens: int = 0
  system_prompt: str = "default"  # "default" = the released prompt, "" = none, else the text
  max_items: int = 0  # first items of each set (0 = all)
  predictions: bool = True  # keep per-item predictions in the result (and eval.json)
  progress: bool = True  # benchmark sets: a progress bar with items/s and the ETA
  few_shot: int = 0  # textmc/mmlu/hellaswag: solved examples (MMLU CSV: each subject's dev rows)
  data_parallel: bool = True  # benchmark sets: split each batch's rows over local devices
  share_prefixes: bool = True  # a prompt prefix (image) rows of a batch share: computed once
  # An OpenAI-compatible endpoint that judges (MM-Vet's grader; the extraction fallback
  # of MMBench, SEED-Bench, MathVista): base URL ("http://host:8000/v1", "" = none),
  # model name, and the environment variable holding its API key (never the key itself)
  judge_url: str = ""
  judge_model: str = ""
  judge_key_env: str = "OPENAI_API_KEY"
  judge_max_tokens: int = 0  # cap on a judge request's max_tokens (0 = each rule's own)

  def validate(self) -> "EvalConfig":
    check(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")
    check(
        self.quant_block >= 2 and (self.quantize in ("none", "int8") or self.quant_block % 2 == 0),
        "eval.quant_block",
        f"must be >= 2 (and even for int4 / nf4: two codes a byte), got {self.quant_block}",
    )
    check(self.length_bucket >= 1, "eval.length_bucket", f"must be >= 1, got {self.length_bucket}")
    check(
        self.max_new_tokens >= 0, "eval.max_new_tokens", f"must be >= 0, got {self.max_new_tokens}"
    )
    check(self.max_items >= 0, "eval.max_items", f"must be >= 0, got {self.max_items}")
    check(self.few_shot >= 0, "eval.few_shot", f"must be >= 0, got {self.few_shot}")
    for name, path in self.sets:
      check(bool(path), f"eval.sets.{name}", "empty path")
    check(
        self.judge_max_tokens >= 0,
        "eval.judge_max_tokens",
        f"must be >= 0, got {self.judge_max_tokens}",
    )
    unknown = sorted(set(dict(self.set_options)) - set(dict(self.sets)))
    check(not unknown, "eval.set_options", f"options for sets that are not in eval.sets: {unknown}")
    if self.judge_url:
      check(
          self.judge_url.startswith(("http://", "https://")),
          "eval.judge_url",
          f"expected http(s)://host[:port]/v1, got {self.judge_url!r}",
      )
      check(bool(self.judge_model), "eval.judge_model", "a judge_url needs the model name")
    return self

  def options(self, name: str) -> dict[str, Any]:
    """The loader keywords of set `name` ({} when none are given)."""
    return dict(dict(self.set_options).get(name, ()))

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "EvalConfig":
    d, sets = split_entries(d, "sets", "eval", "name -> jsonl path")
    for name, path in sets.items():
      if not isinstance(path, str):
        raise ConfigError(f"config field 'eval.sets.{name}': expected a path string, got {path!r}")
    d, options = split_entries(d, "set_options", "eval", "set name -> {option: value}")
    frozen = []
    for name, opts in sorted(options.items()):
      if hasattr(opts, "to_dict"):
        opts = opts.to_dict()
      if not isinstance(opts, Mapping):
        raise ConfigError(
            f"config field 'eval.set_options.{name}': expected a mapping option -> value, "
            f"got {opts!r}"
        )
      frozen.append((name, tuple(sorted(opts.items()))))
    cfg = build_dataclass(cls, d, "eval")
    return dataclasses.replace(
        cfg, sets=tuple(sorted(sets.items())), set_options=tuple(frozen)
    ).validate()


def default_config() -> ml_collections.ConfigDict:
  """The defaults as config data (field meanings on EvalConfig); `sets` a mapping."""
  return ml_collections.ConfigDict(
      with_defaults(EvalConfig, {"sets": {}, "set_options": {}}, "eval")
  )

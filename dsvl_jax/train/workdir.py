"""The run's config in its workdir, and what a restart may change.

The first start writes WORKDIR/config.json. A restart in the same workdir resumes from
its latest checkpoint, and may change how long and how fast it trains (train.steps,
the optimizer's rates and schedule, logging, checkpointing, evaluation), but not what
decides the shapes of the state or which sample lands where: those fields are compared
and a change is refused, naming them.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any, Mapping

from dsvl_jax.checkpoint.params_io import RUN_CONFIG
from dsvl_jax.config.schema import ConfigError

# Dotted prefixes of the fields a resumed run must keep (shapes, data order, freezing).
PINNED = (
    "seed",
    "model.llm",
    "model.siglip",
    "model.sam",
    "model.aligner",
    "model.image_token_id",
    "model.bos_token_id",
    "model.eos_token_id",
    "model.pad_token_id",
    "model.compute.param_dtype",
    "data.stage",
    "data.pack",
    "data.seq_len",
    "data.global_batch_size",
    "data.max_images_per_row",
    "data.seed",
    "data.shuffle",
    "data.tokenizer",
    "data.append_eos",
    "data.system_prompt",
    "data.sources",
    "data.num_workers",
    "train.trainable",
)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping) and v:
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def _pinned(key: str) -> bool:
  return any(key == p or key.startswith(p + ".") for p in PINNED)


def config_dict(config: Any) -> dict[str, Any]:
  """A ConfigDict as plain JSON data (tuples -> lists), as config.json stores it."""
  return json.loads(config.to_json_best_effort())


def check_restart(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
  a, b = flatten(saved), flatten(current)
  changed = sorted(k for k in set(a) | set(b) if _pinned(k) and a.get(k) != b.get(k))
  if changed:
    raise ConfigError(
        f"config field(s) {', '.join(changed)} differ from the run saved in this workdir; "
        f"they decide the state's shapes or the data order, so the run cannot resume "
        f"under them (start a new workdir, or use train.init_from to start from it)"
    )


def with_data_defaults(config: dict[str, Any]) -> dict[str, Any]:
  """config.json data with every data and source field: a workdir written before a field
  existed in the shipped configs used its default, so that is what it is compared as."""
  from dsvl_jax.data.config import default_config, default_source  # pylint: disable=g-import-not-at-top

  data = config.get("data")
  if not isinstance(data, Mapping):
    return config
  source = json.loads(json.dumps(default_source()))  # as config.json stores it
  data = {**config_dict(default_config()), **data}
  data["sources"] = {
      name: {**source, **src} if isinstance(src, Mapping) else src
      for name, src in dict(data.get("sources") or {}).items()
  }
  return {**config, "data": data}


def prepare(workdir: str | pathlib.Path, config: Any, resuming: bool, write: bool) -> None:
  """Checks a restart against config.json, then (process 0) writes the current config."""
  path = pathlib.Path(workdir) / RUN_CONFIG
  current = config_dict(config)
  if resuming and path.is_file():
    check_restart(with_data_defaults(json.loads(path.read_text())), with_data_defaults(current))
  if write:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


# Tokenizer files kept beside the checkpoints, so that the workdir chats, exports and
# starts the next stage on its own (`train.init_from=WORKDIR`).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
)


def copy_tokenizer(spec: str, workdir: str | pathlib.Path) -> list[str]:
  """Copies the files behind a data.tokenizer spec into the workdir (none for builtins)."""
  workdir = pathlib.Path(workdir)
  src = pathlib.Path(spec)
  if spec.startswith("builtin:") or not src.exists():
    return []
  copied = []
  if src.is_file():
    name = "tokenizer.model" if src.suffix == ".model" else "tokenizer.json"
    pairs = [(src, name)] + [(src.parent / n, n) for n in TOKENIZER_FILES[1:3]]
  else:
    pairs = [(src / n, n) for n in TOKENIZER_FILES]
  for path, name in pairs:
    if path.is_file() and path.resolve() != (workdir / name).resolve():
      shutil.copy2(path, workdir / name)
      copied.append(name)
  return copied

"""Typed, validated dataclasses from ml_collections data (no JAX import: data workers use it).

`build_dataclass(cls, mapping, "data")` checks every field against the dataclass: unknown
names, wrong types and missing nesting fail at start-up with the dotted field name
(`config field 'data.sources.ocr.weight': expected a number`), never at step 9000.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class ConfigError(ValueError):
  """A configuration field is missing, unknown or has an invalid value."""


def check(cond: bool, field: str, msg: str) -> None:
  if not cond:
    raise ConfigError(f"config field '{field}': {msg}")


def _typed(default: Any, value: Any, path: str) -> Any:
  """Checks `value` against the type of the field's default; returns it normalised."""
  if isinstance(default, tuple):
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
      raise ConfigError(f"config field '{path}': expected a sequence, got {value!r}")
    return tuple(value)
  if isinstance(default, bool):
    if not isinstance(value, bool):
      raise ConfigError(f"config field '{path}': expected a bool, got {value!r}")
  elif isinstance(default, int):
    if isinstance(value, bool) or not isinstance(value, int):
      raise ConfigError(f"config field '{path}': expected an int, got {value!r}")
  elif isinstance(default, float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"config field '{path}': expected a number, got {value!r}")
    return float(value)
  elif isinstance(default, str):
    if not isinstance(value, str):
      raise ConfigError(f"config field '{path}': expected a string, got {value!r}")
  return value


def build_dataclass(cls, d: Mapping[str, Any], prefix: str,
                    nested: Mapping[tuple[type, str], type] | None = None):
  """cls(**d) with every field checked; `nested[(cls, name)]` builds sub-configs."""
  nested = nested or {}
  if hasattr(d, "to_dict"):
    d = d.to_dict()
  if not isinstance(d, Mapping):
    raise ConfigError(f"config field '{prefix}': expected a mapping, got {type(d).__name__}")
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(d) - set(fields))
  if unknown:
    raise ConfigError(f"config field '{prefix}': unknown field(s) {unknown}; "
                      f"known: {sorted(fields)}")
  kwargs = {}
  for name, value in d.items():
    path = f"{prefix}.{name}"
    sub = nested.get((cls, name))
    if sub is not None:
      kwargs[name] = None if value is None else build_dataclass(sub, value, path, nested)
      continue
    default = fields[name].default
    if default is dataclasses.MISSING and fields[name].default_factory is not dataclasses.MISSING:
      default = fields[name].default_factory()
    kwargs[name] = _typed(default, value, path)
  return cls(**kwargs)


def with_defaults(cls, overrides: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """Every field of dataclass `cls` as config data: the defaults, under `overrides` kept
  as given (no casts). The inverse of build_dataclass, for configs that must hold every
  field so that each can be overridden on the command line."""
  unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
  check(not unknown, prefix, f"unknown field(s) {unknown}")
  return {**dataclasses.asdict(cls()), **overrides}

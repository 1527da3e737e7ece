"""Typed, validated dataclasses from ml_collections data (no JAX import: data workers use it).

`build_dataclass(cls, mapping, "data")` checks every field against the dataclass: unknown
names, wrong types and missing nesting fail at start-up with the dotted field name
(`config field 'data.sources.ocr.weight': expected a number`), never at step 9000.
A field typed `Literal[...]` (or a tuple of one) takes only those values; that check is
here, once, for every section, and the choices are read from the type (`choices(T)`), so
no list of names is kept beside it by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, ClassVar, Literal, Mapping


class ConfigError(ValueError):
  """A configuration field is missing, unknown or has an invalid value."""


def check(cond: bool, field: str, msg: str) -> None:
  if not cond:
    raise ConfigError(f"config field '{field}': {msg}")


# A field's default type -> (whether a value fits, what the error calls it, normaliser);
# bool before int (a bool is an int), and no bool passes as an int or a number.
_KINDS = (
    (tuple, lambda v: isinstance(v, (list, tuple)), "a sequence", tuple),
    (bool, lambda v: isinstance(v, bool), "a bool", None),
    (int, lambda v: isinstance(v, int) and not isinstance(v, bool), "an int", None),
    (float, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number", float),
    (str, lambda v: isinstance(v, str), "a string", None),
)


def _typed(default: Any, value: Any, path: str) -> Any:
  """Checks `value` against the type of the field's default; returns it normalised."""
  for kind, fits, what, normalise in _KINDS:
    if isinstance(default, kind):
      if not fits(value):
        raise ConfigError(f"config field '{path}': expected {what}, got {value!r}")
      return normalise(value) if normalise else value
  return value


def choices(literal: Any) -> tuple[Any, ...]:
  """The values a `Literal[...]` type allows, in order (`choices(AttentionImpl)`)."""
  if typing.get_origin(literal) is not Literal:
    raise TypeError(f"{literal!r} is not a Literal type")
  return typing.get_args(literal)


@functools.cache
def _literal_fields(cls) -> dict[str, tuple[tuple[Any, ...], bool]]:
  """name -> (allowed values, whether the field is a tuple of them) for `cls`'s Literal
  fields (string annotations resolved against the defining module)."""
  out = {}
  for name, hint in typing.get_type_hints(cls).items():
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Literal:
      out[name] = (args, False)
    elif (
        typing.get_origin(hint) is tuple
        and len(args) == 2
        and args[1] is Ellipsis
        and typing.get_origin(args[0]) is Literal
    ):
      out[name] = (typing.get_args(args[0]), True)
  return out


def _check_choice(allowed: tuple[Any, ...], many: bool, value: Any, path: str) -> None:
  for v in (value if many else (value,)):
    # `type(v)` too: True == 1 would otherwise pass as a choice of 1
    if not any(v == a and type(v) is type(a) for a in allowed):
      raise ConfigError(f"config field '{path}': {v!r} not in {allowed}")


def build_dataclass(
    cls, d: Mapping[str, Any], prefix: str, nested: Mapping[tuple[type, str], type] | None = None
):
  """cls(**d) with every field checked; `nested[(cls, name)]` builds sub-configs."""
  nested = nested or {}
  if hasattr(d, "to_dict"):
    d = d.to_dict()
  if not isinstance(d, Mapping):
    raise ConfigError(f"config field '{prefix}': expected a mapping, got {type(d).__name__}")
  fields = {f.name: f for f in dataclasses.fields(cls)}
  literals = _literal_fields(cls)
  unknown = sorted(set(d) - set(fields))
  if unknown:
    raise ConfigError(
        f"config field '{prefix}': unknown field(s) {unknown}; known: {sorted(fields)}"
    )
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
    if name in literals:
      _check_choice(*literals[name], kwargs[name], path)
  return cls(**kwargs)


class Section:
  """Base of a typed config section (a frozen dataclass naming its `SECTION`):
  `from_dict(config.<section>)` builds it with every field checked, then validates it."""

  SECTION: ClassVar[str]

  def validate(self):
    return self

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    return build_dataclass(cls, d, cls.SECTION).validate()


def split_entries(d: Mapping[str, Any], key: str, prefix: str, what: str):
  """(section fields but `key`, the `key` mapping) of a section holding named entries
  (data.sources, eval.sets); `what` describes the mapping in the error."""
  if hasattr(d, "to_dict"):
    d = d.to_dict()
  d = dict(d)
  entries = d.pop(key, {}) or {}
  if not isinstance(entries, Mapping):
    raise ConfigError(f"config field '{prefix}.{key}': expected a mapping {what}")
  return d, entries


def with_defaults(cls, overrides: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """Every field of dataclass `cls` as config data: the defaults, under `overrides` kept
  as given (no casts). The inverse of build_dataclass, for configs that must hold every
  field so that each can be overridden on the command line."""
  unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
  check(not unknown, prefix, f"unknown field(s) {unknown}")
  return {**dataclasses.asdict(cls()), **overrides}

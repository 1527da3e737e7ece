"""JAX's persistent compilation cache, switched on by `config.compile_cache.dir`.

A 7B train step takes minutes to compile; with the cache a restarted job (preemption,
a new stage with the same shapes) loads the executable instead. The directory may be
local or a gs:// bucket that every host of a pod shares. Off ("") by default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from dsvl_jax.config.schema import build_dataclass, check


@dataclasses.dataclass(frozen=True)
class CompileCacheConfig:
  dir: str = ""  # "" = off
  min_compile_seconds: float = 1.0  # cache only programs that took at least this long
  min_entry_bytes: int = 0  # and are at least this large

  def validate(self) -> "CompileCacheConfig":
    check(self.min_compile_seconds >= 0, "compile_cache.min_compile_seconds", "must be >= 0")
    check(self.min_entry_bytes >= 0, "compile_cache.min_entry_bytes", "must be >= 0")
    return self


def default_config():
  """The `config.compile_cache` block of configs/*.py: CompileCacheConfig's defaults."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  return ml_collections.ConfigDict(dataclasses.asdict(CompileCacheConfig()))


def setup(block: Mapping[str, Any] | None) -> bool:
  """Points JAX at the cache directory; True if the cache is on."""
  cfg = build_dataclass(CompileCacheConfig, dict(block or {}), "compile_cache").validate()
  if not cfg.dir:
    return False
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_compilation_cache_dir", cfg.dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", cfg.min_compile_seconds)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", cfg.min_entry_bytes)
  return True

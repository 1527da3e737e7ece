"""The parameter group of every parameter path (train.trainable names groups).

Every parameter belongs to exactly one group, by the first matching pattern
("vision/sam/neck/conv1/kernel" is `sam_neck`, not `sam`). Here, beside the model, so
that training (train/freezing.py) and exports (checkpoint/formats.py) read one table.
"""

from __future__ import annotations

import re

GROUP_PATTERNS: tuple[tuple[str, str], ...] = (
    ("sam_neck", r"vision/sam/(neck|neck_hd|downsample_\d+|hd_alpha)(/.*)?"),
    ("sam", r"vision/sam/.*"),
    ("siglip", r"vision/siglip/.*"),
    ("aligner", r"aligner/.*"),
    ("llm", r"llm/.*"),
)
_COMPILED = tuple((g, re.compile(p)) for g, p in GROUP_PATTERNS)


def group_of(path: str) -> str:
  for group, pattern in _COMPILED:
    if pattern.fullmatch(path):
      return group
  raise ValueError(f"parameter {path!r} belongs to no group of {[g for g, _ in GROUP_PATTERNS]}")

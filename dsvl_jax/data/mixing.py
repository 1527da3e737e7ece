"""Modality grouping and the modality warm-up (paper 3.2.2, 4.4).

Every global step draws its whole batch from one modality, text or multimodal, so no
step waits on the slowest kind of sample. Which one is a pure function of (seed, step):
every host computes the same answer with no communication, and a resumed run repeats
it. The multimodal share follows a schedule: constant, or the paper's warm-up (language
share 1.0 at step 0, lowered linearly to the target over `warmup_steps`). Within a
modality, sources are mixed by weight with grain's `MapDataset.mix` (pipeline.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

TEXT, MULTIMODAL = "text", "multimodal"
SCHEDULES = ("constant", "warmup")


@dataclasses.dataclass(frozen=True)
class ModalitySchedule:
  kind: str = "constant"  # constant | warmup
  multimodal_share: float = 0.3  # target share of multimodal steps (paper: 7:3 language)
  warmup_steps: int = 0  # warmup: steps over which the language share falls from 1.0

  def __post_init__(self):
    if self.kind not in SCHEDULES:
      raise ValueError(f"schedule kind {self.kind!r} not in {SCHEDULES}")
    if not 0.0 <= self.multimodal_share <= 1.0:
      raise ValueError(f"multimodal_share must be in [0, 1], got {self.multimodal_share}")
    if self.kind == "warmup" and self.warmup_steps <= 0:
      raise ValueError("a warmup schedule needs warmup_steps > 0")

  def share_at(self, step: int) -> float:
    """Probability that `step` is a multimodal step."""
    if self.kind == "constant" or step >= self.warmup_steps:
      return self.multimodal_share
    return self.multimodal_share * step / self.warmup_steps


def _uniform(seed: int, step: int, stream: int) -> float:
  # A counter-based draw: identical on every host, independent across steps.
  return float(np.random.default_rng([seed, step, stream]).random())


def step_modality(seed: int, step: int, schedule: ModalitySchedule) -> str:
  """TEXT or MULTIMODAL for a global step, the same on every host."""
  return MULTIMODAL if _uniform(seed, step, 0) < schedule.share_at(step) else TEXT

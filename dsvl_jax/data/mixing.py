"""Modality grouping and the modality warm-up (paper 3.2.2, 4.4).

Every global step draws its whole batch from one modality, text or multimodal, so no
step waits on the slowest kind of sample. Which one is a pure function of (seed, step):
every host computes the same answer with no communication, and a resumed run repeats
it. The multimodal share follows a schedule: constant, or the paper's warm-up (language
share 1.0 at step 0, lowered linearly to the target over `warmup_steps`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

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


def choose_source(seed: int, step: int, slot: int, weights: Mapping[str, float]) -> str:
  """A source within a modality, by weight, for one sample slot of a global batch."""
  names = sorted(weights)
  p = np.asarray([weights[n] for n in names], np.float64)
  if (p < 0).any() or p.sum() <= 0:
    raise ValueError(f"source weights must be >= 0 with a positive sum, got {dict(weights)}")
  cdf = np.cumsum(p / p.sum())
  u = _uniform(seed, step, 1 + slot)
  return names[min(int(np.searchsorted(cdf, u, side="right")), len(names) - 1)]


@dataclasses.dataclass
class ShareMeter:
  """Counts realised modalities and sources, for the metrics a run reports."""
  steps: dict[str, int] = dataclasses.field(default_factory=lambda: {TEXT: 0, MULTIMODAL: 0})
  sources: dict[str, int] = dataclasses.field(default_factory=dict)

  def update(self, modality: str, sources: Sequence[str] = ()) -> None:
    self.steps[modality] += 1
    for s in sources:
      self.sources[s] = self.sources.get(s, 0) + 1

  def metrics(self) -> dict[str, float]:
    total = sum(self.steps.values()) or 1
    n_src = sum(self.sources.values()) or 1
    out = {"data/multimodal_share": self.steps[MULTIMODAL] / total}
    out.update({f"data/source_share/{k}": v / n_src for k, v in sorted(self.sources.items())})
    return out

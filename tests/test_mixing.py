"""Modality grouping: per-step choice from (seed, step) and the schedules."""

import numpy as np
import pytest

from dsvl_jax.data.mixing import MULTIMODAL, TEXT, ModalitySchedule, step_modality


def _shares(seed, schedule, steps):
  return np.array([step_modality(seed, s, schedule) == MULTIMODAL for s in range(steps)])


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_constant_share_over_10k_steps(seed):
  mm = _shares(seed, ModalitySchedule("constant", 0.3), 10_000)
  sigma = np.sqrt(0.3 * 0.7 / mm.size)
  assert abs(mm.mean() - 0.3) < 4 * sigma


def test_warmup_follows_the_schedule():
  schedule = ModalitySchedule("warmup", 0.3, warmup_steps=6_000)
  mm = _shares(7, schedule, 10_000)
  assert schedule.share_at(0) == 0.0 and schedule.share_at(3_000) == pytest.approx(0.15)
  assert not mm[:50].any() or mm[:50].mean() < 0.05  # starts (almost) all text
  for start in range(0, 10_000, 1_000):
    want = np.mean([schedule.share_at(s) for s in range(start, start + 1_000)])
    sigma = np.sqrt(max(want * (1 - want), 1e-4) / 1_000)
    assert abs(mm[start : start + 1_000].mean() - want) < 4.5 * sigma, start


def test_same_step_same_modality_everywhere():
  schedule = ModalitySchedule("constant", 0.5)
  a = [step_modality(3, s, schedule) for s in range(200)]
  assert a == [step_modality(3, s, schedule) for s in range(200)]  # any host, any time
  assert a != [step_modality(4, s, schedule) for s in range(200)]  # the seed matters
  assert set(a) == {TEXT, MULTIMODAL}


def test_bad_schedules_are_refused():
  with pytest.raises(ValueError, match="kind"):
    ModalitySchedule("cosine")
  with pytest.raises(ValueError, match="warmup_steps"):
    ModalitySchedule("warmup", 0.3)
  with pytest.raises(ValueError, match="multimodal_share"):
    ModalitySchedule("constant", 1.5)

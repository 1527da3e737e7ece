"""Modality grouping: per-step choice from (seed, step), schedules, source weights."""

import numpy as np
import pytest

from dsvl_jax.data.mixing import (MULTIMODAL, TEXT, ModalitySchedule, ShareMeter,
                                  choose_source, step_modality)


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
    assert abs(mm[start:start + 1_000].mean() - want) < 4.5 * sigma, start


def test_same_step_same_modality_everywhere():
  schedule = ModalitySchedule("constant", 0.5)
  a = [step_modality(3, s, schedule) for s in range(200)]
  assert a == [step_modality(3, s, schedule) for s in range(200)]  # any host, any time
  assert a != [step_modality(4, s, schedule) for s in range(200)]  # the seed matters
  assert set(a) == {TEXT, MULTIMODAL}


def test_sources_follow_weights_and_meter_reports():
  weights = {"captions": 2.0, "ocr": 1.0, "interleaved": 1.0}
  picks = [choose_source(0, step, slot, weights) for step in range(500) for slot in range(16)]
  freq = {k: picks.count(k) / len(picks) for k in weights}
  for k, w in weights.items():
    assert abs(freq[k] - w / 4) < 0.02, freq
  meter = ShareMeter()
  meter.update(MULTIMODAL, ["ocr", "ocr"])
  meter.update(TEXT, ["text"])
  m = meter.metrics()
  assert m["data/multimodal_share"] == 0.5 and m["data/source_share/ocr"] == pytest.approx(2 / 3)


def test_bad_schedules_are_refused():
  with pytest.raises(ValueError, match="kind"):
    ModalitySchedule("cosine")
  with pytest.raises(ValueError, match="warmup_steps"):
    ModalitySchedule("warmup", 0.3)
  with pytest.raises(ValueError, match="multimodal_share"):
    ModalitySchedule("constant", 1.5)
  with pytest.raises(ValueError, match="weights"):
    choose_source(0, 0, 0, {"a": 0.0})

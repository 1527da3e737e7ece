"""Packing: layout invariants, whole images, loss weights, and packed = unpacked logits."""

import logging

import jax
import numpy as np
import pytest
from conftest import tiny_config

from dsvl_jax.data.packing import Packer, pack
from dsvl_jax.models import DeepseekVL
from dsvl_jax.models.init import init_params


@pytest.fixture(scope="module")
def setup():
  cfg = tiny_config("hybrid")
  return cfg, init_params(cfg, jax.random.key(0))


def _samples(cfg, rng):
  """(ids, loss_mask, images): text-only and with 1-2 images; image tokens unsupervised."""
  k, img, s = cfg.num_image_tokens, cfg.image_token_id, cfg.image_size
  out = []
  for n_img, n_text in [(0, 9), (1, 5), (2, 3), (0, 20), (1, 12), (0, 4)]:
    ids = [cfg.bos_token_id]
    for _ in range(n_img):
      ids += [img] * k + list(rng.integers(3, 400, 2))
    ids += list(rng.integers(3, 400, n_text))
    ids = np.array(ids, np.int32)
    mask = ids != img
    mask[0] = False
    out.append((ids, mask, rng.random((n_img, 3, s, s), dtype=np.float32)))
  return out


def test_layout_invariants(setup):
  cfg, _ = setup
  samples = _samples(cfg, np.random.default_rng(0))
  shape = (3, cfg.image_size, cfg.image_size)
  packed, stats = pack(samples, 64, cfg.pad_token_id, shape)
  assert stats.samples == len(samples) and stats.skipped == 0
  assert stats.real_tokens == sum(len(ids) - 1 for ids, _, _ in samples)
  assert 0 < stats.efficiency <= 1 and len(packed) < len(samples)  # several per sequence
  it = iter(samples)
  for p in packed:
    for seg in range(1, p.num_segments + 1):
      ids, mask, images = next(it)
      where = np.flatnonzero(p.segment_ids == seg)
      assert np.array_equal(where, np.arange(where[0], where[0] + len(ids) - 1))  # contiguous
      np.testing.assert_array_equal(p.positions[where], np.arange(len(ids) - 1))
      np.testing.assert_array_equal(p.inputs[where], ids[:-1])
      np.testing.assert_array_equal(p.targets[where], ids[1:])
      np.testing.assert_array_equal(p.weights[where], mask[1:])  # no loss on image tokens
    pad = p.segment_ids == 0
    assert not p.weights[pad].any()
    assert (p.weights[p.targets == cfg.image_token_id] == 0).all()
    # every image block is whole: image tokens come in runs of exactly k per image
    n_img_tokens = (p.inputs == cfg.image_token_id).sum()
    assert n_img_tokens == len(p.images) * cfg.num_image_tokens


def test_over_long_samples_are_counted_and_skipped(setup):
  cfg, _ = setup
  shape = (3, cfg.image_size, cfg.image_size)
  long = (np.arange(100, dtype=np.int32), np.ones(100, bool), np.zeros((0,) + shape))
  short = (np.arange(10, dtype=np.int32), np.ones(10, bool), np.zeros((0,) + shape))
  packed, stats = pack([short, long, short], 32, cfg.pad_token_id, shape)
  assert stats.skipped == 1 and stats.samples == 2 and len(packed) == 1
  with pytest.raises(ValueError, match="sample 1 has 100 tokens"):
    pack([short, long], 32, cfg.pad_token_id, shape, strict=True)


def test_skip_warnings_are_rate_limited(setup, caplog):
  cfg, _ = setup
  shape = (3, cfg.image_size, cfg.image_size)
  long = (np.arange(100, dtype=np.int32), np.ones(100, bool), np.zeros((0,) + shape))
  with caplog.at_level(logging.WARNING):
    _, stats = pack([long] * 1000, 32, cfg.pad_token_id, shape)
  assert stats.skipped == 1000
  messages = [r.getMessage() for r in caplog.records]
  assert len(messages) == 5 + 3  # the first 5 named, then counts at 10, 100, 1000
  assert "sample 0 has 100 tokens" in messages[0]
  assert "skipped 1000 samples" in messages[-1]


def test_packed_logits_equal_unpacked(setup):
  """Tokens never attend across segments: each segment's logits equal the sample alone."""
  cfg, params = setup
  model = DeepseekVL(cfg)
  samples = _samples(cfg, np.random.default_rng(1))[:3]
  packer = Packer(96, cfg.pad_token_id, (3, cfg.image_size, cfg.image_size))
  packed = [p for s in samples for p in packer.add(*s)] + list(packer.finish())
  assert len(packed) == 1 and packed[0].num_segments == 3
  p = packed[0]
  out = np.asarray(
      model.apply(
          {"params": params},
          p.inputs[None],
          p.images,
          segment_ids=p.segment_ids[None],
          positions=p.positions[None],
      )["logits"]
  )[0]
  for seg, (ids, _, images) in enumerate(samples, start=1):
    alone = model.apply({"params": params}, ids[None, :-1], images if len(images) else None)[
        "logits"
    ]
    np.testing.assert_allclose(
        out[p.segment_ids == seg], np.asarray(alone)[0], atol=1e-5, rtol=1e-5
    )

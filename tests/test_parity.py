"""Float32 parity with transformers' DeepSeek-VL on tiny random models, both families.

Each test runs the same random weights (copied through convert/) in transformers and in
our Flax model and compares outputs: max|ours - ref| <= BOUNDS[output] * max|ref|. The
bounds sit about 4x above the measured float32 error of each output (BUILD.md), so that a
real difference such as a vision LayerNorm epsilon 10x off (7e-6 to 1.2e-4) fails.
"""

import functools

import chex
import hf_reference as ref
import numpy as np
import pytest
import torch
from conftest import tiny_config

from convert import state_dict_to_params
from dsvl_jax.models import DeepseekVL
from dsvl_jax.models.vision import HybridTower, SiglipTower
from dsvl_jax.processor.batching import left_pad

# max|ours - ref| / max|ref| per output; measured on CPU: SigLIP 3.2e-7 / 5.0e-7 (1.3B / 7B
# family), SAM 8.8e-7, aligner 6.3e-7 / 6.8e-7, LLM 7.0e-7 / 9.3e-7, VLM 1.0e-6 / 1.4e-6
BOUNDS = {"siglip": 2e-6, "sam": 4e-6, "aligner": 3e-6, "llm": 4e-6, "vlm": 6e-6}


def assert_parity(ours, theirs, output, mask=None):
  rel_tol = BOUNDS[output]
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  chex.assert_equal_shape([ours, theirs])
  if mask is not None:
    ours, theirs = ours[mask], theirs[mask]
  scale = np.abs(theirs).max()
  err = np.abs(ours - theirs).max()
  assert scale > 1e-3, f"reference output is degenerate (max |ref| = {scale})"
  print(
      f"{output}: max |diff| {err:.2e}, scale {scale:.2e}, relative {err / scale:.2e} "
      f"(bound {rel_tol:g})"
  )  # pytest -s
  assert err <= rel_tol * scale, f"max |diff| {err:.3g} > {rel_tol} x scale {scale:.3g}"


@functools.lru_cache(maxsize=None)
def _setup(family):
  cfg = tiny_config(family)
  hf = ref.build(cfg, seed=1)
  params, _ = state_dict_to_params(ref.state_dict(hf), cfg)
  return cfg, hf, params


@pytest.fixture(params=["siglip", "hybrid"])
def setup(request):
  return _setup(request.param)


def _images(cfg, n, seed=0):
  return np.random.default_rng(seed).random(
      (n, 3, cfg.image_size, cfg.image_size), dtype=np.float32
  )


def test_siglip_output(setup):
  cfg, hf, params = setup
  images = _images(cfg, 2)
  with torch.no_grad():
    pixels = ref.pixel_kwargs(cfg, images)["pixel_values"]
    theirs = hf.model.vision_model(pixel_values=pixels).last_hidden_state.numpy()
  if cfg.hybrid:
    ours = HybridTower(cfg.siglip, cfg.sam, cfg.compute).apply(
        {"params": params["vision"]}, images
    )[1]
  else:
    ours = SiglipTower(cfg.siglip, cfg.compute).apply({"params": params["vision"]}, images)
  assert_parity(ours, theirs, "siglip")


def test_sam_output_with_hd_branch():
  cfg, hf, params = _setup("hybrid")
  images = _images(cfg, 2)
  with torch.no_grad():
    high = ref.pixel_kwargs(cfg, images)["high_res_pixel_values"]
    theirs = hf.model.get_high_res_image_features(high).last_hidden_state.numpy()
    # The HD branch must matter, or this test could not see it being wrong.
    alpha = hf.model.high_res_vision_alpha.clone()
    hf.model.high_res_vision_alpha.zero_()
    without_hd = hf.model.get_high_res_image_features(high).last_hidden_state.numpy()
    hf.model.high_res_vision_alpha.copy_(alpha)
  assert np.abs(theirs - without_hd).max() > 0.1 * np.abs(theirs).max()
  ours = HybridTower(cfg.siglip, cfg.sam, cfg.compute).apply({"params": params["vision"]}, images)[
      0
  ]
  assert_parity(ours, theirs, "sam")


def test_aligner_output(setup):
  cfg, hf, params = setup
  images = _images(cfg, 3)
  with torch.no_grad():
    theirs = hf.model.get_image_features(**ref.pixel_kwargs(cfg, images)).pooler_output.numpy()
  ours = DeepseekVL(cfg).apply({"params": params}, images, method=DeepseekVL.encode_images)
  assert_parity(ours, theirs, "aligner")


def _left_pad(rows, pad_id):
  return left_pad(rows, max(len(r) for r in rows), pad_id)


def _positions(mask):
  """RoPE positions from first principles: a row's real tokens count 0, 1, ... after its
  left padding (transformers' forward does not derive them from the mask; its generate
  does). Ours come from the model's own default, so the two are independent."""
  positions = np.ones_like(mask)  # padding: never attended, any value
  for i, row in enumerate(mask):
    n = int(row.sum())
    assert not row[: len(row) - n].any()  # left padding
    positions[i, len(row) - n :] = range(n)
  return positions


def _hf_logits(hf, ids, mask, **pixels):
  positions = _positions(mask)
  with torch.no_grad():
    return hf(
        input_ids=torch.from_numpy(ids).long(),
        attention_mask=torch.from_numpy(mask),
        position_ids=torch.from_numpy(positions).long(),
        **pixels,
    ).logits.numpy()


def test_llm_logits_text_only(setup):
  cfg, hf, params = setup
  rng = np.random.default_rng(3)
  rows = [[cfg.bos_token_id] + list(rng.integers(3, 400, n)) for n in (12, 7, 1)]
  ids, mask = _left_pad(rows, cfg.pad_token_id)
  theirs = _hf_logits(hf, ids, mask)
  ours = DeepseekVL(cfg).apply({"params": params}, ids, attention_mask=mask)["logits"]
  assert_parity(ours, theirs, "llm", mask=mask.astype(bool))


def test_vlm_logits_mixed_image_counts(setup):
  """One batch: samples with 0, 1 and 2 images, left-padded, images batch-major."""
  cfg, hf, params = setup
  k, img, bos = cfg.num_image_tokens, cfg.image_token_id, cfg.bos_token_id
  rng = np.random.default_rng(4)

  def text(n):
    return list(rng.integers(3, 400, n))

  rows = [
      [bos] + text(9),  # no image
      [bos] + text(2) + [img] * k + text(5),  # one image
      [bos] + [img] * k + text(3) + [img] * k + text(4),  # two images
  ]
  ids, mask = _left_pad(rows, cfg.pad_token_id)
  images = _images(cfg, 3, seed=5)
  theirs = _hf_logits(hf, ids, mask, **ref.pixel_kwargs(cfg, images))
  ours = DeepseekVL(cfg).apply({"params": params}, ids, images, attention_mask=mask)["logits"]
  assert_parity(ours, theirs, "vlm", mask=mask.astype(bool))
  # Image order matters: swapping the two images of sample 2 must change its logits.
  swapped = images[[0, 2, 1]]
  changed = DeepseekVL(cfg).apply({"params": params}, ids, swapped, attention_mask=mask)["logits"]
  assert np.abs(np.asarray(changed)[2] - np.asarray(ours)[2]).max() > 1e-3

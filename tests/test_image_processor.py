"""Preprocessing against the reference rule (reference 3.1) and transformers' PIL processor."""

import numpy as np
import pytest
from PIL import Image

from dsvl_jax.config_files import load_config
from dsvl_jax.data.image_processor import (ImageProcessorConfig, load_image, process,
                                           process_batch)
from dsvl_jax.models import VLMConfig


def reference(img, size, background, min_size=14):
  """Reference 3.1 step by step (ORIG VLMImageProcessor on a PIL image)."""
  img = img.convert("RGB")
  w, h = img.size
  m = max(w, h)
  new_h, new_w = max(int(h / m * size), min_size), max(int(w / m * size), min_size)
  img = img.resize((new_w, new_h), Image.BICUBIC)
  if new_w != new_h:  # expand2square
    side = max(new_w, new_h)
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(img, (0, (new_w - new_h) // 2) if new_w > new_h else ((new_h - new_w) // 2, 0))
    img = canvas
  x = np.array(img).transpose(2, 0, 1).astype(np.float64) * 0.00392156862745098
  return x.astype(np.float32)


def _config(name):
  return ImageProcessorConfig.for_model(
      VLMConfig.from_dict(load_config(f"configs/{name}.py").model))


CONFIGS = {"1.3b": _config("deepseek_vl_1_3b"), "7b": _config("deepseek_vl_7b")}


def _photos():
  from skimage import data
  return {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee()}


def _synthetic():
  rng = np.random.default_rng(0)
  rgb = lambda w, h: Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))  # noqa: E731
  rgba = Image.fromarray(rng.integers(0, 256, (37, 53, 4), np.uint8), "RGBA")
  grey = Image.fromarray(rng.integers(0, 256, (41, 29), np.uint8), "L")
  palette = rgb(45, 31).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
  sixteen = Image.fromarray(rng.integers(0, 65535, (33, 47), np.uint16))
  return {"wide": rgb(878, 620), "tall": rgb(333, 1000), "square": rgb(500, 500),
          "odd": rgb(751, 543), "rgba": rgba, "grey": grey, "palette": palette,
          "16bit": sixteen, "1x1": rgb(1, 1), "8000x100": rgb(8000, 100)}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_pixel_for_pixel_with_the_reference_rule(family):
  cfg = CONFIGS[family]
  images = {**{k: Image.fromarray(v) for k, v in _photos().items()}, **_synthetic()}
  for name, img in images.items():
    ours = process(img, cfg)
    assert ours.shape == (3, cfg.image_size, cfg.image_size) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, reference(img, cfg.image_size, cfg.background),
                                  err_msg=name)


def test_pad_colours_of_both_families():
  wide = Image.new("RGB", (400, 100), (255, 255, 255))
  for family, colour in (("1.3b", (127, 127, 127)), ("7b", (122, 116, 104))):
    out = process(wide, CONFIGS[family])
    np.testing.assert_array_equal(np.round(out[:, 0, 0] * 255), colour)  # top padding
    np.testing.assert_array_equal(out[:, out.shape[1] // 2, 0], 1.0)  # the image itself


def test_equals_transformers_pil_processor_where_floor_equals_round():
  from transformers.models.deepseek_vl.image_processing_pil_deepseek_vl import (
      DeepseekVLImageProcessorPil)
  hf = DeepseekVLImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                   size={"height": 384, "width": 384}, do_normalize=False)
  cfg = CONFIGS["1.3b"]
  photos = {k: Image.fromarray(v) for k, v in _photos().items()}
  for name, img in photos.items():
    w, h = img.size
    m = max(w, h)
    assert int(h / m * 384) == round(h / m * 384), name  # these photos: floor == round
    theirs = hf(images=[img], return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(process(img, cfg), theirs, err_msg=name)
  # 766x714 (reference 3.5): floor 357, round 358 -> we follow floor, transformers round.
  img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (714, 766, 3), np.uint8))
  ours = process(img, cfg)
  content_rows = np.flatnonzero(np.any(np.abs(ours[0] - 127 / 255) > 1e-6, axis=1))
  assert len(content_rows) == 357
  theirs = hf(images=[img], return_tensors="np")["pixel_values"][0]
  assert np.abs(ours - theirs).max() > 0.1


def test_unreadable_files_are_named(tmp_path):
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
  with pytest.raises(OSError, match="broken.jpg"):
    load_image(bad)
  with pytest.raises(OSError, match="missing.png"):
    load_image(tmp_path / "missing.png")
  good = tmp_path / "ok.png"
  Image.new("RGB", (20, 10), (1, 2, 3)).save(good)
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(good.read_bytes()[:40])
  with pytest.raises(OSError, match="truncated.png"):
    load_image(truncated)
  batch = process_batch([load_image(good)] * 2, CONFIGS["1.3b"])
  assert batch.shape == (2, 3, 384, 384)
  assert process_batch([], CONFIGS["7b"]).shape == (0, 3, 1024, 1024)

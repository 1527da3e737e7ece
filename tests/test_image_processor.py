"""Image preprocessing against the reference rule (reference 3.1) and transformers' PIL
processors (reference 3.4-3.5), on real photographs and synthetic edge cases."""

import struct
import zlib

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from dsvl_jax.config.files import load_config
from dsvl_jax.models import VLMConfig
from dsvl_jax.processor.image_processor import (
    ImageProcessorConfig,
    load_image,
    process,
    process_batch,
    to_rgb,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


def reference(img, size, background, min_size=14):
  """Reference 3.1 step by step (ORIG VLMImageProcessor after the caller's convert)."""
  img = img.convert("RGB")  # step 1
  w, h = img.size  # step 2
  m = max(w, h)
  new_h, new_w = max(int(h / m * size), min_size), max(int(w / m * size), min_size)
  img = img.resize((new_w, new_h), Image.BICUBIC)  # step 3
  if new_w != new_h:  # step 4: expand2square
    side = max(new_w, new_h)
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(img, (0, (new_w - new_h) // 2) if new_w > new_h else ((new_h - new_w) // 2, 0))
    img = canvas
  x = np.array(img).transpose(2, 0, 1)  # step 5
  return (x.astype(np.float64) * 0.00392156862745098).astype(np.float32)  # step 6


def _config(name):
  return ImageProcessorConfig.for_model(
      VLMConfig.from_dict(load_config(f"configs/{name}.py").model)
  )


CONFIGS = {"1.3b": _config("deepseek_vl_1_3b"), "7b": _config("deepseek_vl_7b")}


def _photos():
  """scikit-image's bundled photographs, plus a tall and an odd-sized crop of them."""
  from skimage import data

  chelsea, coffee = data.chelsea(), data.coffee()  # 451x300, 600x400
  return {
      "astronaut": Image.fromarray(data.astronaut()),  # 512x512
      "chelsea": Image.fromarray(chelsea),
      "coffee": Image.fromarray(coffee),
      "chelsea_tall": Image.fromarray(np.ascontiguousarray(chelsea.transpose(1, 0, 2))),
      "coffee_odd": Image.fromarray(coffee[:387, :583]),
  }


def _noise(w, h, seed=0):
  return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def _synthetic():
  rng = np.random.default_rng(1)
  u8 = lambda *shape: rng.integers(0, 256, shape, np.uint8)  # noqa: E731
  rgba = u8(37, 53, 4)
  rgba[::3, :, 3] = 0  # fully transparent rows keep their colour (no compositing)
  return {
      "wide": _noise(878, 620),
      "tall": _noise(333, 1000),
      "square": _noise(500, 500),
      "odd": _noise(751, 543),
      "rgba": Image.fromarray(rgba, "RGBA"),
      "grey": Image.fromarray(u8(41, 29), "L"),
      "grey_alpha": Image.fromarray(u8(23, 57, 2), "LA"),
      "palette": _noise(45, 31).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
      # Values on both sides of 255, so PIL's clipping (not scaling) matters.
      "16bit": Image.fromarray(rng.integers(0, 400, (33, 47), np.uint16)),
      "16bit_full": Image.fromarray(rng.integers(0, 65536, (20, 31), np.uint16)),
      "32bit": Image.fromarray(rng.integers(-300, 600, (19, 27), np.int32)),
      "1x1": _noise(1, 1),
      "8000x100": _noise(8000, 100),
      "100x8000": _noise(100, 8000),
  }


def _png16(arr):
  """A 16-bit PNG (grey [H, W] or RGB [H, W, 3]); PIL cannot write 16-bit RGB itself."""
  h, w = arr.shape[:2]
  raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
  chunk = lambda tag, body: (
      struct.pack(">I", len(body))
      + tag
      + body  # noqa: E731
      + struct.pack(">I", zlib.crc32(tag + body))
  )
  ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if arr.ndim == 3 else 0, 0, 0, 0)
  return (
      b"\x89PNG\r\n\x1a\n"
      + chunk(b"IHDR", ihdr)
      + chunk(b"IDAT", zlib.compress(raw))
      + chunk(b"IEND", b"")
  )


def test_configs_of_both_families():
  # Sizes and pad colours from reference 3.2-3.3 (tiny configs: SigLIP 32, SAM 64).
  assert CONFIGS["1.3b"] == ImageProcessorConfig(384, (127, 127, 127), 14, 1 / 255)
  assert CONFIGS["7b"] == ImageProcessorConfig(1024, (122, 116, 104), 14, 1 / 255)
  assert ImageProcessorConfig.for_model(tiny_config("siglip")) == ImageProcessorConfig(
      32, (127, 127, 127)
  )
  assert ImageProcessorConfig.for_model(tiny_config("hybrid")) == ImageProcessorConfig(
      64, (122, 116, 104)
  )
  assert CONFIGS["7b"].background == tuple(int(c * 255) for c in CLIP_MEAN)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_pixel_for_pixel_with_the_reference_rule(family, tmp_path):
  cfg = CONFIGS[family]
  images = {**_photos(), **_synthetic()}
  for name, img in images.items():
    ours = process(img, cfg)
    assert ours.shape == (3, cfg.image_size, cfg.image_size), name
    assert ours.dtype == np.float32, name
    assert 0.0 <= ours.min() and ours.max() <= 1.0, name
    np.testing.assert_array_equal(
        ours, reference(img, cfg.image_size, cfg.background), err_msg=name
    )
  # The same through files, in whatever mode PIL opens them.
  for name in ("chelsea", "palette", "16bit", "rgba"):
    path = tmp_path / f"{name}.png"
    images[name].save(path)
    img = load_image(path)
    np.testing.assert_array_equal(
        process(img, cfg), reference(img, cfg.image_size, cfg.background), err_msg=name
    )


def test_to_rgb_follows_pil_convert():
  rgba = np.random.default_rng(2).integers(0, 256, (5, 7, 4), np.uint8)
  rgba[..., 3] = 0
  np.testing.assert_array_equal(
      np.asarray(to_rgb(Image.fromarray(rgba, "RGBA"))), rgba[..., :3]
  )  # alpha dropped, nothing composited
  values = np.array([[0, 1, 100, 255, 256, 1000, 40000, 65535]], np.uint16)
  # 16-bit grey (PIL mode I;16, also what a 16-bit grey PNG opens as): clipped, not scaled.
  grey16 = Image.fromarray(values)
  assert grey16.mode == "I;16"
  np.testing.assert_array_equal(np.asarray(to_rgb(grey16))[..., 0], np.clip(values, 0, 255))
  # A 16-bit RGB PNG is opened by PIL as 8-bit RGB keeping the high byte: scaled.
  import io

  rgb16 = Image.open(io.BytesIO(_png16(np.stack([values] * 3, -1))))
  assert rgb16.mode == "RGB"
  np.testing.assert_array_equal(np.asarray(to_rgb(rgb16))[..., 0], values >> 8)
  grey16_png = Image.open(io.BytesIO(_png16(values)))
  assert grey16_png.mode == "I;16"
  np.testing.assert_array_equal(np.asarray(to_rgb(grey16_png))[..., 0], np.clip(values, 0, 255))


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_pad_colour_and_placement(family):
  cfg = CONFIGS[family]
  s, colour = cfg.image_size, np.array(cfg.background)
  for w, h in ((300, 101), (101, 300)):  # odd total pad: extra pixel bottom/right
    out = process(Image.new("RGB", (w, h), (255, 255, 255)), cfg)
    short = int(min(w, h) / max(w, h) * s)
    is_pad = np.all(out == (colour / 255).astype(np.float32)[:, None, None], axis=0)
    is_white = np.all(out == 1.0, axis=0)
    assert np.all(is_pad | is_white)
    if w > h:
      lines = is_white[:, 0]  # rows holding the image
    else:
      lines = is_white[0, :]  # columns holding the image
    before = (s - short) // 2
    np.testing.assert_array_equal(np.flatnonzero(lines), np.arange(before, before + short))
    np.testing.assert_array_equal(np.round(out[:, 0, 0] * 255), colour)


def _hf_1_3b():
  from transformers.models.deepseek_vl.image_processing_pil_deepseek_vl import (
      DeepseekVLImageProcessorPil,
  )

  hf = DeepseekVLImageProcessorPil(
      image_mean=[0.5] * 3,
      image_std=[0.5] * 3,
      size={"height": 384, "width": 384},
      do_normalize=False,
  )
  assert hf.background_color == (127, 127, 127)
  return lambda img: hf(images=[img], return_tensors="np")["pixel_values"][0]


def _hf_7b():
  from transformers.models.deepseek_vl_hybrid.image_processing_pil_deepseek_vl_hybrid import (
      DeepseekVLHybridImageProcessorPil,
  )

  hf = DeepseekVLHybridImageProcessorPil(
      image_mean=[0.5] * 3,
      image_std=[0.5] * 3,
      high_res_image_mean=list(CLIP_MEAN),
      high_res_size={"height": 1024, "width": 1024},
      do_normalize=False,
  )
  assert hf.high_res_background_color == (122, 116, 104)
  return lambda img: hf(images=[img], return_tensors="np")["high_res_pixel_values"][0]


def _extent(out, colour, axis):
  """Number of rows (axis=1) or columns (axis=0) holding anything but the pad colour."""
  differs = np.any(out != (np.array(colour) / 255).astype(np.float32)[:, None, None], axis=0)
  return int(np.any(differs, axis=axis).sum())


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_against_transformers_pil_processor(family):
  cfg = CONFIGS[family]
  s = cfg.image_size
  hf = _hf_1_3b() if family == "1.3b" else _hf_7b()
  photos = _photos()
  same = {
      "astronaut": photos["astronaut"],
      "chelsea": photos["chelsea"],
      "wide": _noise(878, 620),
      "very_wide": _noise(5014, 2004),
  }
  if family == "1.3b":
    same["coffee"] = photos["coffee"]  # at 1024 coffee is 682.67: floor != round
  for name, img in same.items():
    short = min(img.size) / max(img.size) * s
    assert int(short) == round(short), name  # floor == round: outputs must agree exactly
    np.testing.assert_array_equal(process(img, cfg), hf(img), err_msg=name)
  # floor != round (reference 3.5): we keep the floor, transformers is one pixel larger.
  cases = {"1.3b": ((766, 714), (333, 1000)), "7b": ((750, 544), (600, 400), (400, 600))}
  for w, h in cases[family]:
    img = Image.new("RGB", (w, h), (255, 255, 255))
    short = min(w, h) / max(w, h) * s
    assert int(short) + 1 == round(short), (w, h)
    axis = 1 if w > h else 0
    ours, theirs = process(img, cfg), hf(img)
    assert _extent(ours, cfg.background, axis) == int(short), (w, h)
    assert _extent(theirs, cfg.background, axis) == round(short), (w, h)
    assert np.any(ours != theirs)


def test_unreadable_files_name_the_path(tmp_path):
  random_bytes = tmp_path / "random.jpg"
  random_bytes.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, np.uint8).tobytes())
  fake_jpeg = tmp_path / "broken.jpg"
  fake_jpeg.write_bytes(b"\xff\xd8\xff not really a jpeg")
  good = tmp_path / "ok.png"
  Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 80, 3), np.uint8)).save(good)
  truncated = tmp_path / "truncated.png"
  truncated.write_bytes(good.read_bytes()[:200])
  for path in (random_bytes, fake_jpeg, truncated, tmp_path / "missing.png", tmp_path):
    with pytest.raises(OSError) as err:
      load_image(path)
    assert str(path) in str(err.value), path
  with pytest.raises(FileNotFoundError):
    load_image(tmp_path / "missing.png")
  assert load_image(good).size == (80, 64)


def test_batches():
  images = [_noise(90, 40), Image.new("L", (1, 1), 7), _photos()["coffee"]]
  for cfg in CONFIGS.values():
    s = cfg.image_size
    batch = process_batch(images, cfg)
    assert batch.shape == (3, 3, s, s) and batch.dtype == np.float32
    for i, img in enumerate(images):
      np.testing.assert_array_equal(batch[i], reference(img, s, cfg.background))
    empty = process_batch([], cfg)
    assert empty.shape == (0, 3, s, s) and empty.dtype == np.float32
  with pytest.raises(TypeError):
    process(np.zeros((4, 4, 3), np.uint8), CONFIGS["1.3b"])

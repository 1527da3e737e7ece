"""Image preprocessing exactly as the original DeepSeek-VL processor (reference 3.1-3.3).

Per image (S = `image_size`, 384 for the 1.3B family, 1024 for the 7B hybrid family):
  1. `PIL.Image.convert("RGB")` on whatever PIL opened (see `to_rgb` for what that does
     to RGBA, palette and 16-bit images).
  2. (new_h, new_w) = (max(int(h / m * S), min_size), max(int(w / m * S), min_size)),
     m = max(w, h): the long side becomes S, the short side is *floored*.
  3. PIL's own `Image.resize(..., BICUBIC)` on uint8 (antialiased, a = -0.5); this is what
     torchvision's resize does on a PIL image, so it is bit-exact with the original.
  4. Paste on an S x S canvas of the pad colour: wide images at (0, (S - new_h) // 2),
     tall ones at ((S - new_w) // 2, 0); the extra pixel of an odd pad goes bottom/right.
  5. uint8 HWC -> CHW, then float64 x rescale_factor -> float32, values in [0, 1].
No normalisation: both released processors have do_normalize false and the towers
normalise their own inputs (SigLIP 0.5/0.5, SAM CLIP mean/std).

Where transformers' `DeepseekVL(Hybrid)ImageProcessor[Pil]` differs (reference 3.4-3.5):
  * it *rounds* the target size (`round(side * S / m)`) where the original floors, so when
    the fraction is >= 0.5 its content is one pixel larger and the pad offset can shift
    (e.g. 766x714 at 384: 357 rows here, 358 there; 750x544 at 1024: 742 vs 743);
  * its default torchvision back end resizes tensors with an a = -0.75 bicubic, not PIL's,
    so it is off by ~1/255 (0.0078 normalised) even when the sizes agree; only the `...Pil`
    back end matches, and only where floor and round coincide;
  * the hybrid processor builds the 384 SigLIP view by a uint8 bilinear resize of the
    padded 1024 image; the original (and our model) resizes the float [0, 1] 1024 image
    with antialiased bilinear inside the tower, so this module emits only the S x S image;
  * it normalises in the processor (ours leaves that to the towers; same values), and it
    rejects 4-channel input unless the caller converts to RGB first.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class ImageProcessorConfig:
  """Settings of the released `VLMImageProcessor` (reference 3.2-3.3)."""

  image_size: int  # S: 384 (1.3B family), 1024 (7B hybrid family)
  background: tuple[int, int, int]  # pad colour, int(mean * 255) per channel (truncated)
  min_size: int = 14  # lower bound of the resized short side
  rescale_factor: float = 1 / 255  # uint8 -> [0, 1], applied in float64

  @classmethod
  def for_model(cls, cfg) -> "ImageProcessorConfig":
    """Settings for a `dsvl_jax.models.VLMConfig`.

    The pad colour comes from the mean of the tower that sees the padded square: SigLIP's
    0.5 -> (127, 127, 127) for the SigLIP-only family, SAM's CLIP mean -> (122, 116, 104)
    for the hybrid family (its 384 view is resized from the padded 1024 square).
    """
    mean = cfg.sam.pixel_mean if cfg.hybrid else cfg.siglip.pixel_mean
    return cls(image_size=cfg.image_size, background=tuple(int(c * 255) for c in mean))


# The formats people send (and datasets ship): every other Pillow decoder stays
# unreachable, so a crafted payload cannot pick a rarely-exercised one (EPS would even
# run Ghostscript). Pillow's format names.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS's default), as the
# default cap: width x height, read from the header before anything is decoded.
MAX_IMAGE_PIXELS = 89_478_485


def load_image(
    path: str | pathlib.Path | bytes,
    *,
    formats: Sequence[str] | None = IMAGE_FORMATS,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> Image.Image:
  """Opens and fully decodes an image file (or an encoded file's bytes), as PIL opened it
  (mode unchanged).

  formats: the Pillow decoders allowed (None = every one Pillow has). max_pixels: the
  largest width x height, checked from the header before decoding (None = no cap beyond
  Pillow's own). Like the reference loader it applies no EXIF orientation. Missing files
  raise FileNotFoundError; any other failure (unknown or disallowed format, over the
  cap, corrupt or truncated data, whatever a decoder raises) raises OSError; both name
  the file.
  """
  if isinstance(path, bytes):
    name, source = f"embedded image ({len(path)} bytes)", io.BytesIO(path)
  else:
    name, source = repr(str(path)), path
  img = None
  try:
    img = Image.open(source, formats=None if formats is None else list(formats))
    if max_pixels is not None and img.width * img.height > max_pixels:
      raise _TooLarge(
          f"{img.width}x{img.height} is {img.width * img.height} pixels, more "
          f"than the {max_pixels} allowed"
      )
    img.load()  # decode now so a truncated file fails here, not inside process()
  except FileNotFoundError as e:
    raise FileNotFoundError(f"image file not found: {name}") from e
  # Decoders raise more than OSError on hostile input (SyntaxError from a broken PNG
  # chunk, IndexError, ValueError, EOFError, DecompressionBombError, ...): every one of
  # them means "this is not an image we can read", and none may escape as another type.
  except Exception as e:  # pylint: disable=broad-exception-caught
    if img is not None:
      img.close()
    why = str(e)
    if isinstance(e, Image.UnidentifiedImageError):  # Pillow's names the file object
      why = (
          "not an image of an accepted format "
          f"({', '.join(formats) if formats is not None else 'any Pillow reads'})"
      )
    raise OSError(f"cannot read image {name}: {why}") from e
  return img


class _TooLarge(Exception):
  """An image over the pixel cap (turned into load_image's OSError)."""


def to_rgb(img: Image.Image) -> Image.Image:
  """`img.convert("RGB")`, exactly what the reference callers do (no compositing).

  What PIL's conversion does (Pillow 13, checked):
    RGBA, LA, PA: alpha is dropped; fully transparent pixels show their stored colour
      (often black), they are not blended onto any background.
    L, LA, 1: grey is replicated into the three channels ("1" gives 0 or 255).
    P: palette lookup; a transparency entry is ignored.
    I;16, I;16B, I (16/32-bit integer grey) and F: values are *clipped* to [0, 255]
      (F also truncated), not scaled, so a typical 16-bit greyscale photo (what PIL opens
      from a 16-bit grey PNG or TIFF) comes out almost entirely white.
    16-bit RGB(A) PNGs never reach this: PIL's PNG decoder already opens them as 8-bit
      RGB(A) keeping the high byte (v >> 8), i.e. scaled. Both behaviours match the
      reference because it calls the same convert on whatever PIL opened.
  """
  return img if img.mode == "RGB" else img.convert("RGB")


def target_size(width: int, height: int, cfg: ImageProcessorConfig) -> tuple[int, int]:
  """(new_w, new_h) in PIL order: long side S, short side floored, each >= min_size."""
  m = max(width, height)
  s = cfg.image_size
  # int() truncates: floor for these positive values (transformers rounds instead).
  return (max(int(width / m * s), cfg.min_size), max(int(height / m * s), cfg.min_size))


def process_uint8(img: Image.Image, cfg: ImageProcessorConfig) -> np.ndarray:
  """Steps 1-4: one PIL image of any size and mode -> uint8 [3, S, S]."""
  if not isinstance(img, Image.Image):
    raise TypeError(f"process() takes a PIL image, got {type(img).__name__}")
  img = to_rgb(img)
  new_w, new_h = target_size(*img.size, cfg)
  img = img.resize((new_w, new_h), Image.BICUBIC)  # uint8 -> uint8, antialiased
  s = cfg.image_size
  if new_w != new_h:  # a square input is already S x S after the resize
    canvas = Image.new("RGB", (s, s), cfg.background)
    offset = (0, (s - new_h) // 2) if new_w > new_h else ((s - new_w) // 2, 0)
    canvas.paste(img, offset)
    img = canvas
  return np.asarray(img, np.uint8).transpose(2, 0, 1)  # HWC -> CHW


def rescale(pixels: np.ndarray, cfg: ImageProcessorConfig) -> np.ndarray:
  """Step 5: uint8 -> float32 in [0, 1], as the reference: float64 multiply, then cast
  (x * float32(1/255) would differ in the last bit for 126 of the 256 values)."""
  return (pixels.astype(np.float64) * cfg.rescale_factor).astype(np.float32)


def process(img: Image.Image, cfg: ImageProcessorConfig) -> np.ndarray:
  """One PIL image of any size and mode -> float32 [3, S, S] in [0, 1]."""
  return rescale(process_uint8(img, cfg), cfg)


def process_batch(images: Sequence[Image.Image], cfg: ImageProcessorConfig) -> np.ndarray:
  """N PIL images -> float32 [N, 3, S, S]; N = 0 gives shape (0, 3, S, S)."""
  s = cfg.image_size
  if not images:
    return np.zeros((0, 3, s, s), np.float32)
  return np.stack([process(img, cfg) for img in images])

"""Image preprocessing exactly as the original DeepSeek-VL processor (reference 3.1-3.3).

Per image: convert to RGB (PIL's convert: RGBA drops alpha without compositing), scale
so the long side is S with floor-rounded sides of at least `min_size` (PIL bicubic on
uint8), paste centred on an S x S canvas of the truncated mean colour (extra pixel of an
odd pad to the bottom/right), then uint8 -> float64 x 1/255 -> float32, CHW. No
normalisation: both released processors have do_normalize false and the towers
normalise their own inputs.

Where transformers' `DeepseekVL*ImageProcessor` differs (reference 3.4-3.5): it rounds
the target size (ORIG floors), so when the fraction is >= 0.5 its image is one pixel
larger and the pad offset shifts; its torchvision back end resizes with a = -0.75
bicubic (not PIL's), and the hybrid processor makes the 384 view from the padded uint8
1024 image (ours is the float antialiased resize inside the tower). Images agree
exactly only through the PIL back end when floor and round coincide.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class ImageProcessorConfig:
  image_size: int  # S: 384 (1.3B family), 1024 (7B family)
  background: tuple[int, int, int]  # pad colour, int(mean * 255) per channel
  min_size: int = 14
  rescale_factor: float = 1 / 255

  @classmethod
  def for_model(cls, cfg) -> "ImageProcessorConfig":
    """The released processors' settings for a VLMConfig: the pad colour comes from the
    mean of the tower that sees the padded square (SigLIP 0.5 -> 127; SAM's CLIP mean
    -> (122, 116, 104))."""
    mean = cfg.sam.pixel_mean if cfg.hybrid else cfg.siglip.pixel_mean
    return cls(image_size=cfg.image_size, background=tuple(int(c * 255) for c in mean))


def load_image(path: str | pathlib.Path) -> Image.Image:
  """Opens and fully decodes an image; errors name the file."""
  try:
    img = Image.open(path)
    img.load()  # force decoding so truncated files fail here, not later
  except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
    raise OSError(f"cannot read image {str(path)!r}: {e}") from e
  return img


def to_rgb(img: Image.Image) -> Image.Image:
  """PIL's convert("RGB"), as the reference callers do. Note PIL's 16-bit modes
  ('I;16', 'I') convert by clipping values to 0..255, not by scaling."""
  return img if img.mode == "RGB" else img.convert("RGB")


def target_size(width: int, height: int, cfg: ImageProcessorConfig) -> tuple[int, int]:
  """(new_w, new_h): long side S, floor-rounded, at least min_size."""
  m = max(width, height)
  s = cfg.image_size
  return (max(int(width / m * s), cfg.min_size), max(int(height / m * s), cfg.min_size))


def process(img: Image.Image, cfg: ImageProcessorConfig) -> np.ndarray:
  """One PIL image -> float32 [3, S, S] in [0, 1]."""
  img = to_rgb(img)
  new_w, new_h = target_size(*img.size, cfg)
  img = img.resize((new_w, new_h), Image.BICUBIC)
  s = cfg.image_size
  if new_w != new_h:
    canvas = Image.new("RGB", (s, s), cfg.background)
    offset = (0, (new_w - new_h) // 2) if new_w > new_h else ((new_h - new_w) // 2, 0)
    canvas.paste(img, offset)
    img = canvas
  arr = np.asarray(img, np.uint8).transpose(2, 0, 1)
  return (arr.astype(np.float64) * cfg.rescale_factor).astype(np.float32)


def process_batch(images: Sequence[Image.Image], cfg: ImageProcessorConfig) -> np.ndarray:
  """[N, 3, S, S] float32 (N may be 0)."""
  s = cfg.image_size
  if not images:
    return np.zeros((0, 3, s, s), np.float32)
  return np.stack([process(img, cfg) for img in images])

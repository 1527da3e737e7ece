"""The model-config values that turning text and images into model inputs needs."""

from __future__ import annotations

import dataclasses

from dsvl_jax.processor import image_processor


@dataclasses.dataclass(frozen=True)
class TokenLayout:
  """The model-config values data preparation needs (from `TokenLayout.of(VLMConfig)`)."""

  bos_token_id: int
  eos_token_id: int
  pad_token_id: int
  image_token_id: int
  num_image_tokens: int
  image: image_processor.ImageProcessorConfig

  @classmethod
  def of(cls, cfg) -> "TokenLayout":
    return cls(
        cfg.bos_token_id,
        cfg.eos_token_id,
        cfg.pad_token_id,
        cfg.image_token_id,
        cfg.num_image_tokens,
        image_processor.ImageProcessorConfig.for_model(cfg),
    )

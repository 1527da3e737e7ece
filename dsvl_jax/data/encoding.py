"""A record -> a training sample (ids, loss mask, images), or a reason to skip it.

Runs inside grain workers, so it imports no JAX: `TokenLayout` carries the few model
config values it needs (the conversation helpers read them by attribute, as they read a
`VLMConfig`).

Loss masks by stage (paper 3.2, reference 4.4):
  stages 1, 2  every text token after BOS: the document or the whole rendered chat;
               never image tokens (and packing/padding adds none)
  stage 3      chats: each assistant answer from its leading space through its EOS
               (`conversation.encode_conversation`); documents: every text token
A document ("text" record) ends with a supervised EOS when `append_eos` is set.

Nothing bad passes silently: a malformed record, an empty one, one longer than a row,
one with more images than a row holds, a missing or undecodable image, or a record whose
images contradict its source's modality becomes `Skipped(name, reason)`; the pipeline
counts it, logs it (rate-limited: skip_log.py), and raises instead when the config is
strict.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from dsvl_jax.data.config import DataConfig
from dsvl_jax.data.mixing import MULTIMODAL, TEXT
from dsvl_jax.data.skip_log import SkipLog
from dsvl_jax.data.sources import (
    InMemorySource,
    Record,
    RecordError,
    Source,
    open_image,
    parse_record,
)
from dsvl_jax.processor import conversation, image_processor
from dsvl_jax.processor.layout import TokenLayout
from dsvl_jax.processor.tokenizer import Tokenizer, make_tokenizer, special_token_mismatch


@dataclasses.dataclass(frozen=True)
class TrainSample:
  """ids [T] int32; loss_mask [T] bool (on ids); images [n, 3, S, S] uint8."""

  ids: np.ndarray
  loss_mask: np.ndarray
  images: np.ndarray
  source: str
  name: str


@dataclasses.dataclass(frozen=True)
class Skipped:
  source: str
  name: str
  reason: str  # a short category: the metric key
  detail: str  # what exactly, for the log line


class BadSampleError(ValueError):
  """A bad sample in strict mode."""


def check_tokenizer(tok: Tokenizer, layout: TokenLayout) -> None:
  """Start-up check that the template's special strings are single config ids, so a bad
  tokenizer fails the run at once instead of every chat being skipped as malformed."""
  if bad := special_token_mismatch(tok, layout):
    text, got, want = bad
    raise ValueError(
        f"data.tokenizer: {text!r} encodes to {got}, the model config "
        f"needs [{want}]; use the checkpoint's own tokenizer"
    )


def pixels_to_unit(pixels: np.ndarray) -> np.ndarray:
  """uint8 pixels [..., 3, S, S] -> float32 in [0, 1], bit-identical to
  `image_processor.process` (a correctly rounded float32 division equals its float64
  rescale). Do it on the host: XLA may turn x / 255 into x * (1 / 255), which differs
  in the last bit for about half the values."""
  return pixels.astype(np.float32) / np.float32(255)


class SampleEncoder:
  """Callable (source name, index) -> TrainSample | Skipped, picklable for workers.

  Holds the sources and the tokenizer; a worker process rebuilds the tokenizer from the
  config on first use rather than receiving it pickled, and logs its own skips.
  """

  def __init__(
      self,
      cfg: DataConfig,
      layout: TokenLayout,
      sources: Mapping[str, Source | Sequence[dict[str, Any]]],
      modality: str,
      tokenizer: Tokenizer | None = None,
  ):
    """sources: name -> a Source, or a plain list of record dicts (an InMemorySource)."""
    self.cfg, self.layout, self.modality = cfg, layout, modality
    self.sources = {
        n: s if isinstance(s, Source) else InMemorySource(s) for n, s in sources.items()
    }
    self._tokenizer = tokenizer
    self._skip_log = SkipLog()
    self.template = conversation.template_for(cfg.system_prompt)

  def __getstate__(self):
    return {**self.__dict__, "_tokenizer": None, "_skip_log": SkipLog()}

  @property
  def tokenizer(self) -> Tokenizer:
    if self._tokenizer is None:
      self._tokenizer = make_tokenizer(self.cfg.tokenizer, self.layout)
    return self._tokenizer

  def __call__(self, tagged: tuple[str, int]) -> TrainSample | Skipped:
    source, index = tagged
    src = self.sources[source]
    where = src.describe(index)  # the file and line, for log lines
    name = f"{source}[{index}]" + (f" ({where})" if where else "")
    try:
      record = parse_record(src[index], src.base_dir)
      return self._encode(record, source, name)
    except _Skip as s:
      return self._skip(source, name, s.reason, s.detail)
    except RecordError as e:  # a format's reader may name a finer reason
      return self._skip(source, name, getattr(e, "reason", "malformed"), str(e))

  def _skip(self, source: str, name: str, reason: str, detail: str) -> Skipped:
    msg = f"bad sample {name}: {reason}: {detail}"
    if self.cfg.strict:
      raise BadSampleError(msg + " (data.strict=True)")
    self._skip_log.warn(reason, msg)
    return Skipped(source, name, reason, detail)

  def _encode(self, record: Record, source: str, name: str) -> TrainSample:
    cfg, layout = self.cfg, self.layout
    n_img = len(record.images)
    if self.modality == MULTIMODAL and n_img == 0:
      raise _Skip("modality", "no image in a record of a multimodal source")
    if self.modality == TEXT and n_img:
      raise _Skip("modality", f"{n_img} image(s) in a record of a text source")
    if n_img > cfg.max_images_per_row:
      raise _Skip("too_many_images", f"{n_img} images, a row holds {cfg.max_images_per_row}")
    ids, mask = self._tokens(record)
    placeholders = int(np.sum(ids == layout.image_token_id)) // max(layout.num_image_tokens, 1)
    if placeholders != n_img:
      raise RecordError(f"{placeholders} image placeholder(s) but {n_img} image(s)")
    if not mask.any():
      raise _Skip("empty", "no token to supervise")
    if len(ids) - 1 > cfg.seq_len:
      raise _Skip(
          "too_long",
          f"{len(ids)} tokens, a row holds {cfg.seq_len + 1} "
          f"(seq_len + 1 for the shifted targets)",
      )
    pixels = np.zeros((n_img, 3, layout.image.image_size, layout.image.image_size), np.uint8)
    for k, ref in enumerate(record.images):  # decoded last: bad text costs no decoding
      try:
        pixels[k] = image_processor.process_uint8(open_image(ref), layout.image)
      except OSError as e:
        raise _Skip("bad_image", f"image {k}: {e}") from e
    return TrainSample(ids, mask, pixels, source, name)

  def _tokens(self, record: Record) -> tuple[np.ndarray, np.ndarray]:
    layout, tok = self.layout, self.tokenizer
    if record.text is not None:
      if not record.text.strip():
        raise _Skip("empty", "empty text")
      ids = tok.encode(record.text)
      if self.cfg.append_eos:
        ids.append(layout.eos_token_id)
      ids, mask, _ = conversation.expand_image_tokens(
          ids, [False] + [True] * (len(ids) - 1), layout.image_token_id, layout.num_image_tokens
      )
      return ids, mask
    if not record.messages:
      raise _Skip("empty", "no messages")
    try:
      messages = [conversation.Message(m["role"], m["content"]) for m in record.messages]
      enc = conversation.encode_conversation(messages, tok, layout, template=self.template)
    except ValueError as e:
      raise RecordError(str(e)) from e
    if self.cfg.stage == 3:
      return enc.ids, enc.loss_mask
    mask = enc.ids != layout.image_token_id
    mask[0] = False  # BOS is given, never predicted
    return enc.ids, mask


class _Skip(Exception):

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason, self.detail = reason, detail

"""The chat service: an OpenAI request (or the web page's chat) -> an engine request.

The prompt is built as the chat CLI builds a turn: the "deepseek" template (the
configured system prompt, or the request's system message), every turn's images
through the model's image processor, `encode_conversation` with the generation prompt.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

from PIL import Image

from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.engine import Engine, EngineError, Prompt, RequestTooLong
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.processor.conversation import Message, encode_conversation, template_for
from dsvl_jax.processor.image_processor import ImageProcessorConfig, process_batch
from dsvl_jax.processor.tokenizer import Tokenizer
from dsvl_jax.serve.images import ImageResolver
from dsvl_jax.serve.protocol import ChatRequest, Defaults, Limits, RequestError, parse_chat_request
from dsvl_jax.serve.serve_config import ServeConfig


@dataclasses.dataclass
class Prepared:
  request: ChatRequest
  prompt: Prompt
  sampling: SamplingConfig
  model: str  # the served model it asked for (the checkpoint's name or an adapter's)
  adapter: int  # that model's adapter index in the engine (0: the checkpoint alone)


class ChatService:
  """Holds the engine and everything a request needs on the way in."""

  def __init__(
      self,
      engine: Engine,
      cfg: VLMConfig,
      tokenizer: Tokenizer,
      serve: ServeConfig,
      model_name: str,
  ):
    self.engine, self.cfg, self.tokenizer = engine, cfg, tokenizer
    self.model_name = model_name
    # Every name a request may give: the checkpoint's (no adapter), then serve.adapters'
    # by name (the engine's stacked adapter indices, infer/load.py `stack_adapters`).
    self.models = {model_name: 0, **{n: i + 1 for i, n in enumerate(sorted(serve.adapters))}}
    self.max_body_bytes, self.max_preparing = serve.max_body_bytes, serve.max_preparing
    self.system_prompt = serve.system_prompt
    self.processor = ImageProcessorConfig.for_model(cfg)
    self.limits = Limits(
        max_images=serve.max_images,
        max_tokens=serve.max_tokens,
        default_max_tokens=min(serve.default_max_tokens, serve.max_tokens),
    )
    self.defaults = Defaults(
        temperature=serve.temperature,
        top_p=serve.top_p,
        repetition_penalty=serve.repetition_penalty,
    )
    self.resolver = ImageResolver(serve.image_dir, serve.max_image_bytes, serve.max_image_pixels)

  def prepare(self, body: dict) -> Prepared:
    """Validates a chat-completions body and builds its prompt (raises RequestError).
    The cheap checks come first: nothing is decoded or tokenised for a request that
    names another model or whose text alone cannot fit a slot."""
    req = parse_chat_request(body, self.limits, self.defaults)
    model = self.model_name if req.model is None else req.model
    if model not in self.models:
      shown = model if len(model) <= 80 else model[:77] + "..."
      served = ", ".join(repr(m) for m in list(self.models)[:8])
      more = f" and {len(self.models) - 8} more" if len(self.models) > 8 else ""
      raise RequestError(
          f"model {shown!r} is not served here; this server serves {served}{more} "
          f"(GET /v1/models)",
          status=404,
          param="model",
          code="model_not_found",
      )
    self._check_text_fits(req)
    images = [self.resolver(url, param) for url, param in req.image_urls]
    prompt = self.build_prompt(req.messages, images, req.system)
    sampling = SamplingConfig(
        temperature=req.temperature,
        top_p=req.top_p,
        repetition_penalty=req.repetition_penalty,
        max_new_tokens=req.max_tokens,
        stop_strings=STOP_STRINGS + req.stop,
        seed=req.seed,
        ignore_eos=req.ignore_eos,
    )
    try:
      self.engine.check(prompt, sampling, self.models[model])
    except RequestTooLong as e:
      raise RequestError(str(e), param="messages", code="context_length_exceeded") from e
    except EngineError as e:
      raise RequestError(str(e), param="messages") from e
    return Prepared(req, prompt, sampling, model, self.models[model])

  def _check_text_fits(self, req: ChatRequest) -> None:
    """Refuses, without tokenising, a conversation whose text has more tokens than a slot
    holds: n characters are at least n bytes, hence at least n /
    tokenizer.max_token_bytes tokens (counted without copying the text)."""
    n_chars = sum(len(m.content) for m in req.messages) + len(req.system or "")
    at_least = -(-n_chars // self.tokenizer.max_token_bytes)
    if at_least + req.max_tokens > self.engine.max_len:
      raise RequestError(
          f"the messages hold {n_chars} characters of text, at least {at_least} tokens, "
          f"and max_tokens is {req.max_tokens}: more than the {self.engine.max_len} "
          f"positions of a slot",
          param="messages",
          code="context_length_exceeded",
      )

  def build_prompt(
      self, messages: Sequence[Message], images: Sequence[Image.Image], system: str | None = None
  ) -> Prompt:
    template = template_for(self.system_prompt if system is None else system)
    try:
      encoded = encode_conversation(
          messages, self.tokenizer, self.cfg, add_generation_prompt=True, template=template
      )
    except ValueError as e:
      raise RequestError(f"messages: {e}", param="messages") from e
    pixels = process_batch(list(images), self.processor) if images else None
    return Prompt.of(encoded.ids, pixels, self.processor.image_size)


def model_name_of(serve: ServeConfig) -> str:
  if serve.model_name:
    return serve.model_name
  if serve.checkpoint:
    return pathlib.Path(serve.checkpoint.rstrip("/")).name
  return "dsvl-random-init"

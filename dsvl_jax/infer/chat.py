"""Multi-turn chat: a session object and the terminal loop (`--config.mode=chat`).

Like the reference CLI, every turn re-encodes the whole conversation and its images
(no KV reuse across turns) and renders it with the "deepseek" template. Streaming
prints text as tokens arrive, holding back an incomplete UTF-8 sequence.

Terminal commands: `/image PATH` attaches an image to the next message (its
placeholder is put first in the message, as the reference CLI does, or last with
`chat.image_position="last"`), `/reset` starts a
new conversation, `/quit` leaves. Empty lines are ignored.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterable, TextIO

import jax
import ml_collections
import numpy as np

from dsvl_jax.data.conversation import (DEEPSEEK, IMAGE_TOKEN, Message, Template,
                                        encode_conversation, template_for)
from dsvl_jax.data.image_processor import ImageProcessorConfig, load_image, process_batch
from dsvl_jax.data.tokenizer import Tokenizer
from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.generate import Generator, cut_at_stop
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.models.config import VLMConfig

class ChatSession:
  """Holds the conversation; `reply` streams the next answer."""

  def __init__(self, cfg: VLMConfig, params, tokenizer: Tokenizer, sampling: SamplingConfig,
               template: Template = DEEPSEEK, image_position: str = "first"):
    if image_position not in ("first", "last"):
      raise ValueError(f"config field 'chat.image_position': 'first' or 'last', got "
                       f"{image_position!r}")
    self.image_position = image_position
    self.cfg = cfg
    self.template = template
    self.tokenizer = tokenizer
    self.sampling = sampling
    self.generator = Generator(cfg, params)
    self.processor = ImageProcessorConfig.for_model(cfg)
    self.reset()

  def reset(self) -> None:
    self.messages: list[Message] = []
    self.images: list[np.ndarray] = []

  def reply(self, text: str, image_paths: Iterable[str] = (),
            on_text: Callable[[str], None] | None = None) -> str:
    """Adds a user turn (its images first, as the reference CLI places them, or after the
    text with image_position "last") and answers."""
    paths = list(image_paths)
    new_images = process_batch([load_image(p) for p in paths], self.processor)
    marks = IMAGE_TOKEN * len(paths)
    content = text + marks if self.image_position == "last" else marks + text
    messages = self.messages + [Message("user", content)]
    encoded = encode_conversation(messages, self.tokenizer, self.cfg, add_generation_prompt=True,
                                  template=self.template)
    images = self.images + list(new_images)
    batch = np.asarray(encoded.ids, np.int32)[None]
    stream = _Streamer(self.tokenizer, on_text)
    result = self.generator.generate(
        batch, images=np.stack(images) if images else None, sampling=self.sampling,
        decode=self.tokenizer.decode, on_token=lambda _, tok: stream.push(tok))
    answer = cut_at_stop(self.tokenizer.decode(result.tokens[0]), STOP_STRINGS).strip()
    stream.finish()
    self.messages = messages + [Message("assistant", answer)]
    self.images = images
    return answer


class _Streamer:
  """Emits newly decoded text; holds back a trailing replacement character (a token
  that ends mid UTF-8 sequence) and anything from a stop string on."""

  def __init__(self, tokenizer: Tokenizer, on_text: Callable[[str], None] | None):
    self.tokenizer, self.on_text = tokenizer, on_text
    self.tokens: list[int] = []
    self.sent = 0

  def push(self, token: int) -> None:
    self.tokens.append(token)
    text = cut_at_stop(self.tokenizer.decode(self.tokens), STOP_STRINGS)
    if text.endswith("\ufffd"):
      return
    # never emit a prefix of a stop string that may still complete
    hold = max((k for s in STOP_STRINGS for k in range(1, len(s))
                if text.endswith(s[:k])), default=0)
    self._emit(text[:len(text) - hold])

  def finish(self) -> None:
    self._emit(cut_at_stop(self.tokenizer.decode(self.tokens), STOP_STRINGS).rstrip())

  def _emit(self, text: str) -> None:
    if self.on_text is not None and len(text) > self.sent:
      self.on_text(text[self.sent:])
      self.sent = len(text)


def sampling_from(chat: ml_collections.ConfigDict) -> SamplingConfig:
  return SamplingConfig(temperature=chat.temperature, top_p=chat.top_p, top_k=chat.top_k,
                        repetition_penalty=chat.repetition_penalty,
                        max_new_tokens=chat.max_new_tokens, stop_strings=STOP_STRINGS,
                        seed=chat.seed)


def build_session(config: ml_collections.ConfigDict) -> ChatSession:
  """Model from config.chat.checkpoint (or random init of config.model), tokenizer."""
  chat = config.chat
  if chat.checkpoint:
    import dsvl_jax  # pylint: disable=g-import-not-at-top
    loaded = dsvl_jax.load(chat.checkpoint, dtype=chat.dtype)
    cfg, params = loaded.config, loaded.params
  else:
    from dsvl_jax.models.init import init_params  # pylint: disable=g-import-not-at-top
    cfg = VLMConfig.from_dict(config.model)
    params = init_params(cfg, jax.random.key(config.seed))
  source = chat.tokenizer or chat.checkpoint
  if not source:
    raise ValueError("config field 'chat.tokenizer': a tokenizer.json / tokenizer.model is "
                     "needed (or a chat.checkpoint directory holding one)")
  if source.endswith(".json"):
    tokenizer = Tokenizer.from_file(source, cfg)
  elif source.endswith(".model"):
    tokenizer = Tokenizer.from_sentencepiece(source, cfg)
  else:
    tokenizer = Tokenizer.from_pretrained_dir(source, cfg)
  return ChatSession(cfg, params, tokenizer, sampling_from(chat),
                     template_for(chat.get("system_prompt", "default")),
                     chat.get("image_position", "first"))


def run_terminal(session: ChatSession, stdin: TextIO = sys.stdin,
                 stdout: TextIO = sys.stdout) -> None:
  """The interactive loop (reads stdin until EOF or /quit)."""
  def say(text):
    stdout.write(text)
    stdout.flush()

  say("dsvl_jax chat. /image PATH attaches an image, /reset, /quit.\n")
  pending: list[str] = []
  while True:
    say("User: ")
    line = stdin.readline()
    if not line:
      break
    line = line.strip()
    if not line:
      continue
    if line in ("/quit", "/exit", "exit"):
      break
    if line in ("/reset", "/new", "new"):
      session.reset()
      pending = []
      say("(new conversation)\n")
      continue
    if line.startswith("/image "):
      pending.append(line[len("/image "):].strip())
      say(f"(image {len(pending)} attached)\n")
      continue
    say("Assistant: ")
    try:
      session.reply(line, pending, on_text=say)
    except (OSError, ValueError) as e:  # unreadable image, context overflow, ...
      say(f"\n(error: {e})")
    pending = []
    say("\n")


def run(config: ml_collections.ConfigDict, workdir: str | None = None) -> None:
  del workdir
  run_terminal(build_session(config))

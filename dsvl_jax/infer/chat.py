"""Multi-turn chat: a session object and the terminal loop (`--config.mode=chat`).

Like the reference CLI, every turn re-encodes the whole conversation and its images
(no KV reuse across turns) and renders it with the "deepseek" template. Streaming
prints text as tokens arrive (infer/streaming.py: what is printed is the answer).

Terminal commands: `/image PATH` attaches an image to the next message (its
placeholder is put first in the message, as the reference CLI does, or last with
`chat.image_position="last"`), `/reset` starts a
new conversation, `/quit` leaves. Empty lines are ignored.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterable, TextIO

import ml_collections
import numpy as np

from dsvl_jax.config.schema import choices
from dsvl_jax.infer.chat_config import STOP_STRINGS, ChatConfig, ImagePosition
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.load import load_model, load_tokenizer
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.infer.streaming import TextStream
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.processor.conversation import (
    DEEPSEEK,
    IMAGE_TOKEN,
    Message,
    Template,
    encode_conversation,
    template_for,
)
from dsvl_jax.processor.image_processor import ImageProcessorConfig, load_image, process_batch
from dsvl_jax.processor.tokenizer import Tokenizer


class ChatSession:
  """Holds the conversation; `reply` streams the next answer."""

  def __init__(
      self,
      cfg: VLMConfig,
      params,
      tokenizer: Tokenizer,
      sampling: SamplingConfig,
      template: Template = DEEPSEEK,
      image_position: ImagePosition = "first",
  ):
    if image_position not in choices(ImagePosition):  # a session built without a config
      raise ValueError(
          f"config field 'chat.image_position': {image_position!r} not in "
          f"{choices(ImagePosition)}"
      )
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

  def reply(
      self, text: str, image_paths: Iterable[str] = (), on_text: Callable[[str], None] | None = None
  ) -> str:
    """Adds a user turn (its images first, as the reference CLI places them, or after the
    text with image_position "last") and answers."""
    paths = list(image_paths)
    new_images = process_batch([load_image(p) for p in paths], self.processor)
    marks = IMAGE_TOKEN * len(paths)
    content = text + marks if self.image_position == "last" else marks + text
    messages = self.messages + [Message("user", content)]
    encoded = encode_conversation(
        messages, self.tokenizer, self.cfg, add_generation_prompt=True, template=self.template
    )
    images = self.images + list(new_images)
    batch = np.asarray(encoded.ids, np.int32)[None]
    stream = TextStream(self.tokenizer.decode, STOP_STRINGS, on_text)
    self.generator.generate(
        batch,
        images=np.stack(images) if images else None,
        sampling=self.sampling,
        decode=self.tokenizer.decode,
        on_token=lambda _, tok: stream.push(tok),
    )
    stream.finish()
    answer = stream.text
    self.messages = messages + [Message("assistant", answer)]
    self.images = images
    return answer


def sampling_from(chat: ChatConfig) -> SamplingConfig:
  return SamplingConfig(
      temperature=chat.temperature,
      top_p=chat.top_p,
      top_k=chat.top_k,
      repetition_penalty=chat.repetition_penalty,
      max_new_tokens=chat.max_new_tokens,
      stop_strings=STOP_STRINGS,
      seed=chat.seed,
  )


def build_session(config: ml_collections.ConfigDict) -> ChatSession:
  """Model from config.chat.checkpoint (or random init of config.model), tokenizer."""
  chat = ChatConfig.from_dict(config.chat)  # checked before any weights load
  cfg, params = load_model(config, chat, "chat")
  tokenizer = load_tokenizer(chat, cfg, "chat")
  return ChatSession(
      cfg,
      params,
      tokenizer,
      sampling_from(chat),
      template_for(chat.system_prompt),
      chat.image_position,
  )


def run_terminal(
    session: ChatSession, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout
) -> None:
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
      pending.append(line[len("/image ") :].strip())
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

"""Prompts and option continuations for evaluation items.

Prompt: the "deepseek" template, one user turn holding the question (images first when
the question has no placeholders, as the chat CLI does), and the generation prompt, so
it ends in "Assistant:" (reference 4.3). An option is scored as the assistant's answer
that would follow: the tokens of " " + option (the leading space the template's SFT
segments put before an answer), then EOS when `score_eos` — the same tokens, with the
same ids, that stage-3 training supervises for that answer. With EOS, "Red." and
"Red. And more" are told apart by whether the model ends the answer there; without
it, a summed score always prefers an option that is a prefix of another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dsvl_jax.eval.items import EvalItem
from dsvl_jax.processor.conversation import EncodedSample, Message, Template, encode_conversation
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN, Tokenizer

if TYPE_CHECKING:  # annotation only
  from dsvl_jax.models import VLMConfig


def user_content(item: EvalItem) -> str:
  """The user turn's text: the question, with image placeholders first if it has none."""
  if IMAGE_TOKEN in item.question:
    return item.question
  return IMAGE_TOKEN * len(item.images) + item.question


def build_prompt(
    item: EvalItem, tokenizer: Tokenizer, cfg: VLMConfig, template: Template | None
) -> EncodedSample:
  """BOS + one user turn + "Assistant:"; ids [P] with each image expanded. template None:
  BOS + the question as plain text (how MMLU's and HellaSwag's official scripts score a
  language model: no chat turn around it)."""
  if template is None:
    if item.images:
      raise ValueError("a plain-text prompt takes no images")
    ids = np.asarray(tokenizer.encode(item.question, add_bos=True), np.int32)
    return EncodedSample(ids, np.zeros(len(ids), bool), 0)
  return encode_conversation(
      [Message("user", user_content(item))],
      tokenizer,
      cfg,
      add_generation_prompt=True,
      template=template,
  )


def continuation_ids(option: str, tokenizer: Tokenizer, score_eos: bool) -> np.ndarray:
  """ids [C] of the answer " " + option (+ EOS): what follows the prompt. The option is
  taken as given (item jsonl options are stripped when read; lm-eval scores a HellaSwag
  ending's own leading space)."""
  ids = tokenizer.encode(" " + option, add_bos=False)
  if score_eos:
    ids = ids + [tokenizer.eos_id]
  return np.asarray(ids, np.int32)

"""The "deepseek" conversation template, image-token expansion and SFT loss masks.

Rendering follows ORIG `Conversation.get_prompt` with `SeparatorStyle.DeepSeek` as the
VLChatProcessor uses it (reference 4.3):

  system + "\\n\\n"                      (nothing at all when the system prompt is empty)
  per message i: role + ": " + content + ("\\n\\n" if i is even else EOS-string)
                 or role + ":"          when the (stripped) content is empty

Separators alternate by message index, not by role. Each message's content is stripped
and so is the whole prompt (`apply_sft_template_for_multi_turn_prompts`). A generation
prompt is an empty assistant message, so it ends in "Assistant:" with no space: the
model emits the answer's leading space itself. Images go wherever the user writes
`<image_placeholder>`; the k-th placeholder is the k-th image.

Encoding (reference 4.2, 4.4): BOS + the tokenised prompt, then each placeholder id is
replaced by `cfg.num_image_tokens` copies. The SFT mask is True on each assistant
answer, from its leading space token through its terminating EOS, and False on BOS,
system prompt, user turns, image tokens and the "Assistant:" prefix.

Tokens are produced segment by segment (prefix / answer / separator) so the mask is
exact. For DeepSeek's byte-level BPE this equals tokenising the whole rendered string
(its pre-tokenizer splits before the answer's leading space and around special tokens;
tests/test_conversation.py checks it), so training sees the ids inference sees.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import numpy as np

from dsvl_jax.processor.tokenizer import EOS_TOKEN, IMAGE_TOKEN, Tokenizer

if TYPE_CHECKING:  # annotation only: keeps this module free of JAX imports
  from dsvl_jax.models import VLMConfig

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the "
    "visual content that the user provides, and assist the user with a variety of tasks "
    "using natural language."
)

ROLES = ("user", "assistant")


@dataclasses.dataclass(frozen=True)
class Template:
  """A DeepSeek-style template; `DEEPSEEK` is the released one."""

  system: str = SYSTEM_PROMPT
  roles: tuple[str, str] = ("User", "Assistant")  # rendered names of ROLES
  sep: str = "\n\n"  # after even-indexed messages (and the system prompt)
  sep2: str = EOS_TOKEN  # after odd-indexed messages


DEEPSEEK = Template()


def template_for(system_prompt: str) -> Template:
  """The released template with a configured system prompt: "default" (the released
  one), "" (none), or the given text. (The released prompt is ~40 words, which can
  dominate short chats; configs choose per job: data, eval and chat.)"""
  if system_prompt == "default":
    return DEEPSEEK
  return dataclasses.replace(DEEPSEEK, system=system_prompt)


@dataclasses.dataclass(frozen=True)
class Message:
  """One turn. `role` is 'user' or 'assistant' (any case); content may hold placeholders."""

  role: str
  content: str

  def __post_init__(self):
    role = self.role.lower()
    if role not in ROLES:
      raise ValueError(f"message role must be one of {ROLES}, got {self.role!r}")
    object.__setattr__(self, "role", role)


@dataclasses.dataclass(frozen=True)
class EncodedSample:
  """ids [T] int32 (images expanded); loss_mask [T] bool; num_images placeholders."""

  ids: np.ndarray
  loss_mask: np.ndarray
  num_images: int

  def __len__(self) -> int:
    return len(self.ids)


def _segments(
    messages: Sequence[Message], add_generation_prompt: bool, template: Template
) -> list[tuple[str, bool]]:
  """The rendered prompt as (text, supervised) pieces whose concatenation is render()."""
  turns = [(m.role, m.content.strip()) for m in messages]
  if add_generation_prompt:
    turns.append(("assistant", ""))
  segs: list[tuple[str, bool]] = []
  if template.system:
    segs.append((template.system + template.sep, False))
  for i, (role, content) in enumerate(turns):
    name = template.roles[ROLES.index(role)]
    sep = template.sep if i % 2 == 0 else template.sep2
    if not content:
      segs.append((name + ":", False))
    elif role == "assistant":
      # Split after the colon: the answer starts with its leading space token.
      segs += [(name + ":", False), (" " + content, True), (sep, True)]
    else:
      segs.append((name + ": " + content + sep, False))
  # ORIG strips the whole prompt; only the ends can change.
  while segs and not segs[0][0].strip():
    segs.pop(0)
  while segs and not segs[-1][0].strip():
    segs.pop()
  if segs:
    segs[0] = (segs[0][0].lstrip(), segs[0][1])
    segs[-1] = (segs[-1][0].rstrip(), segs[-1][1])
  return segs


def render(
    messages: Sequence[Message], add_generation_prompt: bool = False, template: Template = DEEPSEEK
) -> str:
  """The prompt string (no BOS: the tokenizer adds it)."""
  return "".join(text for text, _ in _segments(messages, add_generation_prompt, template))


def expand_image_tokens(
    ids: Sequence[int], mask: Sequence[bool], image_id: int, num_image_tokens: int
) -> tuple[np.ndarray, np.ndarray, int]:
  """Replaces each image id by num_image_tokens copies (never supervised).

  ids, mask [T] -> ids [T'] int32, mask [T'] bool, number of images.
  """
  ids = np.asarray(ids, np.int32)
  mask = np.asarray(mask, bool)
  is_image = ids == image_id
  repeats = np.where(is_image, num_image_tokens, 1)
  return (np.repeat(ids, repeats), np.repeat(mask & ~is_image, repeats), int(is_image.sum()))


def _check_tokenizer(tokenizer: Tokenizer, cfg: VLMConfig) -> None:
  for ours, theirs in (
      ("bos_id", "bos_token_id"),
      ("eos_id", "eos_token_id"),
      ("image_id", "image_token_id"),
  ):
    if getattr(tokenizer, ours) != getattr(cfg, theirs):
      raise ValueError(
          f"tokenizer.{ours}={getattr(tokenizer, ours)} but config "
          f"{theirs}={getattr(cfg, theirs)}; build the tokenizer from this config"
      )


def encode_conversation(
    messages: Sequence[Message],
    tokenizer: Tokenizer,
    cfg: VLMConfig,
    *,
    add_generation_prompt: bool = False,
    template: Template = DEEPSEEK,
) -> EncodedSample:
  """BOS + rendered chat, images expanded, with the SFT loss mask (module docstring).

  Messages must alternate user, assistant, user, ... so that every answer ends with
  sep2 (EOS). For training, end with an assistant answer; for inference, end with a
  user turn and set add_generation_prompt (the mask then covers earlier answers only).
  """
  _check_tokenizer(tokenizer, cfg)
  for i, m in enumerate(messages):
    if m.role != ROLES[i % 2]:
      raise ValueError(
          f"message {i} has role {m.role!r}; roles must alternate "
          f"user, assistant, ... starting with user"
      )
  if add_generation_prompt and messages and messages[-1].role == "assistant":
    raise ValueError("add_generation_prompt needs the last message to be a user turn")
  if tokenizer.encode(template.sep2, add_bos=False) != [cfg.eos_token_id]:
    raise ValueError(
        f"the template separator {template.sep2!r} does not tokenise to "
        f"the single EOS id {cfg.eos_token_id}"
    )
  ids, mask = [tokenizer.bos_id], [False]
  for text, supervised in _segments(messages, add_generation_prompt, template):
    piece = tokenizer.encode(text, add_bos=False)
    ids += piece
    mask += [supervised] * len(piece)
  ids, mask, n = expand_image_tokens(ids, mask, cfg.image_token_id, cfg.num_image_tokens)
  return EncodedSample(ids, mask, n)


def encode_prompt(prompt: str, tokenizer: Tokenizer, cfg: VLMConfig) -> EncodedSample:
  """Raw-prompt mode (base models): the string as given, BOS, images expanded.

  Nothing is supervised: the repo defines no base-model training format.
  """
  _check_tokenizer(tokenizer, cfg)
  ids = tokenizer.encode(prompt)
  ids, mask, n = expand_image_tokens(
      ids, [False] * len(ids), cfg.image_token_id, cfg.num_image_tokens
  )
  return EncodedSample(ids, mask, n)


__all__ = [
    "DEEPSEEK",
    "template_for",
    "EncodedSample",
    "IMAGE_TOKEN",
    "Message",
    "SYSTEM_PROMPT",
    "Template",
    "encode_conversation",
    "encode_prompt",
    "expand_image_tokens",
    "render",
]

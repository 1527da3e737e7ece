"""`config.chat`: the typed `ChatConfig` and its defaults as config data.

Kept free of heavy imports: config files import it. Defaults are the reference
cli_chat.py's; every field is overridable (--config.chat.temperature=0).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import ml_collections

from dsvl_jax.config.schema import Section, check

STOP_STRINGS = ("User:",)  # reference conversation.py stop_str (EOS stops by id)

# Where a message's image placeholders go: before its text (the reference CLI) or after
# it (the demo's chats). The web page (serve.web_image_position) takes the same.
ImagePosition = Literal["first", "last"]
# Parameter dtype of a loaded checkpoint: chat, eval and serve (which import this type).
LoadDtype = Literal["float32", "bfloat16"]
# Weight-only quantisation of a loaded model's kernels (models/quant.py): chat, eval and
# serve quantise what model.compute.quant.targets names (default: the LLM's projections).
LoadQuant = Literal["none", "int8", "int4", "nf4"]
# The generators' KV cache (model.compute.kv_cache_dtype): the compute dtype, or int8.
KVCacheDtype = Literal["auto", "int8"]


@dataclasses.dataclass(frozen=True)
class ChatConfig(Section):
  SECTION = "chat"  # config.chat; not a field

  checkpoint: str = ""  # our checkpoint, a transformers or original directory ("" = random init)
  adapter: str = ""  # a PEFT LoRA folder applied over the checkpoint, unmerged ("" = none)
  tokenizer: str = ""  # tokenizer.json / tokenizer.model ("" = the checkpoint's own)
  dtype: LoadDtype = "float32"  # parameter dtype when loading a checkpoint
  quantize: LoadQuant = "none"  # weight-only int8 | int4 | nf4 of the loaded kernels
  quant_block: int = 64  # values per scale along a quantised kernel's last axis
  kv_cache_dtype: KVCacheDtype = "auto"  # the decoding KV cache: the compute dtype, or int8
  temperature: float = 0.2  # 0 = greedy
  top_p: float = 0.95  # nucleus filter
  top_k: int = 0  # 0 = off
  repetition_penalty: float = 1.1  # HF rule over generated tokens
  max_new_tokens: int = 512  # per answer
  seed: int = 0  # sampling seed
  system_prompt: str = "default"  # "default" = the released prompt, "" = none, else the text
  image_position: ImagePosition = "first"  # a message's images before or after its text

  def validate(self) -> "ChatConfig":
    check(self.temperature >= 0, "chat.temperature", f"must be >= 0, got {self.temperature}")
    check(
        self.quant_block >= 2 and (self.quantize in ("none", "int8") or self.quant_block % 2 == 0),
        "chat.quant_block",
        f"must be >= 2 (and even for int4 / nf4: two codes a byte), got {self.quant_block}",
    )
    check(0 < self.top_p <= 1, "chat.top_p", f"must be in (0, 1], got {self.top_p}")
    check(self.top_k >= 0, "chat.top_k", f"must be >= 0 (0 = off), got {self.top_k}")
    check(
        self.repetition_penalty > 0,
        "chat.repetition_penalty",
        f"must be > 0, got {self.repetition_penalty}",
    )
    check(
        self.max_new_tokens >= 1, "chat.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}"
    )
    return self


def default_config() -> ml_collections.ConfigDict:
  """The defaults as config data (field meanings on ChatConfig)."""
  return ml_collections.ConfigDict(dataclasses.asdict(ChatConfig()))

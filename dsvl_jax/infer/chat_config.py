"""Defaults of `config.chat` (kept free of heavy imports: config files import it)."""

import ml_collections

STOP_STRINGS = ("User:",)  # reference conversation.py stop_str (EOS stops by id)


def default_config() -> ml_collections.ConfigDict:
  """Reference cli_chat.py defaults; every field overridable (--config.chat.temperature=0)."""
  return ml_collections.ConfigDict(dict(
      checkpoint="",  # our checkpoint, a transformers or original directory ("" = random init)
      tokenizer="",  # tokenizer.json / tokenizer.model ("" = the checkpoint's own)
      dtype="float32",  # parameter dtype when loading a checkpoint
      temperature=0.2,  # 0 = greedy
      top_p=0.95,  # nucleus filter
      top_k=0,  # 0 = off
      repetition_penalty=1.1,  # HF rule over generated tokens
      max_new_tokens=512,  # per answer
      seed=0,  # sampling seed
      system_prompt="default",  # "default" = the released prompt, "" = none, else the text
      image_position="first",  # where a message's images go: "first" (reference CLI) | "last"
  ))

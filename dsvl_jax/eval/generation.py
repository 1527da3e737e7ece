"""Greedy answers to evaluation prompts, batched, for exact match.

Prompts are the scoring prompts (prompts.build_prompt). Decoding is the chat's: greedy
(temperature 0, no repetition penalty), stop at EOS or the template's "User:" stop
string, text cut at the stop string and stripped. A short last batch is filled with
copies of its last prompt (their answers are dropped), so every batch has the same
number of rows and compiled shapes repeat.

Rows of a batch that share a prompt prefix (`split_prompt`: the prompt up to its last
image, with the image) go through `Generator.generate_shared`: the prefix, vision
tower included, is computed once for its rows. POPE asks six questions of each image
and MMBench's CircularEval the same question four times; the harness sorts such items
next to each other (`sort_key`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.infer.streaming import cut_at_stop
from dsvl_jax.processor.batching import Sample, collate
from dsvl_jax.processor.tokenizer import Tokenizer

if TYPE_CHECKING:  # annotation only
  from dsvl_jax.models import VLMConfig


class AnswerGenerator:
  """Holds one `Generator` (compiled once); `set_params` before answering."""

  def __init__(
      self,
      cfg: VLMConfig,
      tokenizer: Tokenizer,
      batch_size: int = 8,
      max_new_tokens: int = 32,
      prompt_bucket: int = 64,
      mesh=None,
      share_prefixes: bool = True,
  ):
    """mesh: split each batch's rows over its devices (Generator). share_prefixes:
    compute a prefix shared by rows of a batch once (off: every row prefills whole)."""
    self.cfg, self.tokenizer, self.batch_size = cfg, tokenizer, batch_size
    self.mesh, self.share_prefixes = mesh, share_prefixes
    self.prompt_bucket = prompt_bucket  # evaluation prompts vary widely: coarse buckets
    self.sampling = SamplingConfig(
        temperature=0.0, max_new_tokens=max_new_tokens, stop_strings=STOP_STRINGS
    )
    self.generator: Generator | None = None  # needs parameters: built by set_params

  def set_params(self, params) -> None:
    if self.generator is None:
      self.generator = Generator(self.cfg, params, prompt_bucket=self.prompt_bucket, mesh=self.mesh)
    else:
      self.generator.set_params(params)

  def identity(self, max_new_tokens: int | None = None) -> dict[str, Any]:
    """What its answers depend on: the parameters (run_base.fingerprint), the compute
    dtype and the generation settings (a resumed benchmark run must match them);
    max_new_tokens as `__call__` takes it."""
    if self.generator is None:
      raise RuntimeError("AnswerGenerator: call set_params(params) first")
    from dsvl_jax.checkpoint.run_base import fingerprint  # pylint: disable=g-import-not-at-top

    return {
        "params": fingerprint(self.generator.params),
        "dtype": self.cfg.compute.dtype,
        "max_new_tokens": max_new_tokens or self.sampling.max_new_tokens,
        "stop_strings": list(self.sampling.stop_strings),
    }

  def __call__(self, prompts: Sequence[Sample], max_new_tokens: int | None = None) -> list[str]:
    """Samples (ids [P], images [n, 3, S, S]) -> one answer string each, of at most
    max_new_tokens tokens (None: the constructor's)."""
    if self.generator is None:
      raise RuntimeError("AnswerGenerator: call set_params(params) first")
    sampling = self.sampling
    if max_new_tokens:
      sampling = dataclasses.replace(sampling, max_new_tokens=max_new_tokens)
    answers: list[str] = []
    for start in range(0, len(prompts), self.batch_size):
      chunk = list(prompts[start : start + self.batch_size])
      filled = chunk + [chunk[-1]] * (self.batch_size - len(chunk))
      result = self._shared(filled, sampling) if self.share_prefixes else None
      if result is None:
        batch = collate(filled, self.cfg)
        result = self.generator.generate(
            batch["input_ids"],
            batch["attention_mask"],
            batch["images"],
            sampling,
            decode=self.tokenizer.decode,
        )
      answers += [self.decode(tokens) for tokens in result.tokens[: len(chunk)]]
    return answers

  def _shared(self, rows: Sequence[Sample], sampling: SamplingConfig):
    """generate_shared's result when some rows share a prefix, else None."""
    splits = [split_prompt(r, self.cfg) for r in rows]
    keys: dict[tuple, int] = {}
    group = [keys.setdefault(sp[0], len(keys)) for sp in splits]
    if len(keys) == len(rows):
      return None
    first = {g: i for i, g in reversed(list(enumerate(group)))}
    prefixes = [(splits[first[g]][1], rows[first[g]].images) for g in range(len(keys))]
    return self.generator.generate_shared(
        prefixes, [sp[2] for sp in splits], group, sampling, decode=self.tokenizer.decode
    )

  def decode(self, tokens: Sequence[int]) -> str:
    return cut_at_stop(self.tokenizer.decode(tokens), STOP_STRINGS).strip()


def split_prompt(sample: Sample, cfg: VLMConfig) -> tuple[tuple, np.ndarray, np.ndarray]:
  """(key, prefix ids, suffix ids): the prefix runs to the last image token (the images
  belong to it), or is the first token of a text-only prompt. Equal keys = equal prefix
  tokens and pixels. A prompt ending in an image gets a key of its own (no suffix)."""
  ids = np.asarray(sample.ids)
  image_pos = np.flatnonzero(ids == cfg.image_token_id)
  cut = int(image_pos[-1]) + 1 if len(image_pos) else 1
  if cut >= len(ids):
    return ("whole", id(sample)), ids, ids[:0]
  digest = hashlib.blake2b(np.ascontiguousarray(sample.images).tobytes(), digest_size=16)
  return (ids[:cut].tobytes(), digest.hexdigest()), ids[:cut], ids[cut:]


def sort_key(samples: Sequence[Sample], cfg: VLMConfig):
  """A sort key over `samples` (index -> tuple): longest first (the first batch compiles
  the largest shapes, and similar lengths share batches), and rows sharing a prefix
  adjacent (a group sorts by its longest member)."""
  keys = [split_prompt(s, cfg)[0] for s in samples]
  longest: dict[tuple, int] = {}
  for k, s in zip(keys, samples):
    longest[k] = max(longest.get(k, 0), len(s.ids))
  order = {k: i for i, k in enumerate(dict.fromkeys(keys))}
  return lambda i: (-longest[keys[i]], order[keys[i]], -len(samples[i].ids))

"""Batched generation with a KV cache: one jitted prefill, one jitted decode step.

Prompts are left-padded (as the reference batches them) to a multiple of
`prompt_bucket` (small: padding is prefill compute) and the cache to prompt +
max_new_tokens rounded up to `cache_bucket`, so each (batch, prompt bucket, cache
bucket, image count) shape compiles once and is reused. RoPE positions come from
the attention mask (`positions_from_mask`), so a sample's tokens are the same alone or
batched.

Each step the chosen tokens come back to the host (streaming, EOS and stop strings);
finished samples keep producing pad tokens that are dropped from the result.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec

from dsvl_jax.infer.sampling import SamplingConfig, select
from dsvl_jax.models import quant
from dsvl_jax.models.attention import for_inference, placement_platform
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.layers import precision_of
from dsvl_jax.models.llm import (
    Cache,
    cache_dtype,
    check_context,
    init_cache,
    positions_from_mask,
    unstack_layers,
)
from dsvl_jax.models.vlm import DeepseekVL, check_image_tokens
from dsvl_jax.processor.batching import left_pad, round_up


@flax.struct.dataclass
class DecodeState:
  """What a decode step carries to the next: a pytree, so jit takes (and donates) it.
  B rows, S cache columns, V the vocabulary; every row writes column `index` next."""

  cache: tuple[Cache, ...]  # per layer {"k", "v"} [B, KVH, S, Dh] (models/llm.py init_cache)
  slots: jax.Array  # [B, S] int32: 1 where a real token's keys and values sit
  next_pos: jax.Array  # [B] int32: the RoPE position of the next token
  index: jax.Array  # [] int32: the column the next token writes
  seen: jax.Array  # [B, V] bool: generated tokens (repetition penalty)
  rng: jax.Array  # [] PRNG key: split once per chosen token


@dataclasses.dataclass
class Generation:
  tokens: list[list[int]]  # new tokens per sample, without the stopping EOS
  finish_reasons: list[str]  # 'eos', 'stop_string' or 'length'


def inference_config(cfg: VLMConfig) -> VLMConfig:
  """The model config the generators compile: the same results, laid out for speed.

  Decoding reads every weight once per token; per-layer weight arrays (a Python loop
  over layers instead of nn.scan) halve the bytes a step moves on XLA:CPU (BUILD.md,
  generation benchmark); compile time then grows with depth, once. On a CPU attention
  runs 'blocked' (models/attention.py): prefill attention is 2x faster there; and the
  LLM's kernels are held [*out, *in] (`inference_params`): a decode step of 8 rows
  reads them 1.6x faster.
  """
  cpu = placement_platform() == "cpu"  # the same test as for_inference
  return cfg.replace(
      compute=dataclasses.replace(
          cfg.compute,
          scan_layers=False,
          attention_impl=for_inference(cfg.compute.attention_impl),
          # quantised kernels (QLoRA, compute.quant) stay as stored: their blocks run
          # along [*in, *out]
          llm_kernels_out_major=cpu
          and cfg.compute.lora.base_quant == "none"
          and cfg.compute.quant.kind == "none",
      )
  )


def inference_params(params: dict, cfg: VLMConfig) -> dict:
  """Parameters as the generators hold them for `cfg = inference_config(...)`:
  {'model': the module's, with per-layer LLM weights, out-major LLM kernels where
  cfg.compute.llm_kernels_out_major, and no untied head; 'head': the LM head [V, D]}.

  The head is vocabulary-major, as PyTorch stores it: a decode step of 8 rows reads the
  1.3B head in 40 ms instead of 86 on XLA:CPU (at 1 row both are a plain read). A tied
  head is the embedding table, already [V, D].
  """
  params = nn.unbox(params)  # init's logically partitioned boxes, if any
  llm = unstack_layers(params["llm"])
  if cfg.compute.llm_kernels_out_major:
    for i in range(cfg.llm.num_layers):
      layer = dict(llm[f"layers_{i}"])
      for name, n_in in LLM_KERNEL_INPUTS.items():
        layer[name] = {**layer[name], "kernel": out_major(layer[name]["kernel"], n_in)}
      llm[f"layers_{i}"] = layer
  out = {}
  if cfg.llm.tie_embeddings:
    head = llm["embed_tokens"]["embedding"]
  else:
    lm_head = dict(llm.pop("lm_head"))
    if "kernel_q" in lm_head:  # a quantised head (QLoRA's adapted, or quant's): dequantised once
      kind, _ = cfg.compute.kernel_quant("llm/lm_head")
      kernel = quant.dequantize(lm_head.pop("kernel_q"), kind)
      lm_head["kernel"] = kernel.astype(jnp.dtype(cfg.compute.param_dtype))
    head = jnp.transpose(lm_head.pop("kernel"))
    if lm_head:  # an adapter on the head, applied by forward_last
      out["head_lora"] = lm_head
  return {"model": {**params, "llm": llm}, "head": head, **out}


# LLMBlock's kernels and their input dims (o_proj contracts heads and head_dim).
LLM_KERNEL_INPUTS = {
    "q_proj": 1,
    "k_proj": 1,
    "v_proj": 1,
    "o_proj": 2,
    "gate_proj": 1,
    "up_proj": 1,
    "down_proj": 1,
}


def out_major(kernel: jax.Array, n_in: int) -> jax.Array:
  """[*in (n_in dims), *out] -> [*out, *in], as layers.Dense(out_major=True) holds it."""
  return jnp.transpose(kernel, tuple(range(n_in, kernel.ndim)) + tuple(range(n_in)))


def forward_last(module: DeepseekVL, params: dict, *args, **kwargs):
  """`module` on `inference_params`: (float32 logits of the last position [B, V], the
  updated cache). The arguments are DeepseekVL.hidden_states' (`adapter` included)."""
  hidden, cache = module.apply(
      {"params": params["model"]}, *args, method=DeepseekVL.hidden_states, **kwargs
  )
  compute = module.cfg.compute
  dtype, prec = jnp.dtype(compute.dtype), precision_of(compute.precision)
  h = hidden[:, -1].astype(dtype)
  logits = jnp.einsum("vd,bd->vb", params["head"].astype(dtype), h, precision=prec).T
  if "head_lora" in params:  # as layers.Dense adds it, per row when stacked
    spec, a, b = compute.lora, params["head_lora"]["lora_a"], params["head_lora"]["lora_b"]
    if spec.stacked:  # all adapters' A, each row's kept (layers.Dense says why)
      delta = jnp.einsum("bd,ndr->bnr", h, a.astype(dtype), precision=prec)
      delta = delta * jax.nn.one_hot(kwargs["adapter"], spec.stacked, dtype=dtype)[..., None]
      delta = jnp.einsum("bnr,nrv->bv", delta, b.astype(dtype), precision=prec)
    else:
      delta = jnp.einsum("bd,dr->br", h, a.astype(dtype), precision=prec)
      delta = jnp.einsum("br,rv->bv", delta, b.astype(dtype), precision=prec)
    logits = logits + delta * jnp.asarray(spec.alpha / spec.rank, dtype)
  return logits.astype(jnp.float32), cache


class Generator:
  """Holds the compiled prefill / decode functions for one model and parameter tree."""

  def __init__(
      self,
      cfg: VLMConfig,
      params,
      prompt_bucket: int = 16,
      cache_bucket: int = 128,
      mesh: jax.sharding.Mesh | None = None,
  ):
    """mesh: data parallelism over its devices: the rows of a batch (and the cache) are
    split over all of them, the parameters replicated (a batch whose size the device
    count does not divide runs replicated)."""
    self.mesh = mesh
    self.cfg = inference_config(cfg)
    self.set_params(params)
    self.module = DeepseekVL(self.cfg)
    self.prompt_bucket, self.cache_bucket = prompt_bucket, cache_bucket
    self._prefill = jax.jit(self._prefill_fn, static_argnames=("sampling",), donate_argnums=(4,))
    # The prefix cache has G rows, the state B: nothing to donate.
    self._prefill_shared = jax.jit(self._prefill_shared_fn, static_argnames=("sampling",))
    self._step = jax.jit(self._step_fn, static_argnames=("sampling",), donate_argnums=(1,))

  def set_params(self, params) -> None:
    """New weights of the same shapes (e.g. during training); the compiled functions stay."""
    self.params = inference_params(params, self.cfg)
    if self.mesh is not None:
      self.params = jax.device_put(self.params, NamedSharding(self.mesh, PartitionSpec()))

  def _rows(self, tree, b: int):
    """Places arrays whose leading axis is the batch's rows on the mesh, split by row."""
    if self.mesh is None or self.mesh.size == 1 or b % self.mesh.size:
      return tree
    split = NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names))
    return jax.device_put(tree, split)

  # -- jitted pieces ------------------------------------------------------------------

  def _fill(self, params, ids, mask, images, cache):
    """Prefills ids, mask [B, T] (left-padded, with their images) into cache columns
    [0, T) of an empty cache [B, S]. Returns (last logits [B, V], cache, slots [B, S]:
    1 where a real token sits, positions [B, T])."""
    b, t = ids.shape
    s = cache[0]["k"].shape[2]  # [B, KVH, S, Dh]
    positions = positions_from_mask(mask)
    slots = jnp.zeros((b, s), jnp.int32).at[:, :t].set(mask)
    logits, cache = forward_last(
        self.module,
        params,
        ids,
        images,
        attention_mask=slots,
        positions=positions,
        cache=cache,
        cache_index=0,
    )
    return logits, cache, slots, positions

  def _prefill_fn(self, params, ids, mask, images, cache, rng, *, sampling: SamplingConfig):
    """ids, mask [B, T]; cache sized S >= T. Returns (state, first tokens [B])."""
    logits, cache, slots, positions = self._fill(params, ids, mask, images, cache)
    return self._first_token(logits, cache, slots, positions, ids.shape[1], rng, sampling)

  def _first_token(
      self, logits, cache, slots, positions, written: int, rng, sampling: SamplingConfig
  ) -> tuple[DecodeState, jax.Array]:
    """A prefill's end: its first tokens [B] from the last logits [B, V], and the state
    the decode steps go on from (`written` columns filled, positions [B, T] the last
    prompt's)."""
    b = logits.shape[0]
    seen = jnp.zeros((b, self.cfg.llm.vocab_size), bool)
    rng, key = jax.random.split(rng)
    token = select(logits, seen, sampling, key)
    seen = seen.at[jnp.arange(b), token].set(True)
    return (
        DecodeState(
            cache=cache,
            slots=slots,
            next_pos=positions[:, -1] + 1,
            index=jnp.asarray(written, jnp.int32),
            seen=seen,
            rng=rng,
        ),
        token,
    )

  def _step_fn(self, params, state: DecodeState, token, *, sampling: SamplingConfig):
    b = token.shape[0]
    idx = state.index
    slots = jax.lax.dynamic_update_slice(state.slots, jnp.ones((b, 1), jnp.int32), (0, idx))
    logits, cache = forward_last(
        self.module,
        params,
        token[:, None],
        attention_mask=slots,
        positions=state.next_pos[:, None],
        cache=state.cache,
        cache_index=idx,
    )
    rng, key = jax.random.split(state.rng)
    new = select(logits, state.seen, sampling, key)
    seen = state.seen.at[jnp.arange(b), new].set(True)
    state = DecodeState(
        cache=cache, slots=slots, next_pos=state.next_pos + 1, index=idx + 1, seen=seen, rng=rng
    )
    return state, new

  def _prefill_shared_fn(
      self, params, pids, pmask, images, cache, group, sids, smask, rng, *, sampling: SamplingConfig
  ):
    """Prefixes pids, pmask [G, P] (left-padded, with their images) fill cache rows
    [G, S] once; row r takes prefix group[r]'s rows and prefills its suffix sids, smask
    [B, T] (left-padded) into slots [P, P + T), RoPE positions continuing the prefix's.
    The same attention inputs as `_prefill_fn` on the whole prompt: the padding between
    prefix and suffix is masked. Returns (state, first tokens [B])."""
    p, t = pids.shape[1], sids.shape[1]
    _, cache, pslots, _ = self._fill(params, pids, pmask, images, cache)
    cache = jax.tree.map(lambda x: jnp.take(x, group, axis=0), cache)
    slots = jnp.take(pslots, group, axis=0).at[:, p : p + t].set(smask)
    start = jnp.take(pmask.sum(-1), group)
    positions = positions_from_mask(smask, start[:, None])
    logits, cache = forward_last(
        self.module,
        params,
        sids,
        attention_mask=slots,
        positions=positions,
        cache=cache,
        cache_index=p,
    )
    return self._first_token(logits, cache, slots, positions, p + t, rng, sampling)

  # -- host loop ----------------------------------------------------------------------

  def generate(
      self,
      input_ids,
      attention_mask=None,
      images=None,
      sampling: SamplingConfig = SamplingConfig(),
      decode: Callable[[list[int]], str] | None = None,
      on_token: Callable[[int, int], None] | None = None,
  ) -> Generation:
    """Generates up to sampling.max_new_tokens tokens for a left-padded batch.

    input_ids, attention_mask [B, T]; images [N, 3, S, S] in [0, 1] or None.
    decode: token ids -> text, needed for sampling.stop_strings.
    on_token(sample, token): called for every new token of an unfinished sample.
    """
    ids = np.asarray(input_ids, np.int32)
    b, t = ids.shape
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
    n_images = 0 if images is None else len(images)
    check_image_tokens(ids, n_images, self.cfg)
    if sampling.stop_strings and decode is None:
      raise ValueError("stop_strings need a decode function")
    tp = round_up(t, self.prompt_bucket)
    s = self._cache_size(tp, sampling, f"prompt ({t} tokens, bucketed to {tp})")
    pad = tp - t
    ids = np.concatenate([np.full((b, pad), self.cfg.pad_token_id, np.int32), ids], 1)
    mask = np.concatenate([np.zeros((b, pad), np.int32), mask], 1)
    images = None if n_images == 0 else jnp.asarray(images, jnp.float32)
    cache = init_cache(self.cfg.llm, b, s, cache_dtype(self.cfg.compute), stacked=False)
    ids, mask, cache = self._rows((ids, mask, cache), b)
    return self._decode(self._prefill, (ids, mask, images, cache), b, sampling, decode, on_token)

  def generate_shared(
      self,
      prefixes,
      suffixes,
      group,
      sampling: SamplingConfig = SamplingConfig(),
      decode: Callable[[list[int]], str] | None = None,
      on_token: Callable[[int, int], None] | None = None,
  ) -> Generation:
    """`generate` for rows whose prompts share prefixes (an image and the text before it:
    POPE's six questions per image, MMBench's option rotations): each prefix, its
    vision tower included, is prefilled once and its KV copied to its rows.

    prefixes: (ids [P_g], images [n_g, 3, S, S]) per prefix; suffixes: ids [T_r] per
    row, no image tokens; group[r]: row r's prefix. Row r's prompt is
    prefixes[group[r]] ids + suffixes[r], and it gets what `generate` gives that prompt
    (the same attention inputs; float32 rounding of the split prefill aside).
    """
    g, b = len(prefixes), len(suffixes)
    group = np.asarray(group, np.int32)
    if group.shape != (b,) or b == 0 or group.min() < 0 or group.max() >= g:
      raise ValueError(f"group must give each of the {b} rows a prefix index < {g}")
    if sampling.stop_strings and decode is None:
      raise ValueError("stop_strings need a decode function")
    suffixes = [np.asarray(x, np.int32) for x in suffixes]
    if any(len(x) == 0 or (x == self.cfg.image_token_id).any() for x in suffixes):
      raise ValueError("each suffix needs >= 1 token and no image tokens")
    # Prefix rows padded to a power of two (copies of the last; no row reads them), so
    # that batches with 1, 2, 3 or 4 distinct images share two compiled shapes.
    gp = 1 << (g - 1).bit_length()
    prefixes = list(prefixes) + [prefixes[-1]] * (gp - g)
    pp = round_up(max(len(ids) for ids, _ in prefixes), self.prompt_bucket)
    ts = round_up(max(len(x) for x in suffixes), SUFFIX_BUCKET)
    s = self._cache_size(pp + ts, sampling, f"prefix ({pp}) + suffix ({ts}) tokens, bucketed,")
    pids, pmask = left_pad(
        [np.asarray(ids, np.int32) for ids, _ in prefixes], pp, self.cfg.pad_token_id
    )
    sids, smask = left_pad(suffixes, ts, self.cfg.pad_token_id)
    pixels = [np.asarray(im, np.float32) for _, im in prefixes]
    check_image_tokens(pids, sum(len(x) for x in pixels), self.cfg)
    images = (
        None
        if not sum(len(x) for x in pixels)
        else jnp.asarray(np.concatenate(pixels), jnp.float32)
    )
    cache = init_cache(self.cfg.llm, gp, s, cache_dtype(self.cfg.compute), stacked=False)
    group, sids, smask = self._rows((group, sids, smask), b)
    inputs = (pids, pmask, images, cache, group, sids, smask)
    return self._decode(self._prefill_shared, inputs, b, sampling, decode, on_token)

  def _cache_size(self, prompt: int, sampling: SamplingConfig, what: str) -> int:
    """Cache columns S for a bucketed prompt of `prompt` tokens plus max_new_tokens,
    checked against the model's context (`what` describes the prompt in the error)."""
    s = round_up(prompt + sampling.max_new_tokens, self.cache_bucket)
    check_context(self.cfg.llm, s, f"{what} + max_new_tokens ({sampling.max_new_tokens})")
    return s

  def _decode(
      self, prefill, inputs: tuple, b: int, sampling: SamplingConfig, decode, on_token
  ) -> Generation:
    """Runs a jitted prefill (`inputs` go between the params and the key), then the host
    loop: EOS and stop strings per row, one step at a time."""
    static = _static(sampling)
    state, token = prefill(self.params, *inputs, jax.random.key(sampling.seed), sampling=static)
    out = [[] for _ in range(b)]
    reasons = ["length"] * b
    done = np.zeros(b, bool)
    eos = self.cfg.eos_token_id
    for step in range(sampling.max_new_tokens):
      host = np.asarray(token)
      for i in np.flatnonzero(~done):
        tok = int(host[i])
        if tok == eos and not sampling.ignore_eos:
          done[i], reasons[i] = True, "eos"
          continue
        out[i].append(tok)
        if on_token is not None:
          on_token(int(i), tok)
        if sampling.stop_strings:
          text = decode(out[i])
          if any(stop in text for stop in sampling.stop_strings):
            done[i], reasons[i] = True, "stop_string"
      if done.all() or step == sampling.max_new_tokens - 1:
        break
      state, token = self._step(self.params, state, token, sampling=static)
    return Generation(out, reasons)


SUFFIX_BUCKET = 16  # a shared prefix's suffixes are short (a question): a finer bucket


def _static(sampling: SamplingConfig) -> SamplingConfig:
  """Only the fields that change the computation are static: seed, length and stop
  strings vary per call without recompiling."""
  return dataclasses.replace(sampling, seed=0, max_new_tokens=1, stop_strings=(), ignore_eos=False)

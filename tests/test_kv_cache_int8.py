"""The int8 KV cache (model.compute.kv_cache_dtype = int8; `<section>.kv_cache_dtype`):
what it stores against a numpy reference, what a decode step computes from it, and the
server holding one answers as the generator holding one."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from serve_fixtures import running_server, serve_config
from test_quant_inference import assert_served_as_generated

from dsvl_jax.config.files import load_config
from dsvl_jax.infer.generate import Generator, forward_last, inference_config, inference_params
from dsvl_jax.infer.load import load_model
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.init import init_params
from dsvl_jax.models.llm import cache_dtype, init_cache, update_cache
from dsvl_jax.models.vlm import DeepseekVL


def _reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """x [..., Dh] float -> (int8 codes, absmax [..., 1]) of each vector, as the cache
  stores them: round(127 x / absmax) (round half to even, as numpy and XLA round)."""
  absmax = np.max(np.abs(x), axis=-1, keepdims=True)
  codes = np.round(127 * x / np.where(absmax == 0, 1, absmax)).astype(np.int8)
  return codes, absmax


def test_an_int8_cache_stores_each_token_and_heads_codes_and_absmax():
  rng = np.random.default_rng(0)
  b, t, h, d, s = 2, 3, 4, 8, 6
  k = (rng.standard_normal((b, t, h, d)) * rng.uniform(0.1, 5, (b, t, h, 1))).astype(np.float32)
  v = rng.standard_normal((b, t, h, d)).astype(np.float32)
  v[0, 1, 2] = 0  # an all-zero vector stores zeros, not NaN
  zeros = np.zeros((b, h, s, d), np.int8)
  cache = {"k": zeros, "v": zeros, "k_scale": np.zeros((b, h, s, 1), np.float32)}
  cache["v_scale"] = cache["k_scale"]
  index = jnp.asarray([1, 3], jnp.int32)  # a write column per row, as the slot engine's
  new, k_all, v_all = update_cache(cache, jnp.asarray(k), jnp.asarray(v), index, jnp.float32)
  for name, x in (("k", k), ("v", v)):
    codes, absmax = _reference(x)  # [B, T, H, ...]
    for row, col in enumerate((1, 3)):
      got = np.asarray(new[name])[row, :, col : col + t]  # [H, T, Dh]
      np.testing.assert_array_equal(got, codes[row].transpose(1, 0, 2))
      scale = np.asarray(new[f"{name}_scale"])[row, :, col : col + t]
      np.testing.assert_array_equal(scale, absmax[row].transpose(1, 0, 2))
      untouched = np.ones(s, bool)
      untouched[col : col + t] = False
      assert not np.asarray(new[name])[row, :, untouched].any()
    back = np.asarray(k_all if name == "k" else v_all)  # [B, S, H, Dh]
    for row, col in enumerate((1, 3)):
      read = back[row, col : col + t]
      # within half a step of each vector's absmax; zero stays zero
      assert np.all(np.abs(read - x[row]) <= absmax[row] / 254 * (1 + 1e-6))
  assert np.all(np.asarray(v_all)[0, 2, 2] == 0)


def _tiny(name: str) -> tuple[VLMConfig, dict]:
  cfg = VLMConfig.from_dict(load_config(name).model)
  cfg = cfg.replace(compute=dataclasses.replace(cfg.compute, dtype="float32"))
  return cfg, init_params(cfg, jax.random.key(0))


def test_a_decode_step_on_an_int8_cache_stays_near_the_float_cache():
  cfg, params = _tiny("configs/tiny.py")
  rng = np.random.default_rng(1)
  ids = rng.integers(10, 200, (2, 12)).astype(np.int32)
  logits = {}
  for kv in ("auto", "int8"):
    c = inference_config(cfg.replace(compute=dataclasses.replace(cfg.compute, kv_cache_dtype=kv)))
    p, module = inference_params(params, c), DeepseekVL(c)
    cache = init_cache(c.llm, 2, 16, cache_dtype(c.compute), stacked=False)
    assert cache[0]["k"].dtype == (jnp.int8 if kv == "int8" else jnp.float32)
    mask = np.zeros((2, 16), np.int32)
    mask[:, :12] = 1
    pos = np.tile(np.arange(12), (2, 1))
    first, cache = forward_last(
        module, p, ids, attention_mask=mask, positions=pos, cache=cache, cache_index=0
    )
    mask[:, 12] = 1
    step, _ = forward_last(
        module,
        p,
        ids[:, -1:],
        attention_mask=mask,
        positions=np.full((2, 1), 12),
        cache=cache,
        cache_index=12,
    )
    logits[kv] = np.asarray(first), np.asarray(step)
  for f, q in zip(logits["auto"], logits["int8"]):
    diff = np.max(np.abs(f - q))
    # Each cached key and value is within 1/254 of its vector's absmax (test above);
    # through softmax and the layers that moves the logits by a small fraction of their
    # range, and by something: the int8 cache is what was read.
    assert 0 < diff < 0.02 * (f.max() - f.min())


def test_the_server_with_an_int8_kv_cache_answers_as_the_generator_with_one():
  config = serve_config(kv_cache_dtype="int8", repetition_penalty=1.0, max_len=512)
  cfg, params = load_model(config, config.serve, "serve")
  assert cfg.compute.kv_cache_dtype == "int8"
  with running_server(config) as (url, service):
    state = service.engine._state  # pylint: disable=protected-access
    assert state.cache[0]["k"].dtype == jnp.int8 and "k_scale" in state.cache[0]
    gen = Generator(service.cfg, params, prompt_bucket=config.serve.prompt_bucket)
    assert_served_as_generated(url, service, gen, seeds=(3, 4))

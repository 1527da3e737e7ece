"""The embedded default job: a tiny random DeepSeek-VL, end to end, on a drawn image.

Runs in seconds on a laptop CPU: builds the configured model, draws a scene from the
built-in dataset, preprocesses it exactly as the release does, places it in a prompt, runs the jitted forward pass and a few greedy KV-cache decode
steps, and prints what it computed. (Once training lands, the default job trains.)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dsvl_jax.data import synthetic
from dsvl_jax.data.image_processor import ImageProcessorConfig, process
from dsvl_jax.models import DeepseekVL, VLMConfig, init_cache
from dsvl_jax.models.init import count_params, init_params


def run(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict:
  del workdir
  cfg = VLMConfig.from_dict(config.model)
  model = DeepseekVL(cfg)
  t0 = time.perf_counter()
  params = init_params(cfg, jax.random.key(config.seed))
  print(f"model: {'hybrid SigLIP+SAM' if cfg.hybrid else 'SigLIP'} tower, "
        f"{cfg.llm.num_layers} LLM layers, {count_params(params):,} parameters "
        f"(init {time.perf_counter() - t0:.1f}s)")

  record = synthetic.sample(config.seed, 0, cfg.image_size, kind="caption")
  image = process(record["images"][0], ImageProcessorConfig.for_model(cfg))[None]
  print(f"image: a drawn scene ({record['text'].split('>', 1)[1]})")
  rng = np.random.default_rng(config.seed)
  text = list(rng.integers(3, min(cfg.llm.vocab_size, 400), 6))
  prompt = np.array([[cfg.bos_token_id] + [cfg.image_token_id] * cfg.num_image_tokens + text],
                    np.int32)
  steps = 8
  max_len = prompt.shape[1] + steps

  @jax.jit
  def prefill(params, ids, images, cache):
    slots = jnp.zeros((1, max_len), jnp.int32).at[:, :ids.shape[1]].set(1)
    positions = jnp.arange(ids.shape[1])[None]
    return model.apply({"params": params}, ids, images, attention_mask=slots,
                       positions=positions, cache=cache, cache_index=0)

  @jax.jit
  def decode(params, token, cache, index):
    slots = (jnp.arange(max_len) <= index)[None].astype(jnp.int32)
    return model.apply({"params": params}, token, attention_mask=slots,
                       positions=jnp.full((1, 1), index), cache=cache, cache_index=index)

  t0 = time.perf_counter()
  out = prefill(params, prompt, image, init_cache(cfg.llm, 1, max_len, jnp.float32))
  logits = np.asarray(out["logits"])
  print(f"prefill: {prompt.shape[1]} tokens ({cfg.num_image_tokens} image) -> logits "
        f"{logits.shape}, {time.perf_counter() - t0:.2f}s incl. compile")
  print(f"image embedding: {cfg.num_image_tokens} tokens x {cfg.llm.hidden_size}")
  token, cache, generated = int(logits[0, -1].argmax()), out["cache"], []
  t0 = time.perf_counter()
  for i in range(steps):
    generated.append(token)
    out = decode(params, jnp.array([[token]]), cache, prompt.shape[1] + i)
    cache, token = out["cache"], int(np.asarray(out["logits"])[0, -1].argmax())
  print(f"greedy continuation (random weights, so arbitrary ids): {generated} "
        f"({steps} steps, {time.perf_counter() - t0:.2f}s incl. compile)")
  top5 = np.argsort(logits[0, -1])[::-1][:5].tolist()
  print(f"top-5 next tokens after the prompt: {top5}")
  return {"logits": logits, "generated": generated}

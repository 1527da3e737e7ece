"""Generation: greedy parity with transformers' generate, batching invariance, sampling."""

import functools

import hf_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import tiny_config

from convert import state_dict_to_params
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.sampling import SamplingConfig, process_logits, top_k_filter, top_p_filter
from dsvl_jax.infer.streaming import cut_at_stop

NEW = 16


@functools.lru_cache(maxsize=None)
def _setup(family):
  cfg = tiny_config(family)
  hf = ref.build(cfg, seed=5)
  params, _ = state_dict_to_params(ref.state_dict(hf), cfg)
  return cfg, hf, Generator(cfg, params, prompt_bucket=16, cache_bucket=16)


def _samples(cfg):
  k, img, rng = cfg.num_image_tokens, cfg.image_token_id, np.random.default_rng(7)
  text = lambda n: list(rng.integers(3, 400, n))  # noqa: E731
  rows = [
      [1] + text(6),  # no image
      [1] + text(2) + [img] * k + text(3),  # one image
      [1] + [img] * k + text(2) + [img] * k + text(1),
  ]  # two images
  n_images = [0, 1, 2]
  images = np.random.default_rng(8).random((3, 3, cfg.image_size, cfg.image_size), dtype=np.float32)
  return rows, n_images, images


def _left_pad(rows, pad):
  t = max(map(len, rows))
  ids = np.array([[pad] * (t - len(r)) + r for r in rows], np.int32)
  mask = np.array([[0] * (t - len(r)) + [1] * len(r) for r in rows], np.int32)
  return ids, mask


def _hf_generate(cfg, hf, ids, mask, images):
  kwargs = {} if images is None else ref.pixel_kwargs(cfg, images)
  with torch.no_grad():
    out = hf.generate(
        input_ids=torch.from_numpy(ids).long(),
        attention_mask=torch.from_numpy(mask).long(),
        max_new_tokens=NEW,
        do_sample=False,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
        **kwargs,
    )
  new = out[:, ids.shape[1] :].numpy()
  result = []
  for row in new:  # cut at the first EOS, which our result leaves out
    row = list(row)
    result.append(row[: row.index(cfg.eos_token_id)] if cfg.eos_token_id in row else row)
  return result


@pytest.mark.parametrize("family", ["siglip", "hybrid"])
def test_greedy_matches_transformers_single_and_batched(family):
  cfg, hf, gen = _setup(family)
  rows, counts, images = _samples(cfg)
  greedy = SamplingConfig(max_new_tokens=NEW)
  starts = np.cumsum([0] + counts)
  alone = []
  for i, row in enumerate(rows):
    ids, mask = _left_pad([row], cfg.pad_token_id)
    imgs = images[starts[i] : starts[i + 1]] if counts[i] else None
    ours = gen.generate(ids, mask, imgs, greedy).tokens[0]
    assert ours == _hf_generate(cfg, hf, ids, mask, imgs)[0]
    alone.append(ours)
  assert sum(map(len, alone)) > NEW  # the comparison covers real continuations
  ids, mask = _left_pad(rows, cfg.pad_token_id)
  batched = gen.generate(ids, mask, images, greedy).tokens
  assert batched == alone  # batching changes nothing
  assert batched == _hf_generate(cfg, hf, ids, mask, images)


@pytest.mark.parametrize("family", ["siglip", "hybrid"])
def test_long_prompts_run_blocked_attention_and_match_transformers(family):
  """Prompts of 64+ tokens: the generator's prefill attention is 'blocked' on this CPU
  (one head's logits at a time; SAM's global blocks with their bias too)."""
  cfg, hf, gen = _setup(family)
  assert gen.cfg.compute.attention_impl == "blocked"
  k, img, rng = cfg.num_image_tokens, cfg.image_token_id, np.random.default_rng(11)
  text = lambda n: [int(x) for x in rng.integers(3, 400, n)]  # noqa: E731
  rows = [[1] + text(70) + [img] * k + text(9), [1] + text(5) + [img] * k + text(60)]
  images = np.random.default_rng(12).random(
      (2, 3, cfg.image_size, cfg.image_size), dtype=np.float32
  )
  ids, mask = _left_pad(rows, cfg.pad_token_id)
  ours = gen.generate(ids, mask, images, SamplingConfig(max_new_tokens=NEW)).tokens
  assert ours == _hf_generate(cfg, hf, ids, mask, images)
  assert sum(map(len, ours)) > NEW


@pytest.mark.parametrize("family", ["siglip", "hybrid"])
def test_shared_prefixes_generate_what_each_whole_prompt_generates(family):
  """generate_shared (prefix and its images computed once, KV copied to its rows, the
  suffix prefilled after it) = transformers on each whole prompt, row by row."""
  cfg, hf, gen = _setup(family)
  k, img, rng = cfg.num_image_tokens, cfg.image_token_id, np.random.default_rng(9)
  text = lambda n: [int(x) for x in rng.integers(3, 400, n)]  # noqa: E731
  pixels = np.random.default_rng(10).random(
      (3, 3, cfg.image_size, cfg.image_size), dtype=np.float32
  )
  prefixes = [
      ([1] + text(2) + [img] * k, pixels[:1]),  # one image
      ([1] + [img] * k + text(3) + [img] * k, pixels[1:]),  # two images
      ([1], pixels[:0]),
  ]  # text only
  group = [0, 1, 0, 2, 0, 1]
  suffixes = [text(n) for n in (3, 9, 1, 5, 12, 2)]
  greedy = SamplingConfig(max_new_tokens=NEW)
  shared = gen.generate_shared(prefixes, suffixes, group, greedy).tokens
  for g, suffix, ours in zip(group, suffixes, shared):
    ids, mask = _left_pad([prefixes[g][0] + suffix], cfg.pad_token_id)
    images = prefixes[g][1] if len(prefixes[g][1]) else None
    assert ours == _hf_generate(cfg, hf, ids, mask, images)[0]
  assert len(set(map(tuple, shared))) > 3  # the rows differ: real continuations
  with pytest.raises(ValueError, match="no image tokens"):
    gen.generate_shared(prefixes[:1], [[img]], [0], greedy)
  with pytest.raises(ValueError, match="prefix index"):
    gen.generate_shared(prefixes[:1], [[5]], [1], greedy)


def test_chunked_attention_generates_what_the_reference_does_at_an_unaligned_cache():
  """attention_impl='chunked' with blocks of 5 keys: the caches (29 and 32 slots) and
  SigLIP's 16 tokens end in a partial block. Decoding passes no segment ids, so only the
  padding keys' validity hides them. The prompts' next-token logits agree with the
  reference's ('blocked' on this CPU) to float32 rounding, and greedy tokens are equal."""
  from dsvl_jax.infer.generate import forward_last
  from dsvl_jax.models.init import init_params
  from dsvl_jax.models.llm import init_cache

  params = init_params(tiny_config("siglip"), jax.random.key(3))
  gens = {
      impl: Generator(
          tiny_config("siglip", attention_impl=impl, attention_block=5),
          params,
          prompt_bucket=16,
          cache_bucket=16,
      )
      for impl in ("xla", "chunked")
  }
  assert gens["chunked"].cfg.compute.attention_impl == "chunked"
  cfg = gens["xla"].cfg
  k, img, rng = cfg.num_image_tokens, cfg.image_token_id, np.random.default_rng(13)
  text = lambda n: [int(x) for x in rng.integers(3, 400, n)]  # noqa: E731
  rows = [[1] + text(9), [1] + text(2) + [img] * k + text(3)]
  ids, mask = _left_pad(rows, cfg.pad_token_id)
  images = np.random.default_rng(14).random(
      (1, 3, cfg.image_size, cfg.image_size), dtype=np.float32
  )
  # A prefill through the generator's own module and parameters.
  b, t = ids.shape
  slots = np.zeros((b, 29), np.int32)
  slots[:, :t] = mask
  positions = np.where(mask > 0, np.cumsum(mask, -1) - 1, 1)

  def logits(gen):
    cache = init_cache(gen.cfg.llm, b, 29, jnp.float32, stacked=False)
    return jax.jit(
        lambda p, c: forward_last(
            gen.module,
            p,
            ids,
            jnp.asarray(images),
            attention_mask=slots,
            positions=positions,
            cache=c,
            cache_index=0,
        )[0]
    )(gen.params, cache)

  ref = logits(gens["xla"])
  np.testing.assert_allclose(
      logits(gens["chunked"]), ref, atol=1e-5 * float(jnp.max(jnp.abs(ref))), rtol=0
  )

  greedy = SamplingConfig(max_new_tokens=NEW)
  tokens = {impl: g.generate(ids, mask, images, greedy).tokens for impl, g in gens.items()}
  assert tokens["chunked"] == tokens["xla"]
  assert sum(map(len, tokens["xla"])) > NEW  # real continuations


def test_sampling_is_reproducible_from_a_seed():
  cfg, _, gen = _setup("siglip")
  ids, mask = _left_pad([[1, 5, 6, 7], [1, 8]], cfg.pad_token_id)
  s = SamplingConfig(
      temperature=1.0, top_p=0.95, top_k=50, repetition_penalty=1.1, max_new_tokens=12, seed=3
  )
  a = gen.generate(ids, mask, sampling=s).tokens
  assert a == gen.generate(ids, mask, sampling=s).tokens
  others = [
      gen.generate(
          ids,
          mask,
          sampling=SamplingConfig(
              temperature=1.0,
              top_p=0.95,
              top_k=50,
              repetition_penalty=1.1,
              max_new_tokens=12,
              seed=seed,
          ),
      ).tokens
      for seed in (4, 5)
  ]
  assert any(o != a for o in others)


def test_stop_strings_end_generation():
  cfg, _, gen = _setup("siglip")
  ids, mask = _left_pad([[1, 5, 6, 7]], cfg.pad_token_id)
  full = gen.generate(ids, mask, sampling=SamplingConfig(max_new_tokens=10)).tokens[0]
  decode = lambda toks: " ".join(map(str, toks))  # noqa: E731
  stop = str(full[3])
  out = gen.generate(
      ids, mask, sampling=SamplingConfig(max_new_tokens=10, stop_strings=(stop,)), decode=decode
  )
  first = next(i for i in range(len(full)) if stop in decode(full[: i + 1]))
  assert out.tokens[0] == full[: first + 1] and out.finish_reasons == ["stop_string"]
  assert cut_at_stop("a User: b", ["User:"]) == "a "


def test_context_overflow_is_refused():
  cfg, _, gen = _setup("siglip")
  with pytest.raises(ValueError, match="exceeds the model's context"):
    gen.generate(
        np.ones((1, 8), np.int32),
        sampling=SamplingConfig(max_new_tokens=cfg.llm.max_position_embeddings),
    )


# --- filters against a direct NumPy computation -------------------------------------------


def _np_top_p(logits, p):
  out = logits.copy()
  for row in out:
    order = np.argsort(row, kind="stable")
    probs = np.exp(row[order] - row.max())
    probs /= probs.sum()
    cum = np.cumsum(probs)
    drop = cum <= 1 - p
    drop[-1] = False
    row[order[drop]] = -np.inf
  return out


def _np_top_k(logits, k):
  kth = np.sort(logits, axis=-1)[:, -k][:, None]
  return np.where(logits < kth, -np.inf, logits)


def test_filters_match_numpy():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((4, 50)).astype(np.float32) * 3
  for p in (0.1, 0.5, 0.9, 0.99):
    np.testing.assert_array_equal(
        np.asarray(top_p_filter(jnp.asarray(logits), p)), _np_top_p(logits, p)
    )
  for k in (1, 5, 49):
    np.testing.assert_array_equal(
        np.asarray(top_k_filter(jnp.asarray(logits), k)), _np_top_k(logits, k)
    )
  seen = rng.random((4, 50)) < 0.3
  cfg = SamplingConfig(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.3)
  want = np.where(seen, np.where(logits > 0, logits / 1.3, logits * 1.3), logits) / 0.7
  want = _np_top_p(_np_top_k(want, 20), 0.8)
  got = np.asarray(process_logits(jnp.asarray(logits), jnp.asarray(seen), cfg))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


def test_sampling_distribution_follows_filtered_probabilities():
  """Empirical frequencies of select() match softmax of the filtered logits."""
  from dsvl_jax.infer.sampling import select

  logits = jnp.asarray([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
  cfg = SamplingConfig(temperature=0.8, top_k=4, top_p=0.9)
  keys = jax.random.split(jax.random.key(0), 20000)
  draws = np.asarray(jax.vmap(lambda k: select(logits, jnp.zeros((1, 6), bool), cfg, k))(keys))
  freq = np.bincount(draws.ravel(), minlength=6) / draws.size
  filtered = _np_top_p(_np_top_k(np.asarray(logits) / 0.8, 4), 0.9)[0]
  probs = np.exp(filtered - filtered.max())
  probs /= probs.sum()
  np.testing.assert_allclose(freq, probs, atol=0.015)

"""Continuous batching: every request gets what Generator.generate gives it alone, while
requests join and leave the running batch; cancellation, limits, the prefix cache."""

import functools
import time

import jax
import numpy as np
import pytest
from conftest import tiny_config

from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.engine import Delta, Done, Engine, Prompt, QueueFull, QueueSink, RequestTooLong
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.sampling import SamplingConfig, row_values, select, select_rows
from dsvl_jax.models.init import init_params
from dsvl_jax.processor.conversation import Message, encode_conversation, template_for
from dsvl_jax.processor.tokenizer import Tokenizer

BUCKET = 64


@functools.lru_cache(maxsize=None)
def _model(family="hybrid"):
  cfg = tiny_config(family)
  params = init_params(cfg, jax.random.key(3))
  tok = Tokenizer.builtin_bytes(cfg)
  return cfg, params, tok, Generator(cfg, params, prompt_bucket=BUCKET)


def _prompt(cfg, tok, text, n_images, seed):
  content = "<image_placeholder>" * n_images + text
  enc = encode_conversation(
      [Message("user", content)], tok, cfg, add_generation_prompt=True, template=template_for("")
  )
  images = np.random.default_rng(seed).random(
      (n_images, 3, cfg.image_size, cfg.image_size), dtype=np.float32
  )
  return Prompt.of(enc.ids, images, cfg.image_size)


def _alone(gen, tok, prompt, sampling):
  """What Generator.generate gives this prompt as a batch of one."""
  images = prompt.images if len(prompt.images) else None
  return gen.generate(prompt.ids[None], images=images, sampling=sampling, decode=tok.decode).tokens[
      0
  ]


SAMPLINGS = [
    dict(temperature=0.0),
    dict(temperature=0.0, repetition_penalty=1.3),
    dict(temperature=0.8, seed=11),
    dict(temperature=1.0, top_p=0.9, seed=5),
    dict(temperature=0.7, top_k=20, seed=2),
    dict(temperature=1.2, top_p=0.8, top_k=50, repetition_penalty=1.1, seed=9),
]


def _requests(cfg, tok, n=16):
  texts = [
      "hi",
      "what is in the picture?",
      "describe both images in detail, please",
      "a longer question about the shapes, the colours and the word",
  ]
  out = []
  for i in range(n):
    prompt = _prompt(cfg, tok, texts[i % 4] + str(i), n_images=i % 3, seed=i)
    s = SamplingConfig(
        **SAMPLINGS[i % len(SAMPLINGS)], max_new_tokens=4 + (i * 5) % 21, stop_strings=STOP_STRINGS
    )
    out.append((prompt, s))
  return out


def test_select_rows_equals_select_row_by_row():
  v = 300
  logits = jax.random.normal(jax.random.key(0), (len(SAMPLINGS), v)) * 3
  seen = jax.random.bernoulli(jax.random.key(1), 0.1, (len(SAMPLINGS), v))
  cfgs = [SamplingConfig(**s) for s in SAMPLINGS]
  keys = jax.random.split(jax.random.key(4), len(cfgs))
  rows = {f: np.stack([row_values(c)[f] for c in cfgs]) for f in row_values(cfgs[0])}
  pick = jax.jit(select_rows)
  got = np.asarray(pick(logits, seen, rows, keys))
  for b, c in enumerate(cfgs):
    want = int(select(logits[b : b + 1], seen[b : b + 1], c, keys[b])[0])
    assert got[b] == want, (b, c)
  # many draws: the top-k row (no penalty) only ever picks among its 20 best, and the
  # greedy rows always pick their argmax
  draws = np.stack(
      [pick(logits, seen, rows, jax.random.split(jax.random.key(k), 6)) for k in range(30)]
  )
  assert set(draws[:, 4]) <= set(np.argsort(np.asarray(logits[4]))[-20:])
  assert len(set(draws[:, 4])) > 1 and len(set(draws[:, 0])) == 1


def test_sixteen_concurrent_requests_each_get_what_they_get_alone():
  cfg, params, tok, gen = _model()
  reqs = _requests(cfg, tok)
  with Engine(cfg, params, tok, num_slots=4, max_len=256, prompt_bucket=BUCKET) as engine:
    sinks = [QueueSink() for _ in reqs]
    # the first half at once, the rest while those are decoding
    for (prompt, s), sink in zip(reqs[:8], sinks[:8]):
      engine.submit(prompt, s, sink)
    first = next(sinks[0].events(timeout=120))
    assert isinstance(first, (Delta, Done))
    for (prompt, s), sink in zip(reqs[8:], sinks[8:]):
      engine.submit(prompt, s, sink)
      time.sleep(0.01)
    results = [sink.result(timeout=300) for sink in sinks]
    assert engine.status()["busy"] == 0 and engine.status()["queued"] == 0
  for i, ((prompt, s), got) in enumerate(zip(reqs, results)):
    want = _alone(gen, tok, prompt, s)
    assert got.tokens == want, f"request {i} ({s})"
    assert got.finish_reason in ("stop", "length")
    assert got.prompt_tokens == len(prompt.ids)
  # the batch really was shared: more requests than slots, fewer steps than tokens
  assert max(r.timing["admitted_step"] for r in results) > 0


def test_a_new_request_starts_before_the_running_ones_finish():
  cfg, params, tok, _ = _model()
  long = SamplingConfig(max_new_tokens=60, ignore_eos=True)
  short = SamplingConfig(max_new_tokens=3, ignore_eos=True)
  with Engine(cfg, params, tok, num_slots=2, max_len=256, prompt_bucket=BUCKET) as engine:
    slow = QueueSink()
    engine.submit(_prompt(cfg, tok, "tell a long story", 1, 0), long, slow)
    events = slow.events(timeout=120)
    for _ in range(5):  # the long one is decoding
      next(events)
    late = engine.generate(_prompt(cfg, tok, "short", 0, 1), short)
    rest = [e for e in events]
  done = rest[-1]
  assert isinstance(done, Done) and len(done.completion.tokens) == 60
  # the late request was admitted and finished while the long one was still running
  assert late.timing["admitted_step"] > 0
  assert late.timing["done_step"] < done.completion.timing["done_step"]


def test_cancelling_frees_the_slot_and_others_are_served():
  cfg, params, tok, _ = _model()
  with Engine(cfg, params, tok, num_slots=1, max_len=512, prompt_bucket=BUCKET) as engine:
    sink = QueueSink()
    req = engine.submit(
        _prompt(cfg, tok, "go on forever", 0, 0),
        SamplingConfig(max_new_tokens=400, ignore_eos=True),
        sink,
    )
    waiting = QueueSink()  # queued behind it: one slot only
    engine.submit(_prompt(cfg, tok, "queued", 0, 1), SamplingConfig(max_new_tokens=4), waiting)
    events = sink.events(timeout=120)
    next(events)
    req.cancel()
    done = [e for e in events][-1]
    assert done.completion.finish_reason == "cancelled"
    assert len(done.completion.tokens) < 400
    result = waiting.result(timeout=120)  # the slot went to the queued request
    assert result.finish_reason in ("stop", "length")
    # a queued request cancelled before it starts never runs
    blocker, never = QueueSink(), QueueSink()
    engine.submit(
        _prompt(cfg, tok, "block", 0, 2),
        SamplingConfig(max_new_tokens=30, ignore_eos=True),
        blocker,
    )
    cancelled = engine.submit(
        _prompt(cfg, tok, "never", 0, 3), SamplingConfig(max_new_tokens=4), never
    )
    cancelled.cancel()
    assert never.result(timeout=120).finish_reason == "cancelled"
    blocker.result(timeout=120)
    assert engine.status()["busy"] == 0


def test_limits_raise_at_submit():
  cfg, params, tok, _ = _model()
  with Engine(
      cfg, params, tok, num_slots=1, max_len=128, prompt_bucket=BUCKET, max_queue=1
  ) as engine:
    prompt = _prompt(cfg, tok, "hello", 0, 0)  # 24 tokens, padded to one 64 bucket
    with pytest.raises(RequestTooLong, match="padded to 64.*more than the 128"):
      engine.submit(prompt, SamplingConfig(max_new_tokens=65), QueueSink())
    engine.check(prompt, SamplingConfig(max_new_tokens=64))  # exactly fills the slot
    blocker = QueueSink()
    engine.submit(prompt, SamplingConfig(max_new_tokens=30, ignore_eos=True), blocker)
    next(blocker.events(timeout=120))  # running: the queue is empty again
    engine.submit(prompt, SamplingConfig(max_new_tokens=4), QueueSink())
    with pytest.raises(QueueFull, match="serve.max_queue=1"):
      engine.submit(prompt, SamplingConfig(max_new_tokens=4), QueueSink())
    blocker.result(timeout=120)


def test_prefix_cache_reuses_the_previous_turn():
  cfg, params, tok, _ = _model()
  greedy = SamplingConfig(max_new_tokens=12, stop_strings=STOP_STRINGS)
  image = np.random.default_rng(0).random((1, 3, cfg.image_size, cfg.image_size), dtype=np.float32)

  def turn(messages):
    enc = encode_conversation(
        messages, tok, cfg, add_generation_prompt=True, template=template_for("")
    )
    return Prompt.of(enc.ids, image, cfg.image_size)

  first = [Message("user", "<image_placeholder>what is this?")]
  answers = {}
  for cached in (False, True):
    with Engine(
        cfg,
        params,
        tok,
        num_slots=2,
        max_len=512,
        prompt_bucket=BUCKET,
        prefix_cache=cached,
        min_prefix=8,
    ) as engine:
      a1 = engine.generate(turn(first), greedy)
      second = first + [Message("assistant", a1.text), Message("user", "and then?")]
      a2 = engine.generate(turn(second), greedy)
      answers[cached] = (a1, a2, engine.status())
  (n1, n2, _), (c1, c2, status) = answers[False], answers[True]
  assert n2.cached_tokens == 0 and c1.cached_tokens == 0
  # the whole first prompt (system-free template, image, question) came from the cache
  assert c2.cached_tokens >= len(turn(first).ids)
  assert status["prefix_hits"] == 1
  # same answers as prefilling everything (float rounding aside, the tokens agree here)
  assert (c1.tokens, c2.tokens) == (n1.tokens, n2.tokens)
  # and a different image is never mistaken for the cached one
  with Engine(
      cfg,
      params,
      tok,
      num_slots=1,
      max_len=512,
      prompt_bucket=BUCKET,
      prefix_cache=True,
      min_prefix=8,
  ) as engine:
    engine.generate(turn(first), greedy)
    other = Prompt.of(turn(first).ids, 1 - image, cfg.image_size)
    got = engine.generate(other, greedy)
  assert got.cached_tokens < int(np.flatnonzero(other.ids == cfg.image_token_id)[0]) + 1


def test_content_keys_of_full_size_images_are_distinct_and_negative():
  """576 tokens per image (SigLIP-L@384) with a hash: no int64 overflow, no key equal
  to a text id, different pixels give different keys."""
  k, n = 576, 2
  ids = np.concatenate([[1, 5], np.full(k, 7), [9], np.full(k, 7), [3]]).astype(np.int32)
  images = np.random.default_rng(0).random((n, 3, 4, 4), dtype=np.float32)
  keys = Prompt.of(ids, images).content_keys(7, k)
  image_keys = keys[ids == 7]
  assert (image_keys < 0).all() and len(set(image_keys.tolist())) == n * k
  assert (keys[ids != 7] == ids[ids != 7]).all()
  other = images.copy()
  other[1, 0, 0, 0] += 0.5
  changed = Prompt.of(ids, other).content_keys(7, k)
  assert (changed[: k + 2] == keys[: k + 2]).all() and not (
      changed[k + 3 : -1] == keys[k + 3 : -1]
  ).any()


def test_an_engine_bug_fails_the_request_and_the_engine_goes_on(monkeypatch):
  cfg, params, tok, gen = _model()
  greedy = SamplingConfig(max_new_tokens=5)
  prompt = _prompt(cfg, tok, "hello", 1, 0)
  with Engine(cfg, params, tok, num_slots=2, max_len=128, prompt_bucket=BUCKET) as engine:
    original = Engine._take
    calls = []

    def broken_once(self, slot, token):
      calls.append(slot)
      if len(calls) == 1:
        raise RuntimeError("planted bug")
      return original(self, slot, token)

    monkeypatch.setattr(Engine, "_take", broken_once)
    with pytest.raises(Exception, match="planted bug"):
      engine.generate(prompt, greedy)
    assert engine.generate(prompt, greedy).tokens == _alone(gen, tok, prompt, greedy)

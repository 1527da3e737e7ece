"""Many LoRA adapters served over one base: requests for different adapters (and the
base) share decode steps, each row applying its own adapter, and each request gets what
the generator gives it with that adapter alone, greedy and seeded; through the engine,
and through the OpenAI-compatible server driven by the `openai` client."""

import concurrent.futures
import dataclasses
import functools

import jax
import numpy as np
import openai
import pytest
from conftest import tiny_config
from serve_fixtures import data_uri, drawn_image, running_server, serve_config
from test_serve_engine import _alone, _prompt

from dsvl_jax.checkpoint.adapters import save_peft
from dsvl_jax.config.schema import ConfigError
from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.engine import Engine, QueueSink
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.load import load_model
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.infer.streaming import cut_at_stop
from dsvl_jax.models import adapter_stack, lora
from dsvl_jax.models.config import LoraConfig
from dsvl_jax.models.init import init_adapters, init_params
from dsvl_jax.models.vlm import DeepseekVL
from dsvl_jax.processor.conversation import Message, encode_conversation, template_for
from dsvl_jax.processor.image_processor import ImageProcessorConfig, process_batch
from dsvl_jax.processor.tokenizer import Tokenizer
from dsvl_jax.serve.server import build

# Two adapters unlike each other: ranks, scales and targets differ; the second adapts
# the aligner (prefill only) and the LM head (forward_last) as well.
SPECS = (
    LoraConfig(rank=4, alpha=8.0),
    LoraConfig(rank=2, alpha=3.0, targets=("llm/layers*/q_proj", "llm/lm_head", "aligner/*")),
)


def _with_lora(cfg, spec):
  return cfg.replace(compute=dataclasses.replace(cfg.compute, lora=spec))


def _random_adapter(cfg, spec, seed):
  """An adapter of `spec` with lora_b random too (a fresh one is the identity)."""
  own = _with_lora(cfg, spec)
  leaves, tree = jax.tree.flatten(init_adapters(own, jax.random.key(seed)))
  keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
  noisy = [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return own, jax.tree.unflatten(tree, noisy)


@functools.lru_cache(maxsize=None)
def _setup():
  cfg = tiny_config("hybrid")
  params = init_params(cfg, jax.random.key(3))
  tok = Tokenizer.builtin_bytes(cfg)
  adapters = [_random_adapter(cfg, spec, i) for i, spec in enumerate(SPECS)]
  gens = [Generator(cfg, params, prompt_bucket=64)] + [
      Generator(own, lora.merge(params, tree), prompt_bucket=64) for own, tree in adapters
  ]
  return cfg, params, tok, adapters, gens


def test_stacked_rows_equal_each_adapter_alone():
  """The model with stacked adapters, rows picking 0 (none), 1 and 2: each row's logits
  are the one-adapter model's (ranks padded, alpha / rank folded into lora_b)."""
  cfg, params, _, adapters, _ = _setup()
  scfg, stacked = adapter_stack.stack(cfg, [(own.compute.lora, tree) for own, tree in adapters])
  assert scfg.compute.lora.stacked == 3 and scfg.compute.lora.rank == 4
  ids = np.random.default_rng(0).integers(0, 400, (1, 12)).astype(np.int32)
  batch = np.repeat(ids, 3, axis=0)
  got = DeepseekVL(scfg).apply(
      {"params": lora.merge(params, stacked)}, batch, adapter=np.arange(3, dtype=np.int32)
  )["logits"]
  models = [(cfg, params)] + [(own, lora.merge(params, tree)) for own, tree in adapters]
  for row, (own, p) in enumerate(models):
    want = DeepseekVL(own).apply({"params": p}, ids)["logits"][0]
    np.testing.assert_allclose(got[row], want, rtol=1e-5, atol=1e-5)
  assert not np.allclose(got[0], got[1], atol=1e-3) and not np.allclose(got[0], got[2], atol=1e-3)


def _concurrent(engine, jobs):
  sinks = []
  for prompt, sampling, adapter in jobs:
    sink = QueueSink()
    engine.submit(prompt, sampling, sink, adapter)
    sinks.append(sink)
  return [s.result(timeout=300) for s in sinks]


def test_engine_serves_two_adapters_and_the_base_in_shared_steps():
  cfg, params, tok, adapters, gens = _setup()
  scfg, stacked = adapter_stack.stack(cfg, [(own.compute.lora, tree) for own, tree in adapters])
  samplings = [
      SamplingConfig(temperature=0.0, max_new_tokens=10, stop_strings=STOP_STRINGS),
      SamplingConfig(temperature=0.9, top_p=0.9, seed=7, max_new_tokens=8),
  ]
  jobs = []
  for i in range(9):  # each adapter with and without images, greedy and seeded
    prompt = _prompt(cfg, tok, "what is here? " + str(i // 3), n_images=(i // 3) % 2, seed=i // 3)
    jobs.append((prompt, samplings[(i // 3) % 2], i % 3))
  with Engine(
      scfg, lora.merge(params, stacked), tok, num_slots=4, max_len=256, prompt_bucket=64
  ) as engine:
    done = _concurrent(engine, jobs)
  for (prompt, sampling, adapter), c in zip(jobs, done):
    assert c.tokens == _alone(gens[adapter], tok, prompt, sampling), adapter
  # The adapters change the answers (so the equality above tells adapters apart) ...
  by_prompt = [[c.tokens for c in done[k : k + 3]] for k in range(0, 9, 3)]
  assert all(t[0] != t[1] and t[0] != t[2] for t in by_prompt)
  # ... and rows of different adapters ran in the same decode steps.
  spans = [(c.timing["admitted_step"], c.timing["done_step"]) for c in done[:3]]
  assert max(a for a, _ in spans) < min(d for _, d in spans)


def test_prefix_cache_reuses_rows_of_the_same_adapter_only():
  cfg, params, tok, adapters, gens = _setup()
  scfg, stacked = adapter_stack.stack(cfg, [(own.compute.lora, tree) for own, tree in adapters])
  greedy = SamplingConfig(temperature=0.0, max_new_tokens=6)
  prompt = _prompt(cfg, tok, "a prompt long enough to be worth reusing, twice", 1, seed=4)
  with Engine(
      scfg,
      lora.merge(params, stacked),
      tok,
      num_slots=2,
      max_len=256,
      prompt_bucket=16,
      prefix_cache=True,
      min_prefix=8,
  ) as engine:
    first = engine.generate(prompt, greedy, adapter=1)
    other = engine.generate(prompt, greedy, adapter=2)  # the kept row is adapter 1's
    again = engine.generate(prompt, greedy, adapter=1)
  assert first.cached_tokens == 0 and other.cached_tokens == 0
  assert again.cached_tokens > 0
  assert other.tokens == _alone(gens[2], tok, prompt, greedy)
  assert first.tokens == again.tokens == _alone(gens[1], tok, prompt, greedy)


# -- the server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_server(tmp_path_factory):
  """A server with serve.adapters {"sketch": ..., "caption": ...}, PEFT folders written
  by `save_peft` from random adapters of the server's own random base."""
  root = tmp_path_factory.mktemp("adapters")
  config = serve_config(max_queue=16)
  cfg, params = load_model(config, config.serve, "serve")
  specs = (
      LoraConfig(rank=4, alpha=8.0),
      LoraConfig(rank=2, alpha=4.0, targets=("llm/layers*/q_proj", "llm/layers*/v_proj")),
  )
  gens, folders = {}, {}
  for i, (name, spec) in enumerate(zip(("sketch", "caption"), specs)):
    own, tree = _random_adapter(cfg, spec, 10 + i)
    save_peft(lora.merge(params, tree), own, root / name)
    folders[name] = str(root / name)
    gens[name] = Generator(own, lora.merge(params, tree), prompt_bucket=16)
  config.serve.adapters = folders
  with running_server(config) as (url, service):
    gens[service.model_name] = Generator(cfg, params, prompt_bucket=16)
    yield url, service, gens


def _expected(service, gen, text, image, sampling):
  enc = encode_conversation(
      [Message("user", "<image_placeholder>" * (image is not None) + text)],
      service.tokenizer,
      service.cfg,
      add_generation_prompt=True,
      template=template_for("default"),
  )
  pixels = None
  if image is not None:
    pixels = process_batch([image], ImageProcessorConfig.for_model(service.cfg))
  out = gen.generate(
      enc.ids[None], images=pixels, sampling=sampling, decode=service.tokenizer.decode
  )
  return cut_at_stop(service.tokenizer.decode(out.tokens[0]), sampling.stop_strings).strip()


def test_openai_client_two_adapters_and_the_base_concurrently(adapter_server):
  url, service, gens = adapter_server
  client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
  assert [m.id for m in client.models.list().data] == [service.model_name, "caption", "sketch"]
  image = drawn_image(5)
  cases = []
  for model in (service.model_name, "sketch", "caption"):
    cases.append((model, "describe it", image, dict(temperature=0.0)))
    cases.append((model, "and now?", None, dict(temperature=0.8, top_p=0.9, seed=21)))

  def ask(case):
    model, text, img, sampling = case
    content = [{"type": "text", "text": text}]
    if img is not None:
      content.insert(0, {"type": "image_url", "image_url": {"url": data_uri(img)}})
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=12,
        extra_body={"repetition_penalty": 1.0},
        **sampling,
    )

  with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
    answers = list(pool.map(ask, cases))
  for (model, text, img, sampling), r in zip(cases, answers):
    want = _expected(
        service,
        gens[model],
        text,
        img,
        SamplingConfig(
            **sampling, repetition_penalty=1.0, max_new_tokens=12, stop_strings=STOP_STRINGS
        ),
    )
    assert r.model == model
    assert r.choices[0].message.content == want, model
  texts = [r.choices[0].message.content for r in answers]
  assert len({texts[0], texts[2], texts[4]}) == 3  # the adapters answer differently
  with pytest.raises(openai.NotFoundError, match="'caption', 'sketch'"):
    client.chat.completions.create(
        model="sketchy", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )


@pytest.mark.parametrize(
    "serve, message",
    [
        (dict(adapters={"a": "/nonexistent/adapter"}), "serve.adapters.a"),
        (dict(adapters={"a": "."}, adapter="."), "not both"),
        (dict(adapters={"a": "."}, model_name="a"), "names the checkpoint"),
        (dict(adapters={"a": "tests"}), "serve.adapters.a': tests: not a PEFT adapter folder"),
    ],
)
def test_bad_adapter_settings_fail_at_start_in_one_line(serve, message):
  config = serve_config(**serve)
  with pytest.raises(ConfigError, match=message) as e:
    build(config)
  assert "\n" not in str(e.value)


def test_an_adapter_with_a_module_trained_in_full_is_refused_in_one_line(tmp_path):
  """PEFT's modules_to_save replace a whole module: no per-request choice of it."""
  config = serve_config()
  cfg, params = load_model(config, config.serve, "serve")
  own, tree = _random_adapter(cfg, LoraConfig(rank=2, alpha=2.0), 3)
  save_peft(lora.merge(params, tree), own, tmp_path / "full", full=("aligner",))
  config.serve.adapters = {"full": str(tmp_path / "full")}
  with pytest.raises(ConfigError, match="1 = 'full'.*aligner/.*trained in full") as e:
    build(config)
  assert "\n" not in str(e.value)

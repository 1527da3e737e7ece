"""Quantised inference through the paths users run: chat, eval and serve load a model
with `<section>.quantize`, and the server's answers equal the int8 generator's."""

from __future__ import annotations

import jax
import numpy as np
import openai
import pytest
from serve_fixtures import data_uri, drawn_image, running_server, serve_config

from dsvl_jax.config.files import load_config
from dsvl_jax.config.schema import ConfigError
from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.load import load_model
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.infer.streaming import cut_at_stop
from dsvl_jax.processor.conversation import Message, encode_conversation, template_for
from dsvl_jax.processor.image_processor import ImageProcessorConfig, process_batch


def _kernels_q(params) -> list[str]:
  paths = jax.tree_util.tree_flatten_with_path(params)[0]
  return sorted({jax.tree_util.keystr(p[:-1]) for p, _ in paths if "kernel_q" in str(p)})


@pytest.mark.parametrize("kind", ["int8", "int4", "nf4"])
def test_a_section_quantize_loads_the_targeted_kernels_quantised(kind):
  config = load_config("configs/tiny.py:hybrid")
  config.chat.quantize = kind
  cfg, params = load_model(config, config.chat, "chat")
  assert cfg.compute.quant.kind == kind and cfg.compute.quant.block == 64
  quantised = _kernels_q(params)
  assert quantised and all("llm" in p for p in quantised)  # the default targets
  plain = load_config("configs/tiny.py:hybrid")
  _, float_params = load_model(plain, plain.chat, "chat")
  assert not _kernels_q(float_params)
  # the same random init, quantised: the codes dequantise to the float kernels' blocks
  from dsvl_jax.models import quant_tree

  back = quant_tree.dequantize_tree(params, cfg)
  bound = {"int8": 1 / 254, "int4": 1 / 14, "nf4": 0.17}[kind]  # of a block's absmax
  changed = 0
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(float_params)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    if not np.array_equal(a, b):
      changed += 1
      assert np.max(np.abs(a - b)) <= bound * np.max(np.abs(b)) * 1.001
  assert changed == len(quantised)
  config.chat.quant_block = 3 if kind != "int8" else 1
  with pytest.raises(ConfigError, match="chat.quant_block"):
    from dsvl_jax.infer.chat_config import ChatConfig

    ChatConfig.from_dict(config.chat)


def _answer(service, gen, image, question, max_tokens):
  enc = encode_conversation(
      [Message("user", "<image_placeholder>" + question)],
      service.tokenizer,
      service.cfg,
      add_generation_prompt=True,
      template=template_for("default"),
  )
  pixels = process_batch([image], ImageProcessorConfig.for_model(service.cfg))
  sampling = SamplingConfig(temperature=0, max_new_tokens=max_tokens, stop_strings=STOP_STRINGS)
  out = gen.generate(
      enc.ids[None], images=pixels, sampling=sampling, decode=service.tokenizer.decode
  )
  return cut_at_stop(service.tokenizer.decode(out.tokens[0]), STOP_STRINGS).strip()


def assert_served_as_generated(url, service, gen, seeds) -> None:
  """Two greedy image questions: the server's answers equal `gen`'s on the same turn."""
  client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
  for seed, question in zip(seeds, ("What is in the picture?", "Describe it.")):
    image = drawn_image(seed)
    parts = [
        {"type": "image_url", "image_url": {"url": data_uri(image)}},
        {"type": "text", "text": question},
    ]
    r = client.chat.completions.create(
        model=service.model_name,
        messages=[{"role": "user", "content": parts}],
        temperature=0,
        max_tokens=12,
    )
    assert r.choices[0].message.content == _answer(service, gen, image, question, 12)


def test_the_server_with_serve_quantize_int8_answers_as_the_int8_generator():
  config = serve_config(quantize="int8", repetition_penalty=1.0, max_len=512)
  cfg, params = load_model(config, config.serve, "serve")  # what the server loads
  float_cfg, float_params = load_model(serve_config(), serve_config().serve, "serve")
  with running_server(config) as (url, service):
    assert service.cfg.compute.quant.kind == "int8" and _kernels_q(service.engine.model.params)
    gen = Generator(service.cfg, params, prompt_bucket=config.serve.prompt_bucket)
    assert_served_as_generated(url, service, gen, seeds=(1, 2))
  # and int8 is not the float model: its logits differ, a little
  from dsvl_jax.models.vlm import DeepseekVL

  ids = np.array([[10, 20, 30, 40]], np.int32)  # text tokens of the tiny vocabulary
  q = DeepseekVL(cfg).apply({"params": params}, ids)["logits"]
  f = DeepseekVL(float_cfg).apply({"params": float_params}, ids)["logits"]
  diff = float(np.max(np.abs(np.asarray(q) - np.asarray(f))))
  assert 0 < diff < 0.1 * float(np.max(np.abs(np.asarray(f))))


def test_training_refuses_weight_only_quantisation_in_one_line():
  from dsvl_jax.train.trainer import RunConfig

  config = load_config("configs/tiny.py")
  RunConfig.of(config)  # the float config trains
  config.model.compute.quant.kind = "int8"
  with pytest.raises(ConfigError, match=r"model\.compute\.quant\.kind.*lora\.base_quant") as e:
    RunConfig.of(config)
  assert "\n" not in str(e.value)


def test_training_refuses_to_start_from_a_quantised_checkpoint(tmp_path):
  from dsvl_jax.checkpoint import params_io
  from dsvl_jax.infer.load import quantized
  from dsvl_jax.train.trainer import Trainer

  config = load_config("configs/tiny.py")
  config.data.tokenizer = "builtin:bytes"
  cfg, params = load_model(config, config.chat, "chat")
  qcfg, qparams = quantized(cfg, params, "int8", 64, "chat")
  params_io.save(tmp_path / "int8", qparams, qcfg)
  config.train.init_from = str(tmp_path / "int8")
  with pytest.raises(ConfigError, match=r"train\.init_from.*int8 quantised.*float") as e:
    Trainer(config, tmp_path / "run").initial_params()
  assert "\n" not in str(e.value)


def test_a_section_quantizes_a_checkpoint_as_it_loads_and_refuses_a_quantised_one(tmp_path):
  from dsvl_jax.checkpoint import params_io

  config = load_config("configs/tiny.py")
  config.chat.tokenizer = "builtin:bytes"
  cfg, params = load_model(config, config.chat, "chat")  # a random init, float
  params_io.save(tmp_path / "float", params, cfg)
  config.chat.quantize = "int4"
  want_cfg, want = load_model(config, config.chat, "chat")  # the init, quantised after
  config.chat.checkpoint = str(tmp_path / "float")
  got_cfg, got = load_model(config, config.chat, "chat")  # quantised as it is read
  assert got_cfg.compute.quant == want_cfg.compute.quant
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  params_io.save(tmp_path / "int4", got, got_cfg)
  config.chat.checkpoint = str(tmp_path / "int4")
  with pytest.raises(ConfigError, match=r"chat\.quantize.*quantised already") as e:
    load_model(config, config.chat, "chat")
  assert "\n" not in str(e.value)
  config.chat.quantize = "none"  # a quantised checkpoint loads as it is stored
  cfg4, loaded = load_model(config, config.chat, "chat")
  assert cfg4.compute.quant.kind == "int4" and _kernels_q(loaded) == _kernels_q(got)

"""`--config.mode=serve`: the OpenAI-compatible server (FastAPI on uvicorn).

  python -m dsvl_jax.main --config=configs/deepseek_vl_7b.py --config.mode=serve \
      --config.serve.checkpoint=ckpt/deepseek-vl-7b-chat --config.serve.port=8000

The key, when `serve.api_key_env` names a set variable, is read at start-up.
"""

from __future__ import annotations

import os

import ml_collections
from absl import logging

from dsvl_jax.infer.load import load_model, load_tokenizer, stack_adapters
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.serve.serve_config import ServeConfig, default_config


def build(config: ml_collections.ConfigDict):
  """(ChatService with a started engine, API key or None) from config.serve."""
  from dsvl_jax.infer.engine import Engine  # pylint: disable=g-import-not-at-top
  from dsvl_jax.serve.service import ChatService, model_name_of  # pylint: disable=g-import-not-at-top

  serve = ServeConfig.from_dict(config.serve if "serve" in config else default_config())
  if not serve.checkpoint:  # a random init: the context is known before any weights load
    serve.validate(VLMConfig.from_dict(config.model).llm.max_position_embeddings)
  cfg, params = load_model(config, serve, "serve")
  serve.validate(cfg.llm.max_position_embeddings)
  tokenizer = load_tokenizer(serve, cfg, "serve")
  if serve.adapters:
    cfg, params = stack_adapters(serve, cfg, params, "serve")
  engine = Engine(
      cfg,
      params,
      tokenizer,
      num_slots=serve.num_slots,
      max_len=serve.max_len,
      prompt_bucket=serve.prompt_bucket,
      max_queue=serve.max_queue,
      prefix_cache=serve.prefix_cache,
      min_prefix=serve.min_prefix,
  ).start()
  api_key = os.environ.get(serve.api_key_env) if serve.api_key_env else None
  return ChatService(engine, cfg, tokenizer, serve, model_name_of(serve)), api_key or None


def serve_app(config: ml_collections.ConfigDict, web: bool) -> None:
  import uvicorn  # pylint: disable=g-import-not-at-top

  from dsvl_jax.serve.app import create_app  # pylint: disable=g-import-not-at-top

  service, api_key = build(config)
  app = create_app(service, api_key)
  if web:
    from dsvl_jax.serve.web import mount_page  # pylint: disable=g-import-not-at-top

    app = mount_page(app, service, config.serve.web_title, config.serve.web_image_position)
  host, port = config.serve.host, config.serve.port
  logging.warning(
      "serving %s on http://%s:%d (%s)",
      service.model_name,
      host,
      port,
      "chat page at /, API at /v1" if web else "API at /v1",
  )
  try:
    uvicorn.run(app, host=host, port=port, log_level="warning")
  finally:
    service.engine.close()


def run(config: ml_collections.ConfigDict, workdir: str | None = None) -> None:
  del workdir
  serve_app(config, web=False)


def run_web(config: ml_collections.ConfigDict, workdir: str | None = None) -> None:
  """`--config.mode=web`: the API and the chat page at / (serve/web.py)."""
  del workdir
  serve_app(config, web=True)

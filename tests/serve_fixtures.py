"""A real server on loopback for the API and web tests: uvicorn in a thread, tiny model."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time

import numpy as np
import uvicorn
from PIL import Image

from dsvl_jax.config.files import load_config
from dsvl_jax.serve.app import create_app
from dsvl_jax.serve.server import build


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def serve_config(**serve):
  config = load_config("configs/tiny.py:hybrid")
  config.serve.update(
      dict(
          tokenizer="builtin:bytes",
          num_slots=4,
          max_len=256,
          prompt_bucket=16,
          max_tokens=64,
          default_max_tokens=16,
      )
  )
  config.serve.update(serve)
  return config


@contextlib.contextmanager
def running_server(config, web: bool = False):
  """Yields (base URL, ChatService); stops the server and its engine afterwards."""
  service, api_key = build(config)
  app = create_app(service, api_key)
  if web:
    from dsvl_jax.serve.web import mount_page

    app = mount_page(app, service, config.serve.web_title, config.serve.web_image_position)
  port = free_port()
  server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
  thread = threading.Thread(target=server.run, daemon=True)
  thread.start()
  deadline = time.time() + 60
  while not server.started:
    if time.time() > deadline or not thread.is_alive():
      raise RuntimeError("the server did not start")
    time.sleep(0.05)
  try:
    yield f"http://127.0.0.1:{port}", service
  finally:
    server.should_exit = True
    thread.join(timeout=30)
    service.engine.close()


def drawn_image(seed: int, size=(48, 40)) -> Image.Image:
  rng = np.random.default_rng(seed)
  arr = np.full((size[1], size[0], 3), 255, np.uint8)
  x, y = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
  arr[y : y + size[1] // 2, x : x + size[0] // 2] = rng.integers(0, 255, 3)
  return Image.fromarray(arr)


def data_uri(img: Image.Image) -> str:
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

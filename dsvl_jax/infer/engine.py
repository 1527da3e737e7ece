"""Continuous batching: requests join and leave a running batch of decode slots.

One thread owns the device state (infer/slots.py). Each turn of its loop:
  1. drops cancelled requests: queued ones, and running ones, whose slot frees at once;
  2. admits queued requests into free slots, one prefill each (a prefill also picks the
     request's first token), so a new request joins at the next step;
  3. runs one decode step for every busy slot and hands each request its token; a
     request that ends (EOS, a stop string, its token budget) frees its slot at once.
Requests talk back through a sink (a callable taking events): `Delta(text)` for
streamed text, then `Done(completion)` or `Failed(message)`. `QueueSink` serves threads
(the web page, tests), `AsyncSink` an asyncio loop (the HTTP server).

Prefix cache (optional): a finished request's slot keeps its keys and values until the
slot is needed again. A new prompt that starts with the same tokens (and the same
images, compared by content) as a kept row reuses that row and prefills only the rest:
turn k of a chat costs its new message, not the whole conversation. Reused values come
from earlier prefills and decode steps, so answers can differ from a fresh prefill in
float rounding; it is off by default (BUILD.md, "Serving", has the measurement).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import itertools
import queue
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np
from absl import logging

from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.infer.slots import SlotModel
from dsvl_jax.infer.streaming import TextStream
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.processor.batching import left_pad, round_up
from dsvl_jax.processor.tokenizer import Tokenizer


class EngineError(Exception):
  """A request the engine cannot take (the server answers 400 or 429)."""


class QueueFull(EngineError):
  pass


class RequestTooLong(EngineError):
  pass


class EngineClosed(EngineError):
  pass


@dataclasses.dataclass(frozen=True)
class Prompt:
  """ids [T] int32 (images expanded); images [n, 3, S, S] float32 in [0, 1]."""

  ids: np.ndarray
  images: np.ndarray

  @classmethod
  def of(cls, ids, images=None, image_size: int | None = None) -> "Prompt":
    ids = np.asarray(ids, np.int32).reshape(-1)
    if images is None or len(images) == 0:
      s = image_size or 1
      images = np.zeros((0, 3, s, s), np.float32)
    return cls(ids, np.asarray(images, np.float32))

  def content_keys(self, image_token_id: int, tokens_per_image: int) -> np.ndarray:
    """[T] int64: text tokens as their ids, image tokens as a key of their image's
    pixels and their place in its block, so equal keys mean equal inputs."""
    keys = self.ids.astype(np.int64)
    where = np.flatnonzero(self.ids == image_token_id)
    if tokens_per_image > 1 << 16:
      raise ValueError(f"content_keys: {tokens_per_image} tokens per image (max 65536)")
    for n, start in enumerate(where[::tokens_per_image]):
      # 40 bits of the image's digest above 16 bits of place: negative int64 keys, no
      # text id among them (576 tokens x a 56-bit digest overflowed int64).
      digest = hashlib.blake2b(self.images[n].tobytes(), digest_size=5).digest()
      base = int.from_bytes(digest, "little") << 16
      keys[start : start + tokens_per_image] = -1 - (base + np.arange(tokens_per_image))
    return keys


@dataclasses.dataclass
class Completion:
  text: str  # the answer: cut at the first stop string, stripped
  tokens: list[int]  # generated tokens (without the stopping EOS)
  finish_reason: str  # "stop" (EOS or a stop string), "length" or "cancelled"
  prompt_tokens: int
  cached_tokens: int  # prompt tokens whose keys and values came from the prefix cache
  timing: dict[str, float]  # seconds: queued, first_token, total; steps: admitted_step, done_step


@dataclasses.dataclass(frozen=True)
class Delta:
  text: str


@dataclasses.dataclass(frozen=True)
class Done:
  completion: Completion


@dataclasses.dataclass(frozen=True)
class Failed:
  message: str


Event = Delta | Done | Failed


class QueueSink:
  """Events into a thread-safe queue; `events()` yields them, `result()` waits."""

  def __init__(self):
    self.queue: queue.SimpleQueue[Event] = queue.SimpleQueue()

  def __call__(self, event: Event) -> None:
    self.queue.put(event)

  def events(self, timeout: float | None = None) -> Iterator[Event]:
    while True:
      event = self.queue.get(timeout=timeout)
      yield event
      if not isinstance(event, Delta):
        return

  def result(self, timeout: float | None = None) -> Completion:
    for event in self.events(timeout):
      if isinstance(event, Failed):
        raise RuntimeError(event.message)
      if isinstance(event, Done):
        return event.completion
    raise AssertionError("unreachable")


class AsyncSink:
  """Events into an asyncio queue of `loop`, from the engine thread."""

  def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
    self.loop = loop or asyncio.get_running_loop()
    self.queue: asyncio.Queue[Event] = asyncio.Queue()

  def __call__(self, event: Event) -> None:
    try:
      self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
    except RuntimeError:  # the loop is closed: nobody is listening any more
      pass

  async def next(self) -> Event:
    return await self.queue.get()


_ids = itertools.count(1)


class Request:
  """A submitted request; `cancel()` from any thread frees its slot at the next turn."""

  def __init__(
      self,
      engine: "Engine",
      prompt: Prompt,
      sampling: SamplingConfig,
      sink: Callable[[Event], None],
      adapter: int = 0,
  ):
    self.id = next(_ids)
    self.prompt, self.sampling, self.sink, self.adapter = prompt, sampling, sink, adapter
    self.stream = TextStream(engine.tokenizer.decode, sampling.stop_strings)
    self.tokens: list[int] = []
    self.sampled = 0  # tokens chosen, the stopping EOS included
    self.cached_tokens = 0
    self.next_col = 0  # host copy of the slot's write column
    self.row: _Row | None = None  # the slot's content once prefilled (prefix cache)
    self.cancelled = False
    self.timing: dict[str, float] = {"submitted": time.perf_counter()}
    self._engine = engine

  def cancel(self) -> None:
    self.cancelled = True
    self._engine._wake()  # pylint: disable=protected-access


@dataclasses.dataclass
class _Row:
  """What a slot's cache row holds: content keys of its real tokens and their columns,
  computed through adapter `adapter`."""

  keys: np.ndarray
  cols: np.ndarray
  adapter: int = 0


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
  n = min(len(a), len(b))
  diff = np.flatnonzero(a[:n] != b[:n])
  return int(diff[0]) if len(diff) else n


class Engine:
  """A fixed number of decode slots, one jitted decode step, a request queue.

  Use as a context manager (or start() / close()). submit() never blocks: it raises
  QueueFull past max_queue waiting requests and RequestTooLong when a prompt and its
  token budget do not fit a slot.
  """

  def __init__(
      self,
      cfg: VLMConfig,
      params,
      tokenizer: Tokenizer,
      *,
      num_slots: int = 8,
      max_len: int = 2048,
      prompt_bucket: int = 64,
      max_queue: int = 64,
      prefix_cache: bool = False,
      min_prefix: int = 16,
  ):
    if num_slots < 1 or max_queue < 0 or prompt_bucket < 1:
      raise ValueError(
          f"num_slots {num_slots}, max_queue {max_queue}, prompt_bucket "
          f"{prompt_bucket}: need num_slots >= 1, max_queue >= 0, bucket >= 1"
      )
    self.cfg, self.tokenizer = cfg, tokenizer
    self.model = SlotModel(cfg, params, num_slots, max_len)
    self.num_slots, self.max_len, self.prompt_bucket = num_slots, max_len, prompt_bucket
    self.max_queue, self.prefix_cache, self.min_prefix = max_queue, prefix_cache, min_prefix
    self._state = self.model.init_state()
    self._slots: list[Request | None] = [None] * num_slots
    self._rows: list[_Row | None] = [None] * num_slots
    self._used = [0] * num_slots  # when each slot last finished (LRU for the prefix cache)
    self._queue: collections.deque[Request] = collections.deque()
    self._cond = threading.Condition()
    self._closing = False
    self._thread: threading.Thread | None = None
    self.counters = collections.Counter()  # steps, prefills, prefix_hits, reused_tokens, ...

  # -- public -------------------------------------------------------------------------

  def start(self) -> "Engine":
    if self._thread is None:
      self._thread = threading.Thread(target=self._run, name="dsvl-engine", daemon=True)
      self._thread.start()
    return self

  def close(self) -> None:
    with self._cond:
      self._closing = True
      self._cond.notify_all()
    if self._thread is not None:
      self._thread.join()
    for req in list(self._queue) + [r for r in self._slots if r is not None]:
      req.sink(Failed("the engine was shut down"))
    self._queue.clear()
    self._slots = [None] * self.num_slots

  def __enter__(self) -> "Engine":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.close()

  def check(self, prompt: Prompt, sampling: SamplingConfig, adapter: int = 0) -> None:
    """Raises RequestTooLong if the prompt and its token budget cannot fit a slot, and
    EngineError for images that do not match their tokens or an unknown adapter."""
    if not 0 <= adapter < self.model.num_adapters:
      raise EngineError(f"adapter {adapter}: the model holds {self.model.num_adapters - 1}")
    t = len(prompt.ids)
    padded = round_up(t, self.prompt_bucket)
    need = padded + sampling.max_new_tokens
    if need > self.max_len:
      raise RequestTooLong(
          f"the prompt has {t} tokens (padded to {padded}) and "
          f"max_tokens is {sampling.max_new_tokens}: {need} positions, more than the "
          f"{self.max_len} of a slot"
      )
    n_img = int(np.sum(prompt.ids == self.cfg.image_token_id))
    if n_img != len(prompt.images) * self.cfg.num_image_tokens:
      raise EngineError(
          f"{n_img} image tokens for {len(prompt.images)} image(s) of "
          f"{self.cfg.num_image_tokens} tokens"
      )

  def submit(
      self,
      prompt: Prompt,
      sampling: SamplingConfig,
      sink: Callable[[Event], None],
      adapter: int = 0,
  ) -> Request:
    """Queues a request; its events go to `sink` (called on the engine thread). It
    stops as Generator.generate does: EOS, any of sampling.stop_strings in the text
    (the server adds the template's "User:"), or sampling.max_new_tokens tokens.
    adapter: with stacked adapters (infer/slots.py), the one this request applies."""
    self.check(prompt, sampling, adapter)
    req = Request(self, prompt, sampling, sink, adapter)
    with self._cond:
      if self._closing:
        raise EngineClosed("the engine is shut down")
      waiting = sum(not r.cancelled for r in self._queue)
      if waiting >= self.max_queue:
        raise QueueFull(
            f"{waiting} requests are waiting, the queue's limit "
            f"(serve.max_queue={self.max_queue}); try again later"
        )
      self._queue.append(req)
      self._cond.notify_all()
    return req

  def generate(self, prompt: Prompt, sampling: SamplingConfig, adapter: int = 0) -> Completion:
    """Submits and waits (blocking convenience)."""
    sink = QueueSink()
    self.submit(prompt, sampling, sink, adapter)
    return sink.result()

  def status(self) -> dict[str, Any]:
    return {
        "slots": self.num_slots,
        "busy": sum(r is not None for r in self._slots),
        "queued": len(self._queue),
        **self.counters,
    }

  # -- the loop -----------------------------------------------------------------------

  def _wake(self) -> None:
    with self._cond:
      self._cond.notify_all()

  def _run(self) -> None:
    while not self._closing:
      try:
        self._loop()
      except Exception as e:  # pylint: disable=broad-except
        # A bug here must not leave clients waiting forever: fail what runs, go on.
        logging.exception("engine loop failed")
        self._state = self.model.init_state()
        self._fail_running(f"engine error: {e}")

  def _loop(self) -> None:
    while True:
      with self._cond:
        while not (self._closing or self._queue or any(self._slots)):
          self._cond.wait()
        if self._closing:
          return
        for req in [r for r in self._queue if r.cancelled]:
          self._queue.remove(req)
          self.counters["cancelled"] += 1
          req.sink(Done(self._completion(req, "cancelled")))
        admitted = []
        while self._queue and None in self._slots:
          req = self._queue.popleft()
          slot, reuse = self._place(req)
          self._slots[slot] = req
          admitted.append((req, slot, reuse))
      for req, slot, reuse in admitted:
        self._prefill(req, slot, reuse)
      for slot, req in enumerate(self._slots):
        if req is not None and req.cancelled:
          self._finish(slot, "cancelled")
      if any(self._slots):
        self._step()

  def _place(self, req: Request) -> tuple[int, int]:
    """(slot, prompt tokens reused from it). Without the prefix cache, the lowest free
    slot (a step runs the slots up to the last busy one). With it: a kept row with the
    longest usable common prefix, else an empty slot, else the one finished longest ago."""
    free = [i for i, r in enumerate(self._slots) if r is None]
    best, best_c = None, 0
    if self.prefix_cache:
      k = self.cfg.num_image_tokens
      ids = req.prompt.ids
      keys = req.prompt.content_keys(self.cfg.image_token_id, k)
      for i in free:
        row = self._rows[i]
        if row is None or row.adapter != req.adapter:  # its values came through another
          continue
        c = min(_common_prefix(row.keys, keys), len(ids) - 1)  # one token left to prefill
        c -= int(np.sum(ids[:c] == self.cfg.image_token_id)) % k  # never half an image
        if c < max(self.min_prefix, 1) or c <= best_c:
          continue
        offset = int(row.cols[c - 1]) + 1
        if (
            offset + round_up(len(ids) - c, self.prompt_bucket) + req.sampling.max_new_tokens
            > self.max_len
        ):
          continue
        best, best_c = i, c
    if best is not None:
      return best, best_c
    if not self.prefix_cache:  # the lowest free slot: busy slots stay packed at the front
      return free[0], 0
    return min(free, key=lambda i: (self._rows[i] is not None, self._used[i], i)), 0

  def _prefill(self, req: Request, slot: int, reuse: int) -> None:
    ids, k = req.prompt.ids, self.cfg.num_image_tokens
    row = self._rows[slot]
    offset = int(row.cols[reuse - 1]) + 1 if reuse else 0
    suffix = ids[reuse:]
    tb = round_up(len(suffix), self.prompt_bucket)
    pad = tb - len(suffix)
    x, m = left_pad([suffix], tb, self.cfg.pad_token_id)
    first_image = int(np.sum(ids[:reuse] == self.cfg.image_token_id)) // k
    req.timing["admitted"] = time.perf_counter()
    req.timing["admitted_step"] = self.counters["steps"]
    self._rows[slot] = None  # overwritten from here on
    try:
      self._state, token = self.model.prefill(
          self._state,
          slot,
          x,
          m,
          req.prompt.images[first_image:],
          offset,
          reuse,
          req.sampling,
          req.adapter,
      )
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("prefill failed")
      self._slots[slot] = None
      self._state = self.model.init_state()  # donated buffers may be gone
      self._fail_running(f"prefill failed: {e}")
      req.sink(Failed(f"prefill failed: {e}"))
      return
    self.counters["prefills"] += 1
    if reuse:
      self.counters["prefix_hits"] += 1
      self.counters["reused_tokens"] += reuse
    req.cached_tokens = reuse
    cols = offset + pad + np.arange(len(suffix))
    keys = req.prompt.content_keys(self.cfg.image_token_id, k)
    req.row = _Row(
        keys, cols if not reuse else np.concatenate([row.cols[:reuse], cols]), req.adapter
    )
    req.next_col = offset + tb
    req.timing["first_token"] = time.perf_counter()
    self._take(slot, token)

  def _step(self) -> None:
    active = np.array([r is not None for r in self._slots])
    try:
      self._state, tokens = self.model.decode(self._state, active)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("decode step failed")
      self._state = self.model.init_state()
      self._fail_running(f"decode step failed: {e}")
      return
    self.counters["steps"] += 1
    self.counters["slot_steps"] += int(active.sum())
    for slot in np.flatnonzero(active):
      self._slots[slot].next_col += 1
      self._take(int(slot), int(tokens[slot]))

  def _take(self, slot: int, token: int) -> None:
    """A slot's newly chosen token: Generator.generate's stopping rules."""
    req = self._slots[slot]
    req.sampled += 1
    if token == self.cfg.eos_token_id and not req.sampling.ignore_eos:
      self._finish(slot, "stop")
      return
    req.tokens.append(token)
    delta = req.stream.push(token)
    if delta:
      req.sink(Delta(delta))
    if req.stream.stopped:
      self._finish(slot, "stop")
    elif len(req.tokens) >= req.sampling.max_new_tokens:
      self._finish(slot, "length")

  def _finish(self, slot: int, reason: str) -> None:
    req = self._slots[slot]
    self._slots[slot] = None
    self.counters["completed"] += 1
    if reason == "cancelled":
      self.counters["cancelled"] += 1
    self._used[slot] = self.counters["completed"]
    row = req.row
    if self.prefix_cache and row is not None:
      # Fed to the model: every chosen token but the last (whose step never ran).
      fed = np.asarray(req.tokens[: req.sampled - 1], np.int64)
      start = req.next_col - len(fed)
      self._rows[slot] = _Row(
          np.concatenate([row.keys, fed]),
          np.concatenate([row.cols, start + np.arange(len(fed))]),
          row.adapter,
      )
    delta = req.stream.finish()
    if delta:
      req.sink(Delta(delta))
    req.sink(Done(self._completion(req, reason)))

  def _completion(self, req: Request, reason: str) -> Completion:
    now = time.perf_counter()
    t = req.timing
    timing = {
        "queued": t.get("admitted", now) - t["submitted"],
        "first_token": t.get("first_token", now) - t["submitted"],
        "total": now - t["submitted"],
        "admitted_step": t.get("admitted_step", -1),
        "done_step": self.counters["steps"],
    }
    return Completion(
        req.stream.text, list(req.tokens), reason, len(req.prompt.ids), req.cached_tokens, timing
    )

  def _fail_running(self, message: str) -> None:
    for slot, req in enumerate(self._slots):
      if req is not None:
        self._slots[slot] = None
        req.sink(Failed(message))
    self._rows = [None] * self.num_slots

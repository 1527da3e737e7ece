"""The OpenAI-compatible HTTP API (FastAPI) over a ChatService.

  POST /v1/chat/completions   plain, or streamed as server-sent events (OpenAI's chunks,
                              then `data: [DONE]`); usage in the response (streamed: in a
                              last chunk when stream_options.include_usage)
  GET  /v1/models             the checkpoint's name, then each of serve.adapters'
                              (a request's "model" picks one; they share decode steps)
  GET  /health                liveness and the engine's counters (no key needed)

Errors come as OpenAI's body {"error": {"message", "type", "param", "code"}}: 400 for
a bad request, 401 without the key, 404 for another model, 413 for a body over
serve.max_body_bytes (refused from its Content-Length, or as soon as that many bytes
arrived), 415 for a body not sent as application/json (so a web page cannot drive the
API with a cross-site "simple" request), 429 when the queue is full. Anything else that
goes wrong preparing a request is a 500 with a generic message and its traceback in the
log; the connection stays open for the client's next request. A client that goes away
(a closed connection, streamed or not) cancels its request, which frees its slot at the
engine's next turn.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time

from absl import logging
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from dsvl_jax.infer.engine import AsyncSink, Delta, Done, EngineClosed, Failed, QueueFull
from dsvl_jax.serve import protocol
from dsvl_jax.serve.protocol import RequestError
from dsvl_jax.serve.service import ChatService

_FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}


def _sse(body) -> str:
  return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


class _Unexpected:
  """ASGI middleware: an exception no handler took becomes a 500 in OpenAI's body, its
  traceback logged. Starlette's own last resort re-raises after answering, and uvicorn
  then drops the connection; this one does not, so a keep-alive client goes on."""

  def __init__(self, app):
    self.app = app

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    started = False

    async def tracked(message):
      nonlocal started
      started = started or message["type"] == "http.response.start"
      await send(message)

    try:
      await self.app(scope, receive, tracked)
    except Exception:  # pylint: disable=broad-exception-caught
      logging.exception("unexpected error serving %s %s", scope.get("method"), scope.get("path"))
      if started:  # too late for a status: let the server close the connection
        raise
      error = RequestError(
          "the server failed to prepare this request (an internal "
          "error; the server log has the details)",
          status=500,
          kind="server_error",
          code="internal_error",
      )
      await JSONResponse(error.body(), status_code=500)(scope, receive, send)


async def _read_body(request: Request, cap: int) -> bytes | bytearray:
  """The body, refused (413) past `cap` bytes without holding more than that: into one
  buffer of the announced Content-Length, or (chunked) as chunks joined at the end."""
  too_large = RequestError(
      f"the request body is larger than {cap} bytes (serve.max_body_bytes)",
      status=413,
      code="body_too_large",
  )
  length = request.headers.get("content-length", "")
  if length.isdigit() and int(length) > cap:
    raise too_large
  if length.isdigit():
    body, n = bytearray(int(length)), 0
    view = memoryview(body)
    async for chunk in request.stream():
      if n + len(chunk) > len(body):  # more than announced: the server would refuse it
        raise RequestError("the request body is longer than its Content-Length")
      view[n : n + len(chunk)] = chunk
      n += len(chunk)
    view.release()
    return body if n == len(body) else body[:n]
  chunks, n = [], 0
  async for chunk in request.stream():
    n += len(chunk)
    if n > cap:
      raise too_large
    chunks.append(chunk)
  return b"".join(chunks)


def _parse_and_prepare(service: ChatService, raw: bytes | bytearray):
  return service.prepare(protocol.parse_body(raw))


def _require_json(request: Request) -> None:
  media = request.headers.get("content-type", "").split(";")[0].strip().lower()
  if media != "application/json":
    raise RequestError(
        f"the request body must be sent as Content-Type: application/json, "
        f"got {media[:60] or 'none'!r}",
        status=415,
        code="unsupported_media_type",
    )


def create_app(service: ChatService, api_key: str | None = None) -> FastAPI:
  """api_key: when set, /v1 routes need `Authorization: Bearer <api_key>`."""
  app = FastAPI(title="dsvl_jax", docs_url=None, redoc_url=None)
  app.add_middleware(_Unexpected)
  engine = service.engine
  # Parsing, decoding images and tokenising are CPU work, done in threads: at most this
  # many at once, so a burst of large requests cannot take every core from the engine.
  preparing = asyncio.Semaphore(service.max_preparing)

  @app.exception_handler(RequestError)
  async def request_error(_, e: RequestError):
    # An unread body (413) cannot be skipped on a keep-alive connection: close it.
    headers = {"Connection": "close"} if e.status == 413 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)

  def authorize(request: Request) -> None:
    if not api_key:
      return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
      raise RequestError(
          "a valid API key is needed (Authorization: Bearer ...)",
          status=401,
          code="invalid_api_key",
          kind="authentication_error",
      )

  @app.get("/health")
  async def health():
    return {"status": "ok", "model": service.model_name, **engine.status()}

  @app.get("/v1/models")
  async def models(request: Request):
    authorize(request)
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "dsvl_jax"}
            for name in service.models
        ],
    }

  @app.post("/v1/chat/completions")
  async def chat_completions(request: Request):
    authorize(request)
    _require_json(request)
    raw = await _read_body(request, service.max_body_bytes)
    async with preparing:  # parsing, decoding and tokenising: off the event loop
      prepared = await run_in_threadpool(_parse_and_prepare, service, raw)
    del raw  # the request's bytes, not kept while it decodes
    sink = AsyncSink()
    try:
      handle = engine.submit(prepared.prompt, prepared.sampling, sink, prepared.adapter)
    except QueueFull as e:
      raise RequestError(str(e), status=429, code="queue_full", kind="rate_limit_error") from e
    except EngineClosed as e:
      raise RequestError(str(e), status=503, code="shutting_down", kind="server_error") from e
    cid, created, req = protocol.completion_id(), int(time.time()), prepared.request
    name = prepared.model

    if req.stream:

      async def events():
        try:
          yield _sse(protocol.chunk_body(cid, name, created, {"role": "assistant", "content": ""}))
          while True:
            event = await sink.next()
            if isinstance(event, Delta):
              yield _sse(protocol.chunk_body(cid, name, created, {"content": event.text}))
            elif isinstance(event, Failed):
              yield _sse(RequestError(event.message, status=500, kind="server_error").body())
              return
            elif isinstance(event, Done):
              c = event.completion
              yield _sse(protocol.chunk_body(cid, name, created, {}, _FINISH[c.finish_reason]))
              if req.include_usage:
                yield _sse(
                    protocol.chunk_body(
                        cid,
                        name,
                        created,
                        {},
                        usage_=protocol.usage(c.prompt_tokens, len(c.tokens), c.cached_tokens),
                        with_choice=False,
                    )
                )
              yield "data: [DONE]\n\n"
              return
        finally:  # also when the client disconnects (the task is cancelled)
          handle.cancel()

      return StreamingResponse(
          events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
      )

    async def wait():
      while True:
        event = await sink.next()
        if not isinstance(event, Delta):
          return event

    waiter = asyncio.ensure_future(wait())
    try:
      while not waiter.done():
        await asyncio.wait({waiter}, timeout=0.25)
        if not waiter.done() and await request.is_disconnected():
          handle.cancel()
          waiter.cancel()
          return Response(status_code=499)  # nobody reads it; the slot is free
    finally:
      handle.cancel()  # a no-op once finished
    event = waiter.result()
    if isinstance(event, Failed):
      raise RequestError(event.message, status=500, kind="server_error")
    c = event.completion
    return protocol.completion_body(
        cid,
        name,
        c.text,
        _FINISH[c.finish_reason],
        protocol.usage(c.prompt_tokens, len(c.tokens), c.cached_tokens),
    )

  return app

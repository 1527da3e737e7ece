"""The OpenAI-compatible HTTP API (FastAPI) over a ChatService.

  POST /v1/chat/completions   plain, or streamed as server-sent events (OpenAI's chunks,
                              then `data: [DONE]`); usage in the response (streamed: in a
                              last chunk when stream_options.include_usage)
  GET  /v1/models             the one model served
  GET  /health                liveness and the engine's counters (no key needed)

Errors come as OpenAI's body {"error": {"message", "type", "param", "code"}}: 400 for
a bad request, 401 without the key, 404 for another model, 429 when the queue is full.
A client that goes away (a closed connection, streamed or not) cancels its request,
which frees its slot at the engine's next turn.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from dsvl_jax.serve import protocol
from dsvl_jax.serve.engine import AsyncSink, Delta, Done, EngineClosed, Failed, QueueFull
from dsvl_jax.serve.protocol import RequestError
from dsvl_jax.serve.service import ChatService

_FINISH = {"stop": "stop", "length": "length", "cancelled": "stop"}


def _sse(body) -> str:
  return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def create_app(service: ChatService, api_key: str | None = None) -> FastAPI:
  """api_key: when set, /v1 routes need `Authorization: Bearer <api_key>`."""
  app = FastAPI(title="dsvl_jax", docs_url=None, redoc_url=None)
  engine = service.engine

  @app.exception_handler(RequestError)
  async def request_error(_, e: RequestError):
    return JSONResponse(e.body(), status_code=e.status)

  def authorize(request: Request) -> None:
    if not api_key:
      return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
      raise RequestError("a valid API key is needed (Authorization: Bearer ...)",
                         status=401, code="invalid_api_key", kind="authentication_error")

  @app.get("/health")
  async def health():
    return {"status": "ok", "model": service.model_name, **engine.status()}

  @app.get("/v1/models")
  async def models(request: Request):
    authorize(request)
    return {"object": "list", "data": [{"id": service.model_name, "object": "model",
                                        "created": 0, "owned_by": "dsvl_jax"}]}

  @app.post("/v1/chat/completions")
  async def chat_completions(request: Request):
    authorize(request)
    body = protocol.parse_body(await request.body())
    # Decoding images and tokenising are CPU work: off the event loop.
    prepared = await run_in_threadpool(service.prepare, body)
    sink = AsyncSink()
    try:
      handle = engine.submit(prepared.prompt, prepared.sampling, sink)
    except QueueFull as e:
      raise RequestError(str(e), status=429, code="queue_full",
                         kind="rate_limit_error") from e
    except EngineClosed as e:
      raise RequestError(str(e), status=503, code="shutting_down", kind="server_error") from e
    cid, created, req = protocol.completion_id(), int(time.time()), prepared.request
    name = service.model_name

    if req.stream:
      async def events():
        try:
          yield _sse(protocol.chunk_body(cid, name, created, {"role": "assistant",
                                                               "content": ""}))
          while True:
            event = await sink.next()
            if isinstance(event, Delta):
              yield _sse(protocol.chunk_body(cid, name, created, {"content": event.text}))
            elif isinstance(event, Failed):
              yield _sse(RequestError(event.message, status=500, kind="server_error").body())
              return
            elif isinstance(event, Done):
              c = event.completion
              yield _sse(protocol.chunk_body(cid, name, created, {},
                                             _FINISH[c.finish_reason]))
              if req.include_usage:
                yield _sse(protocol.chunk_body(
                    cid, name, created, {}, usage_=protocol.usage(
                        c.prompt_tokens, len(c.tokens), c.cached_tokens), with_choice=False))
              yield "data: [DONE]\n\n"
              return
        finally:  # also when the client disconnects (the task is cancelled)
          handle.cancel()
      return StreamingResponse(events(), media_type="text/event-stream",
                               headers={"Cache-Control": "no-cache"})

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
    return protocol.completion_body(cid, name, c.text, _FINISH[c.finish_reason],
                                    protocol.usage(c.prompt_tokens, len(c.tokens),
                                                   c.cached_tokens))

  return app

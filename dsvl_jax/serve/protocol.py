"""OpenAI chat-completions requests in, our prompt and sampling out; responses back.

A request body becomes a `ChatRequest`: messages in our conversation form (an image
part becomes `<image_placeholder>` where it stands among the text parts, so the usual
[image, text] content puts the image first, as the chat CLI does), the image URLs (the
service decodes them through serve/images.py), a system prompt (a leading system message
replaces the config's), and sampling. Everything a client can get wrong raises
`RequestError`, which the server turns into OpenAI's error body with status 400 (or the
status it carries).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import sys
import time
from typing import Any

from dsvl_jax.processor.conversation import Message
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN


class RequestError(Exception):
  """A bad request: `status`, a message for the client, the offending `param`."""

  def __init__(
      self,
      message: str,
      status: int = 400,
      param: str | None = None,
      code: str | None = None,
      kind: str = "invalid_request_error",
  ):
    super().__init__(message)
    self.message, self.status, self.param, self.code, self.kind = (
        message,
        status,
        param,
        code,
        kind,
    )

  def body(self) -> dict[str, Any]:
    return {
        "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }
    }


@dataclasses.dataclass(frozen=True)
class Limits:
  max_images: int  # per request
  max_tokens: int  # the largest max_tokens a request may ask for
  default_max_tokens: int  # when a request names none


@dataclasses.dataclass(frozen=True)
class Defaults:
  temperature: float
  top_p: float
  repetition_penalty: float


@dataclasses.dataclass
class ChatRequest:
  model: str | None
  messages: list[Message]
  system: str | None  # None: the configured system prompt
  image_urls: list[tuple[str, str]]  # (url, the part naming it), decoded by the service
  temperature: float
  top_p: float
  repetition_penalty: float
  max_tokens: int
  stop: tuple[str, ...]
  seed: int
  stream: bool
  include_usage: bool
  ignore_eos: bool  # an extension (as vLLM's): generate max_tokens whatever comes


# Fields clients send that change nothing here when left at their defaults.
_INERT = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": None,
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logit_bias": None,
    "user": None,
    "response_format": None,
    "tools": None,
    "tool_choice": None,
    "parallel_tool_calls": None,
    "store": None,
    "metadata": None,
    "service_tier": None,
    "functions": None,
    "function_call": None,
    "modalities": None,
    "reasoning_effort": None,
}
# Fields this server reads; anything else (a typo, another server's extension) is
# refused by name rather than silently ignored.
_READ = {
    "messages",
    "model",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "repetition_penalty",
    "ignore_eos",
}
# OpenAI's seed is a 64-bit integer; a longer one is a client bug, not a seed.
_SEED_RANGE = (-(1 << 63), (1 << 64) - 1)


# Values a body may hold, counted before parsing as the commas and opening brackets
# outside strings: a conversation needs a few per turn, while 32 MiB of `{},` would
# parse into ~10 M objects (gigabytes of Python objects from a body under the cap).
MAX_JSON_VALUES = 100_000
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Raw UTF-8 cannot hold a surrogate (the decoder refuses it); only a \uD800-\uDFFF escape
# can, so bodies without one skip the walk over every string.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constant(name: str):
  raise ValueError(f"{name} is not a JSON number")


def _json_values(raw: bytes | bytearray) -> int:
  """Commas and opening brackets outside strings (at least the values less one), counted
  in place: no copy of the body, at most MAX_JSON_VALUES strings visited."""

  def count(start: int, end: int) -> int:
    return sum(raw.count(c, start, end) for c in (b",", b"{", b"["))

  n = count(0, len(raw))
  if n <= MAX_JSON_VALUES:
    return n
  if raw.count(b'"') > 2 * MAX_JSON_VALUES:  # that many strings are too many values
    return raw.count(b'"') // 2
  return n - sum(count(*m.span()) for m in _STRING.finditer(raw))


def parse_body(raw: bytes | bytearray) -> dict[str, Any]:
  """The body's JSON object; every way it can be malformed raises RequestError."""
  if _json_values(raw) > MAX_JSON_VALUES:
    raise RequestError(
        f"the request body holds more than {MAX_JSON_VALUES} JSON values",
        code="too_many_json_values",
    )
  try:
    body = json.loads(raw, parse_constant=_no_constant)
  # JSONDecodeError and UnicodeDecodeError are ValueErrors, and so is Python's limit on
  # digits in an integer (4,300); a deeply nested body exhausts the recursion limit.
  except (ValueError, RecursionError) as e:
    reason = "it nests too deeply" if isinstance(e, RecursionError) else str(e)[:200]
    raise RequestError(f"the request body is not valid JSON: {reason}") from e
  if not isinstance(body, dict):
    raise RequestError("the request body must be a JSON object")
  where = _lone_surrogate(body) if _SURROGATE_ESCAPE.search(raw) else None
  if where is not None:
    raise RequestError(
        f"{where} holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not Unicode text",
        param=where,
    )
  return body


def _lone_surrogate(body: dict[str, Any]) -> str | None:
  """The path of the first string (key or value) that is not valid Unicode, or None.
  The path itself is made printable (it goes back in the error body)."""
  stack: list[tuple[str, Any]] = [("", body)]
  while stack:
    where, value = stack.pop()
    if isinstance(value, str):
      try:
        value.encode("utf-8")
      except UnicodeEncodeError:
        return where or "the body"
    elif isinstance(value, dict):
      for k, v in value.items():
        key = k.encode("utf-8", "backslashreplace").decode("utf-8")[:80]
        here = f"{where}.{key}" if where else key
        stack += [(here, k), (here, v)]
    elif isinstance(value, list):
      stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
  return None


def _number(body, name, default, lo, hi, kind=float):
  value = body.get(name)
  if value is None:
    return default
  if (
      isinstance(value, bool)
      or not isinstance(value, (int, float))
      or (kind is int and isinstance(value, float) and not value.is_integer())
  ):
    raise RequestError(
        f"'{name}' must be a{'n integer' if kind is int else ' number'}, got {_short(value)}",
        param=name,
    )
  # Compared as given: Python orders ints of any size against floats exactly, where
  # float(value) would overflow on a 400-digit integer.
  if not lo <= value <= hi:
    raise RequestError(f"'{name}' must be in [{lo}, {hi}], got {_short(value)}", param=name)
  return kind(value)


def _short(value: Any) -> str:
  try:
    text = repr(value)
  except ValueError:  # an integer past Python's digit limit
    return f"an integer of more than {sys.get_int_max_str_digits()} digits"
  return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def parse_chat_request(body: dict[str, Any], limits: Limits, defaults: Defaults) -> ChatRequest:
  """Validates an OpenAI chat-completions body. Images are only named here: the service
  decodes them after the cheaper checks."""
  for name in body:
    if name not in _READ and name not in _INERT:
      raise RequestError(
          f"'{_short(name)[1:-1]}' is not a field this server knows", param=str(name)[:80]
      )
  for name, inert in _INERT.items():
    value = body.get(name)
    if value is not None and value != inert and value != [] and value != {}:
      raise RequestError(f"'{name}'={_short(value)} is not supported by this server", param=name)
  messages = body.get("messages")
  if not isinstance(messages, list) or not messages:
    raise RequestError("'messages' must be a non-empty list", param="messages")
  system, turns, images = None, [], []
  for i, msg in enumerate(messages):
    where = f"messages[{i}]"
    if not isinstance(msg, dict):
      raise RequestError(f"{where} must be an object", param=where)
    role = msg.get("role")
    if role in ("system", "developer"):
      if turns or system is not None:
        raise RequestError(f"{where}: a system message must come first (and once)", param=where)
      system = _text_only(msg.get("content"), where)
      continue
    if role not in ("user", "assistant"):
      raise RequestError(
          f"{where}: role {role!r} is not supported (system, user, assistant)",
          param=f"{where}.role",
      )
    content = msg.get("content")
    if role == "assistant":
      turns.append(Message("assistant", _text_only(content, where)))
      continue
    text, urls = _user_content(content, where)
    for url, param in urls:
      if len(images) >= limits.max_images:
        raise RequestError(
            f"too many images: at most {limits.max_images} per request (serve.max_images)",
            param=param,
            code="too_many_images",
        )
      images.append((url, param))
    turns.append(Message("user", text))
  if not turns or turns[-1].role != "user":
    raise RequestError("the last message must be the user's", param="messages")
  for i, m in enumerate(turns):
    if m.role != ("user" if i % 2 == 0 else "assistant"):
      raise RequestError(
          "after the system message, roles must alternate user, assistant, user, ...",
          param="messages",
      )
  max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
  max_tokens = _number(
      {"max_tokens": max_tokens}, "max_tokens", limits.default_max_tokens, 1, limits.max_tokens, int
  )
  stop = body.get("stop")
  if stop is None:
    stop = ()
  elif isinstance(stop, str):
    stop = (stop,)
  elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
    stop = tuple(stop)
  else:
    raise RequestError("'stop' must be a string or a list of up to 4 strings", param="stop")
  if any(not s for s in stop):
    raise RequestError("'stop' strings must not be empty", param="stop")
  seed = body.get("seed")
  if seed is None:
    seed = secrets.randbits(31)
  elif isinstance(seed, bool) or not isinstance(seed, int):
    raise RequestError(f"'seed' must be an integer, got {_short(seed)}", param="seed")
  elif not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]:
    raise RequestError(f"'seed' must be a 64-bit integer, got {_short(seed)}", param="seed")
  stream = body.get("stream", False)
  if not isinstance(stream, bool):
    raise RequestError("'stream' must be true or false", param="stream")
  options = body.get("stream_options") or {}
  if not isinstance(options, dict):
    raise RequestError("'stream_options' must be an object", param="stream_options")
  ignore_eos = body.get("ignore_eos", False)
  if not isinstance(ignore_eos, bool):
    raise RequestError("'ignore_eos' must be true or false", param="ignore_eos")
  model = body.get("model")
  if model is not None and not isinstance(model, str):
    raise RequestError("'model' must be a string", param="model")
  return ChatRequest(
      model=model,
      messages=turns,
      system=system,
      image_urls=images,
      temperature=_number(body, "temperature", defaults.temperature, 0.0, 2.0),
      top_p=_number(body, "top_p", defaults.top_p, 1e-6, 1.0),
      repetition_penalty=_number(
          body, "repetition_penalty", defaults.repetition_penalty, 0.01, 10.0
      ),
      max_tokens=max_tokens,
      stop=stop,
      seed=seed & 0x7FFFFFFF,
      stream=stream,
      include_usage=bool(options.get("include_usage", False)),
      ignore_eos=ignore_eos,
  )


def _text_only(content, where: str) -> str:
  if isinstance(content, str):
    return content
  if isinstance(content, list):
    texts = []
    for j, part in enumerate(content):
      if not isinstance(part, dict) or part.get("type") != "text":
        raise RequestError(
            f"{where}.content[{j}]: only text parts are allowed here", param=f"{where}.content"
        )
      texts.append(_part_text(part, f"{where}.content[{j}]"))
    return "".join(texts)
  raise RequestError(
      f"{where}.content must be a string or a list of parts", param=f"{where}.content"
  )


def _part_text(part, where: str) -> str:
  text = part.get("text")
  if not isinstance(text, str):
    raise RequestError(f"{where}: a text part needs a string 'text'", param=where)
  if IMAGE_TOKEN in text:
    raise RequestError(
        f"{where}: the text holds {IMAGE_TOKEN!r}; send images as image_url parts", param=where
    )
  return text


def _user_content(content, where: str) -> tuple[str, list[tuple[str, str]]]:
  if isinstance(content, str):
    return _part_text({"text": content}, f"{where}.content"), []
  if not isinstance(content, list) or not content:
    raise RequestError(
        f"{where}.content must be a string or a non-empty list of parts", param=f"{where}.content"
    )
  pieces, urls = [], []
  for j, part in enumerate(content):
    here = f"{where}.content[{j}]"
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
      pieces.append(_part_text(part, here))
    elif kind == "image_url":
      spec = part.get("image_url")
      url = spec.get("url") if isinstance(spec, dict) else spec
      if not isinstance(url, str) or not url:
        raise RequestError(f"{here}: image_url needs a 'url' string", param=here)
      urls.append((url, here))
      pieces.append(IMAGE_TOKEN)
    else:
      raise RequestError(
          f"{here}: part type {kind!r} is not supported (text, image_url)", param=here
      )
  return "".join(pieces), urls


# -- responses --------------------------------------------------------------------------


def completion_id() -> str:
  return "chatcmpl-" + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
  return {
      "prompt_tokens": prompt_tokens,
      "completion_tokens": completion_tokens,
      "total_tokens": prompt_tokens + completion_tokens,
      "prompt_tokens_details": {"cached_tokens": cached_tokens},
  }


def completion_body(
    cid: str, model: str, text: str, finish_reason: str, usage_: dict[str, Any]
) -> dict[str, Any]:
  return {
      "id": cid,
      "object": "chat.completion",
      "created": int(time.time()),
      "model": model,
      "choices": [
          {
              "index": 0,
              "message": {"role": "assistant", "content": text},
              "finish_reason": finish_reason,
              "logprobs": None,
          }
      ],
      "usage": usage_,
  }


def chunk_body(
    cid: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage_: dict[str, Any] | None = None,
    with_choice: bool = True,
) -> dict[str, Any]:
  body = {
      "id": cid,
      "object": "chat.completion.chunk",
      "created": created,
      "model": model,
      "choices": (
          [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
          if with_choice
          else []
      ),
  }
  if usage_ is not None:
    body["usage"] = usage_
  return body

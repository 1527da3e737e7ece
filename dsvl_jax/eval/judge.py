"""An LLM judge: any OpenAI-compatible chat endpoint, this project's own server included.

MM-Vet is graded by one; MMBench, SEED-Bench and MathVista ask one only when their rule
cannot extract an answer from the text (their `judge` hooks, benchmarks/*.py). A
benchmark sees the judge as `ask(prompt, max_tokens, temperature) -> reply`: one user
message, the reply's text. The endpoint is given by its base URL (".../v1"), the model
name and an API key read from an environment variable, so a key never lands in a
config file, eval.json or a run record.

  judge = Judge("http://127.0.0.1:8000/v1", "dsvl-1.3b-chat", api_key="")
  judge("Question | Ground truth | Prediction | Correctness ...", max_tokens=3)

A request that fails (connection, HTTP status, a reply without a message) is retried
`retries` times with a doubling pause, then raises JudgeError: the evaluation stops
with the predictions written so far kept, and a rerun resumes from them.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


class JudgeError(RuntimeError):
  """The judge endpoint did not answer (after its retries); the message says why."""


class Judge:
  """Sends chat completions to `url` + "/chat/completions" for `model`."""

  def __init__(
      self,
      url: str,
      model: str,
      api_key: str = "",
      *,
      timeout_s: float = 120.0,
      retries: int = 3,
      pause_s: float = 1.0,
      max_tokens_cap: int = 0,
  ):
    """max_tokens_cap: the most tokens any request asks for (0 = what the benchmark's
    rule asks: its replies are short, the rule's limit is a ceiling, not a length)."""
    if not url.startswith(("http://", "https://")):
      raise ValueError(f"judge url {url!r}: expected http(s)://host[:port]/v1")
    self.url, self.model, self.api_key = url.rstrip("/"), model, api_key
    self.timeout_s, self.retries, self.pause_s = timeout_s, retries, pause_s
    self.max_tokens_cap = max_tokens_cap
    self.calls = 0  # requests answered (a benchmark's log counts its own)

  @property
  def name(self) -> str:
    """What judged: recorded in every judged summary and in the run record."""
    cap = f" (max_tokens <= {self.max_tokens_cap})" if self.max_tokens_cap else ""
    return f"{self.model} @ {self.url}{cap}"

  def __call__(self, prompt: str, max_tokens: int = 1024, temperature: float = 0.0) -> str:
    body = {
        "model": self.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": min(max_tokens, self.max_tokens_cap or max_tokens),
        "temperature": temperature,
    }
    why = ""
    for attempt in range(self.retries + 1):
      if attempt:
        time.sleep(self.pause_s * 2 ** (attempt - 1))
      try:
        reply = self._post(body)
      except _Retryable as e:
        why = str(e)
        continue
      self.calls += 1
      return reply
    raise JudgeError(f"judge {self.name}: no answer after {self.retries + 1} tries ({why})")

  def _post(self, body: dict[str, Any]) -> str:
    headers = {"Content-Type": "application/json"}
    if self.api_key:
      headers["Authorization"] = f"Bearer {self.api_key}"
    request = urllib.request.Request(
        self.url + "/chat/completions", json.dumps(body).encode(), headers, method="POST"
    )
    try:
      with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
        data = json.loads(response.read())
    except urllib.error.HTTPError as e:
      detail = e.read()[:300].decode("utf-8", "replace")
      if e.code in (429,) or e.code >= 500:
        raise _Retryable(f"HTTP {e.code}: {detail}") from e
      # A request the endpoint refuses (bad model name, bad key) will not improve.
      raise JudgeError(f"judge {self.name}: HTTP {e.code}: {detail}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
      raise _Retryable(f"{type(e).__name__}: {e}") from e
    except json.JSONDecodeError as e:
      raise _Retryable(f"a reply that is not JSON: {e}") from e
    try:
      content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
      raise _Retryable(f"a reply without choices[0].message.content: {str(data)[:200]}") from e
    return content if isinstance(content, str) else ""


class _Retryable(Exception):
  pass

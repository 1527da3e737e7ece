"""The OpenAI-compatible server on loopback, driven by the official `openai` client:
completions equal Generator.generate on the same prompt; every bad request gets its
status and message and the server goes on serving; a closed connection frees its slot."""

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from serve_fixtures import data_uri, drawn_image, running_server, serve_config

from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.load import load_model
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.infer.streaming import cut_at_stop
from dsvl_jax.processor.conversation import Message, encode_conversation, template_for
from dsvl_jax.processor.image_processor import ImageProcessorConfig, process_batch

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory, monkeypatch_module):
  images = tmp_path_factory.mktemp("images")
  drawn_image(1).save(images / "one.png")
  (images.parent / "secret.png").write_bytes((images / "one.png").read_bytes())
  monkeypatch_module.setenv("DSVL_TEST_KEY", KEY)
  config = serve_config(
      image_dir=str(images), api_key_env="DSVL_TEST_KEY", max_images=2, max_queue=64
  )
  _, params = load_model(config, config.serve, "serve")  # the same random init the server made
  with running_server(config) as (url, service):
    gen = Generator(service.cfg, params, prompt_bucket=config.serve.prompt_bucket)
    yield url, service, gen, images


@pytest.fixture(scope="module")
def monkeypatch_module():
  mp = pytest.MonkeyPatch()
  yield mp
  mp.undo()


def _client(url, **kw):
  return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120, **kw)


def _expected(service, gen, turns, images, sampling, system="default"):
  """Generator.generate on the prompt the chat CLI would build (the released system
  prompt, images first), cut at the stop strings and stripped."""
  enc = encode_conversation(
      turns,
      service.tokenizer,
      service.cfg,
      add_generation_prompt=True,
      template=template_for(system),
  )
  pixels = process_batch(images, ImageProcessorConfig.for_model(service.cfg)) if images else None
  out = gen.generate(
      enc.ids[None], images=pixels, sampling=sampling, decode=service.tokenizer.decode
  )
  tokens = out.tokens[0]
  return (
      cut_at_stop(service.tokenizer.decode(tokens), sampling.stop_strings).strip(),
      tokens,
      len(enc.ids),
  )


def test_plain_request_equals_generate(server):
  url, service, gen, _ = server
  r = _client(url).chat.completions.create(
      model=service.model_name,
      messages=[{"role": "user", "content": "hello there"}],
      temperature=0,
      max_tokens=12,
      extra_body={"repetition_penalty": 1.0},
  )
  text, tokens, n_prompt = _expected(
      service,
      gen,
      [Message("user", "hello there")],
      [],
      SamplingConfig(temperature=0, max_new_tokens=12, stop_strings=STOP_STRINGS),
  )
  assert r.choices[0].message.content == text
  assert r.choices[0].message.role == "assistant"
  assert r.usage.prompt_tokens == n_prompt and r.usage.completion_tokens == len(tokens)
  assert r.choices[0].finish_reason == ("length" if len(tokens) == 12 else "stop")
  assert r.model == service.model_name


def test_streamed_request_with_an_image_equals_generate(server):
  url, service, gen, _ = server
  img = drawn_image(2)
  stream = _client(url).chat.completions.create(
      model=service.model_name,
      stream=True,
      stream_options={"include_usage": True},
      messages=[
          {
              "role": "user",
              "content": [
                  {"type": "image_url", "image_url": {"url": data_uri(img)}},
                  {"type": "text", "text": "what is this?"},
              ],
          }
      ],
      temperature=0,
      max_tokens=16,
      extra_body={"repetition_penalty": 1.0},
  )
  chunks = list(stream)
  text, tokens, n_prompt = _expected(
      service,
      gen,
      [Message("user", "<image_placeholder>what is this?")],
      [img],
      SamplingConfig(temperature=0, max_new_tokens=16, stop_strings=STOP_STRINGS),
  )
  deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
  assert "".join(deltas) == text
  assert chunks[0].choices[0].delta.role == "assistant"
  finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
  assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])
  assert chunks[-1].usage.prompt_tokens == n_prompt  # the include_usage chunk
  assert chunks[-1].usage.completion_tokens == len(tokens)


def test_multi_image_seeded_sampling_equals_generate(server):
  url, service, gen, images = server
  first, second = drawn_image(3), drawn_image(1)  # the second is images/one.png
  r = _client(url).chat.completions.create(
      model=service.model_name,
      temperature=0.9,
      top_p=0.8,
      seed=1234,
      max_tokens=10,
      messages=[
          {"role": "system", "content": "You compare pictures."},
          {
              "role": "user",
              "content": [
                  {"type": "text", "text": "compare "},
                  {"type": "image_url", "image_url": {"url": data_uri(first)}},
                  {"type": "text", "text": " with "},
                  {"type": "image_url", "image_url": {"url": "one.png"}},
              ],
          },
          {"role": "assistant", "content": "they differ"},
          {"role": "user", "content": "how?"},
      ],
      stop=["zz"],
  )
  turns = [
      Message("user", "compare <image_placeholder> with <image_placeholder>"),
      Message("assistant", "they differ"),
      Message("user", "how?"),
  ]
  enc = encode_conversation(
      turns,
      service.tokenizer,
      service.cfg,
      add_generation_prompt=True,
      template=template_for("You compare pictures."),
  )
  sampling = SamplingConfig(
      temperature=0.9,
      top_p=0.8,
      repetition_penalty=1.1,
      seed=1234,
      max_new_tokens=10,
      stop_strings=STOP_STRINGS + ("zz",),
  )
  pixels = process_batch(
      [first, second.convert("RGB")], ImageProcessorConfig.for_model(service.cfg)
  )
  out = gen.generate(
      enc.ids[None], images=pixels, sampling=sampling, decode=service.tokenizer.decode
  )
  want = cut_at_stop(service.tokenizer.decode(out.tokens[0]), sampling.stop_strings).strip()
  assert r.choices[0].message.content == want
  assert r.usage.prompt_tokens == len(enc.ids)
  # a seeded request is reproducible
  again = _client(url).chat.completions.create(
      model=service.model_name,
      temperature=0.9,
      top_p=0.8,
      seed=1234,
      max_tokens=10,
      messages=[{"role": "user", "content": "how?"}],
  )
  twice = _client(url).chat.completions.create(
      model=service.model_name,
      temperature=0.9,
      top_p=0.8,
      seed=1234,
      max_tokens=10,
      messages=[{"role": "user", "content": "how?"}],
  )
  assert again.choices[0].message.content == twice.choices[0].message.content


def test_models_and_health(server):
  url, service, _, _ = server
  models = _client(url).models.list()
  assert [m.id for m in models.data] == [service.model_name]
  health = httpx.get(url + "/health").json()
  assert health["status"] == "ok" and health["slots"] == 4


def _post(url, body, key=KEY, raw=None):
  headers = {"Authorization": f"Bearer {key}"} if key else {}
  if raw is None:
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60)
  return httpx.post(
      url + "/v1/chat/completions",
      content=raw,
      headers={**headers, "Content-Type": "application/json"},
      timeout=60,
  )


def _user(*parts):
  return {"messages": [{"role": "user", "content": list(parts)}], "max_tokens": 4}


def _image(url):
  return {"type": "image_url", "image_url": {"url": url}}


TEXT = {"type": "text", "text": "what?"}
GARBAGE = "data:image/png;base64," + base64.b64encode(b"this is not a png at all").decode()


@pytest.mark.parametrize(
    "case,status,message",
    [
        ("malformed json", 400, "not valid JSON"),
        ("undecodable image", 400, "cannot be decoded as an image"),
        ("not base64", 400, "not valid base64"),
        ("too many images", 400, "too many images: at most 2"),
        ("outside the directory", 400, "outside the allowed image directory"),
        ("absolute path outside", 400, "outside the allowed image directory"),
        ("remote url", 400, "remote image URLs are not fetched"),
        ("max_tokens too large", 400, "'max_tokens' must be in [1, 64]"),
        ("prompt too long", 400, "more than the 256 of a slot"),
        ("bad role", 400, "role 'tool' is not supported"),
        ("no user last", 400, "the last message must be the user's"),
        ("unknown model", 404, "is not served here"),
        ("no key", 401, "a valid API key is needed"),
        ("wrong key", 401, "a valid API key is needed"),
    ],
)
def test_bad_requests_get_their_error_and_the_server_goes_on(server, case, status, message):
  url, service, _, _ = server
  bodies = {
      "undecodable image": _user(_image(GARBAGE), TEXT),
      "not base64": _user(_image("data:image/png;base64,@@@"), TEXT),
      "too many images": _user(*[_image(data_uri(drawn_image(i))) for i in range(3)], TEXT),
      "outside the directory": _user(_image("../secret.png"), TEXT),
      "absolute path outside": _user(_image("file:///etc/hostname"), TEXT),
      "remote url": _user(_image("https://example.com/cat.png"), TEXT),
      "max_tokens too large": {**_user(TEXT), "max_tokens": 65},
      "prompt too long": {
          "messages": [{"role": "user", "content": "word " * 60}],
          "max_tokens": 64,
      },
      "bad role": {"messages": [{"role": "tool", "content": "x"}]},
      "no user last": {
          "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
      },
      "unknown model": {**_user(TEXT), "model": "gpt-4o"},
  }
  if case == "malformed json":
    r = _post(url, None, raw=b'{"messages": [')
  elif case == "no key":
    r = _post(url, _user(TEXT), key=None)
  elif case == "wrong key":
    r = _post(url, _user(TEXT), key="nope")
  else:
    r = _post(url, bodies[case])
  assert r.status_code == status, r.text
  error = r.json()["error"]
  assert message in error["message"], error
  assert set(error) == {"message", "type", "param", "code"}
  # ... and the next good request is served
  ok = _post(url, {**_user(TEXT), "temperature": 0})
  assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_openai_client_raises_the_matching_errors(server):
  url, service, _, _ = server
  with pytest.raises(openai.BadRequestError, match="too many images"):
    _client(url).chat.completions.create(
        model=service.model_name,
        messages=[
            {"role": "user", "content": [_image(data_uri(drawn_image(i))) for i in range(3)]}
        ],
    )
  with pytest.raises(openai.AuthenticationError):
    openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()


def read_until_admitted(r: httpx.Response) -> Iterator[str]:
  """Reads a chat stream up to its first text (the role chunk is sent before the engine
  admits the request: on a loaded host it may still be queued then; text only comes from
  a slot). Returns the line iterator, which the caller must hold while the request should
  live: httpx closes the connection when it is collected (the server then cancels)."""
  lines = r.iter_lines()
  chunks: list[dict] = []
  for line in lines:
    if not line.startswith("data:"):
      continue
    chunks.append(json.loads(line[5:])["choices"][0]["delta"])
    if chunks[-1].get("content"):
      break
  assert chunks[0]["role"] == "assistant"
  return lines


def test_a_closed_stream_frees_its_slot(server):
  url, service, gen, _ = server
  prompt = "tell me everything"
  text, tokens, _ = _expected(
      service,
      gen,
      [Message("user", prompt)],
      [],
      SamplingConfig(temperature=0, max_new_tokens=64, stop_strings=STOP_STRINGS),
      system="",
  )
  assert len(tokens) == 64, "the test needs an answer that runs to max_tokens"
  before = service.engine.status()
  body = {
      "messages": [{"role": "system", "content": ""}, {"role": "user", "content": prompt}],
      "max_tokens": 64,
      "temperature": 0,
      "repetition_penalty": 1.0,
      "stream": True,
  }
  # After 16 steps the engine waits (up to 30 s) for the request to be cancelled: 64
  # tiny-model tokens take ~30 ms, less than the server takes to see a closed socket.
  engine, step, steps = service.engine, service.engine._step, iter(range(16))

  def held_step():
    deadline = time.time() + 30
    while (
        next(steps, None) is None
        and time.time() < deadline
        and not any(r is not None and r.cancelled for r in engine._slots)
    ):
      time.sleep(0.01)
    step()

  engine._step = held_step
  try:
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json=body,
        timeout=60,
        headers={"Authorization": f"Bearer {KEY}"},
    ) as r:
      assert r.status_code == 200
      read_until_admitted(r)  # what is cancelled below is a running request
    deadline = time.time() + 30  # the connection is closed: the slot frees within steps
    while time.time() < deadline:
      now = service.engine.status()
      if now.get("cancelled", 0) > before.get("cancelled", 0) and not now["busy"] + now["queued"]:
        break
      time.sleep(0.05)
  finally:
    engine._step = step  # the server is shared by this module's tests
  after = service.engine.status()
  assert after["busy"] == 0
  assert after["cancelled"] == before.get("cancelled", 0) + 1
  assert after["slot_steps"] - before.get("slot_steps", 0) < 64


def test_queue_full_is_429_and_the_server_recovers():
  config = serve_config(num_slots=1, max_queue=1, api_key_env="", max_len=1024, max_tokens=960)
  with running_server(config) as (url, service):
    # A long answer holds the one slot and a second one waits. The engine stops after 32
    # decode steps until released, far from 960 tokens: timing it would be a race, as
    # 960 tiny-model tokens take half a second; and an EOS must not end it early.
    # The gate holds until released (or 600 s): while it holds, the engine turns no more,
    # so nothing but this test changes what its status shows (a 60 s gate that timed
    # out on a loaded CI host let the engine go on and the check below read a moved queue).
    gate, step, steps = threading.Event(), service.engine._step, iter(range(32))
    service.engine._step = lambda: (next(steps, None) is None and gate.wait(600), step())
    hold = {
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": "tell me everything"},
        ],
        "max_tokens": 960,
        "temperature": 0,
        "repetition_penalty": 1.0,
        "stream": True,
        "ignore_eos": True,
    }
    with (
        contextlib.ExitStack() as release,
        httpx.stream("POST", url + "/v1/chat/completions", json=hold, timeout=300) as r,
    ):
      release.callback(gate.set)  # whatever fails below, the engine is let go
      assert r.status_code == 200
      # held open until the end (so the second one queues behind it)
      release.enter_context(contextlib.closing(read_until_admitted(r)))
      with httpx.stream("POST", url + "/v1/chat/completions", json=hold, timeout=300):
        deadline = time.time() + 120
        while service.engine.status()["queued"] < 1 and time.time() < deadline:
          time.sleep(0.02)
        assert service.engine.status()["queued"] == 1, service.engine.status()
        third = httpx.post(url + "/v1/chat/completions", json={**hold, "stream": False}, timeout=60)
        assert third.status_code == 429, third.text
        assert "serve.max_queue=1" in third.json()["error"]["message"]
        with pytest.raises(openai.RateLimitError):
          openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).chat.completions.create(
              model=service.model_name, messages=[{"role": "user", "content": "x"}]
          )
        gate.set()
    # both streams closed: their slots and queue places free, and serving goes on
    later = httpx.post(
        url + "/v1/chat/completions",
        timeout=60,
        json={"messages": [{"role": "user", "content": "and now?"}], "max_tokens": 3},
    )
    assert later.status_code == 200
    assert service.engine.status()["busy"] == 0

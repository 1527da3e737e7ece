"""Hostile requests against a running server: each gets its 4xx in OpenAI's error body
(never a 500), naming the field where there is one, and the next request on the same
keep-alive connection is served. An unexpected error is a 500 that drops no connection.

Requests go over http.client on one socket, so "the same connection" is checked as the
same socket object before and after (http.client opens a new one after a close)."""

import base64
import http.client
import io
import json
import logging
import os
import socket
import struct
import urllib.parse

import numpy as np
import pytest
from PIL import Image
from serve_fixtures import drawn_image, running_server, serve_config

BODY_CAP = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  root = tmp_path_factory.mktemp("hostile")
  images = root / "images"
  images.mkdir()
  drawn_image(1).save(images / "one.png")
  (root / "images-private").mkdir()  # a sibling whose name starts with the allowed one's
  drawn_image(2).save(root / "images-private" / "secret.png")
  os.symlink("loop_b", images / "loop_a")
  os.symlink("loop_a", images / "loop_b")
  config = serve_config(
      image_dir=str(images), api_key_env="", max_images=4, max_body_bytes=BODY_CAP
  )
  with running_server(config) as (url, service):
    yield url, service, images


class Connection:
  """One keep-alive HTTP/1.1 connection to the server."""

  def __init__(self, url):
    parts = urllib.parse.urlsplit(url)
    self.http = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

  def post(self, body=None, raw=None, content_type="application/json"):
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    self.http.request("POST", "/v1/chat/completions", body=data, headers=headers)
    r = self.http.getresponse()
    return r.status, json.loads(r.read() or b"null"), r.getheader("connection")

  @property
  def sock(self):
    return self.http.sock

  def close(self):
    self.http.close()


def _user(*parts, **fields):
  return {"messages": [{"role": "user", "content": list(parts)}], "max_tokens": 2, **fields}


def _image(url):
  return {"type": "image_url", "image_url": {"url": url}}


def _uri(data: bytes, media="image/png") -> str:
  return f"data:{media};base64," + base64.b64encode(data).decode()


def _saved(img: Image.Image, fmt: str) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format=fmt)
  return buf.getvalue()


def _damaged_second_idat() -> bytes:
  """A PNG of two IDAT chunks whose second has a damaged chunk type ('I' -> 0xC9)."""
  noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)
  data = bytearray(_saved(Image.fromarray(noise), "PNG"))
  second = data.index(b"IDAT", data.index(b"IDAT") + 4)
  data[second] ^= 0x80
  return bytes(data)


def test_the_damaged_png_is_one_pillow_fails_on_with_a_syntax_error():
  """The case above is the one users met: Pillow itself raises SyntaxError, which is no
  OSError, so only a loader that catches every decoder failure turns it into a 400."""
  with pytest.raises(SyntaxError, match="broken PNG file"):
    Image.open(io.BytesIO(_damaged_second_idat())).load()


def _huge_bilevel_png() -> bytes:
  """12000 x 12000 pixels in ~17 KiB: a 1-bit PNG compresses blank rows to nothing."""
  img = Image.new("1", (12000, 12000))
  img.paste(1, (0, 0, 64, 64))
  return _saved(img, "PNG")


def _qoi_fuzzed() -> bytes:  # a QOI header announcing more pixels than follow
  return b"qoif" + struct.pack(">IIBB", 64, 64, 3, 0) + bytes(range(200))


TEXT = {"type": "text", "text": "what?"}
MSG = '{"role": "user", "content": "hi"}'


def _cases(images):
  """name -> (request kwargs for Connection.post, status, message fragment, param)."""
  item = "messages[0].content[0]"
  return {
      "NUL in a path": (dict(body=_user(_image("one.png\x00.png"), TEXT)), 400, "NUL byte", item),
      "%00 in a file URL": (
          dict(body=_user(_image(f"file://{images}/one.png%00.jpg"), TEXT)),
          400,
          "NUL byte",
          item,
      ),
      "symlink loop": (dict(body=_user(_image("loop_a"), TEXT)), 400, "cannot be read", item),
      "5,000-character name": (
          dict(body=_user(_image("a" * 5000 + ".png"), TEXT)),
          400,
          "cannot be read",
          item,
      ),
      "sibling directory by ..": (
          dict(body=_user(_image("../images-private/secret.png"), TEXT)),
          400,
          "outside the allowed image directory",
          item,
      ),
      "sibling directory by file URL": (
          dict(body=_user(_image(f"file://{images}-private/secret.png"), TEXT)),
          400,
          "outside the allowed image directory",
          item,
      ),
      "QOI payload": (
          dict(body=_user(_image(_uri(_qoi_fuzzed())), TEXT)),
          400,
          "not an image of an accepted format",
          item,
      ),
      "BLP payload": (
          dict(body=_user(_image(_uri(_saved(Image.new("P", (16, 16)), "BLP")[:200])), TEXT)),
          400,
          "not an image of an accepted format",
          item,
      ),
      "SPIDER payload": (
          dict(body=_user(_image(_uri(_saved(Image.new("F", (16, 16)), "SPIDER")[:1100])), TEXT)),
          400,
          "not an image of an accepted format",
          item,
      ),
      "EPS payload": (
          dict(
              body=_user(
                  _image(_uri(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: " b"0 0 8 8\nshowpage\n")),
                  TEXT,
              )
          ),
          400,
          "not an image of an accepted format",
          item,
      ),
      "TIFF (valid, not accepted)": (
          dict(body=_user(_image(_uri(_saved(drawn_image(3), "TIFF"))), TEXT)),
          400,
          "not an image of an accepted format",
          item,
      ),
      "PNG with a damaged second IDAT": (
          dict(body=_user(_image(_uri(_damaged_second_idat())), TEXT)),
          400,
          "cannot be decoded as an image",
          item,
      ),
      "12000x12000 1-bit PNG": (
          dict(body=_user(_image(_uri(_huge_bilevel_png())), TEXT)),
          400,
          "more than the 50000000 allowed",
          item,
      ),
      "data:text/plain image": (
          dict(body=_user(_image(_uri(_saved(drawn_image(4), "PNG"), "text/plain")), TEXT)),
          400,
          "data:image/<type>;base64",
          item,
      ),
      "max_tokens of 401 digits": (
          dict(raw=('{"messages": [%s], "max_tokens": 1%s}' % (MSG, "0" * 400)).encode()),
          400,
          "'max_tokens' must be in [1, 64]",
          "max_tokens",
      ),
      "5,000-digit seed": (
          dict(raw=('{"messages": [%s], "seed": %s}' % (MSG, "7" * 5000)).encode()),
          400,
          "not valid JSON",
          None,
      ),
      "seed past 64 bits": (
          dict(body=_user(TEXT, seed=1 << 70)),
          400,
          "'seed' must be a 64-bit integer",
          "seed",
      ),
      "NaN temperature": (
          dict(raw=('{"messages": [%s], "temperature": NaN}' % MSG).encode()),
          400,
          "NaN is not a JSON number",
          None,
      ),
      "100,000-deep nesting": (
          dict(raw=b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
          400,
          "more than 100000 JSON values",
          None,
      ),
      "20,000-deep nesting": (
          dict(raw=b'{"messages": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"),
          400,
          "nests too deeply",
          None,
      ),
      "300,000 JSON values under the body cap": (
          dict(raw=b'{"messages": [%s], "stop": [%s{}]}' % (MSG.encode(), b"{}," * 300_000)),
          400,
          "more than 100000 JSON values",
          None,
      ),
      "commas and brackets inside text are not values": (
          dict(body={"messages": [{"role": "user", "content": "{[," * 100_000}]}),
          400,
          "300000 characters of text",
          "messages",
      ),
      "lone surrogate in a message": (
          dict(raw=b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}'),
          400,
          "lone UTF-16 surrogate",
          "messages[0].content",
      ),
      "lone surrogate in a key": (
          dict(raw=b'{"messages": [{"role": "user", "content": "hi"}], "x\\udfff": 1}'),
          400,
          "lone UTF-16 surrogate",
          "x\\udfff",
      ),
      "text/plain body": (
          dict(body=_user(TEXT), content_type="text/plain"),
          415,
          "Content-Type: application/json",
          None,
      ),
      "form body": (
          dict(body=_user(TEXT), content_type="application/x-www-form-urlencoded"),
          415,
          "Content-Type: application/json",
          None,
      ),
      "no content type": (
          dict(body=_user(TEXT), content_type=None),
          415,
          "Content-Type: application/json",
          None,
      ),
      "functions": (
          dict(body=_user(TEXT, functions=[{"name": "f", "parameters": {}}])),
          400,
          "'functions'",
          "functions",
      ),
      "function_call": (
          dict(body=_user(TEXT, function_call="auto")),
          400,
          "'function_call'",
          "function_call",
      ),
      "unknown field": (dict(body=_user(TEXT, top_k=5)), 400, "'top_k' is not a field", "top_k"),
  }


CASES = list(_cases("IMAGES"))


@pytest.mark.parametrize("case", CASES)
def test_hostile_request_gets_its_4xx_and_the_connection_serves_on(server, case):
  url, service, images = server
  kwargs, status, message, param = _cases(images)[case]
  conn = Connection(url)
  try:
    ok_status, _, _ = conn.post(_user(TEXT, temperature=0))
    assert ok_status == 200
    sock = conn.sock
    got, body, _ = conn.post(**kwargs)
    assert got == status, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert message in body["error"]["message"], body
    if param is not None:
      assert body["error"]["param"] == param, body
    again, answer, _ = conn.post(_user(TEXT, temperature=0))
    assert again == 200, answer
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    assert conn.sock is sock, "the server closed the keep-alive connection"
  finally:
    conn.close()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_every_accepted_format_is_served(server, fmt):
  url, _, _ = server
  conn = Connection(url)
  try:
    got, body, _ = conn.post(_user(_image(_uri(_saved(drawn_image(5), fmt))), TEXT))
    assert got == 200, body
  finally:
    conn.close()


def _raw_exchange(url, head: bytes, chunks=()) -> bytes:
  """Sends a request head and body chunks on a raw socket (the server may stop reading
  and close first), then reads the whole answer until the server closes."""
  parts = urllib.parse.urlsplit(url)
  with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
    s.sendall(head)
    try:
      for chunk in chunks:
        s.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
      pass  # refused before the body was read: expected
    answer = b""
    while True:
      try:
        data = s.recv(65536)
      except ConnectionResetError:
        break
      if not data:
        break
      answer += data
  return answer


def _status_and_error(answer: bytes):
  head, _, body = answer.partition(b"\r\n\r\n")
  lines = head.decode().split("\r\n")
  headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
  return int(lines[0].split()[1]), headers, json.loads(body)["error"]


def test_a_body_over_the_cap_is_refused_from_its_length_without_being_sent(server):
  url, _, _ = server
  head = (
      b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
      b"\r\nContent-Length: %d\r\n\r\n" % (50 << 20)
  )
  status, headers, error = _status_and_error(_raw_exchange(url, head))  # no body sent
  assert status == 413 and error["code"] == "body_too_large"
  assert f"larger than {BODY_CAP} bytes" in error["message"]
  assert headers["connection"] == "close"


def test_a_chunked_body_is_refused_once_past_the_cap(server):
  url, service, _ = server
  head = (
      b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
      b"\r\nTransfer-Encoding: chunked\r\n\r\n"
  )
  piece = b"x" * 65536
  chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
  # Far more than the cap; the server answers after ~cap bytes and closes.
  status, headers, error = _status_and_error(_raw_exchange(url, head, [chunk] * 64))
  assert status == 413 and error["code"] == "body_too_large"
  assert headers["connection"] == "close"
  conn = Connection(url)  # and a new connection is served
  try:
    assert conn.post(_user(TEXT))[0] == 200
  finally:
    conn.close()


def test_text_that_cannot_fit_is_refused_before_tokenising(server, monkeypatch):
  url, service, _ = server
  calls = []
  encode = service.tokenizer.encode
  monkeypatch.setattr(
      service.tokenizer, "encode", lambda *a, **k: calls.append(1) or encode(*a, **k)
  )
  conn = Connection(url)
  try:
    got, body, _ = conn.post({"messages": [{"role": "user", "content": "word " * 100_000}]})
    assert got == 400 and body["error"]["code"] == "context_length_exceeded", body
    assert "500000 characters of text" in body["error"]["message"]
    assert not calls, "the text was tokenised before it was refused"
    got, body, _ = conn.post(_user(TEXT))  # a short one is tokenised and served
    assert got == 200 and calls
  finally:
    conn.close()


def test_an_unexpected_error_is_a_500_that_drops_no_connection(server, monkeypatch, caplog):
  url, service, _ = server
  prepare = service.prepare

  def failing(body):
    if body["messages"][0]["content"] == "explode":
      raise KeyError("a bug while preparing")
    return prepare(body)

  monkeypatch.setattr(service, "prepare", failing)
  first, other = Connection(url), Connection(url)
  try:
    assert first.post(_user(TEXT))[0] == 200
    assert other.post(_user(TEXT))[0] == 200
    sockets = first.sock, other.sock
    with caplog.at_level(logging.ERROR):
      got, body, connection = first.post({"messages": [{"role": "user", "content": "explode"}]})
    assert got == 500 and connection != "close"
    assert body["error"]["type"] == "server_error"
    assert "a bug while preparing" not in body["error"]["message"]  # generic to the client
    assert "KeyError: 'a bug while preparing'" in caplog.text  # the traceback, in the log
    assert "Traceback" in caplog.text
    assert first.post(_user(TEXT))[0] == 200
    assert other.post(_user(TEXT))[0] == 200
    assert (first.sock, other.sock) == sockets
  finally:
    first.close()
    other.close()

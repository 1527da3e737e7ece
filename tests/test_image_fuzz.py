"""Mutated images (bit flips and truncations of valid PNG, JPEG, WebP, GIF and BMP files,
from a fixed seed) through the decoder, the server and the training pipeline: each one
is decoded into a usable image or refused as bad data (an OSError, a 400 `invalid_image`,
a `bad_image` skip); nothing else (issue 23)."""

import base64
import io
import json
import re
import struct
import zlib

import httpx
import numpy as np
import pytest
from data_fixtures import IMAGE_TOKEN, byte_tokenizer, data_config, layout, write_manifest
from PIL import Image
from serve_fixtures import data_uri, drawn_image, running_server, serve_config

from dsvl_jax.data.pipeline import TrainDataset, valid_images
from dsvl_jax.processor.image_processor import load_image, process_uint8

SEED = 23
PER_FORMAT = 52  # 208 mutants of the four required formats, 260 with BMP
# Pillow format -> (MIME subtype, file suffix)
FORMATS = {
    "PNG": ("png", "png"),
    "JPEG": ("jpeg", "jpg"),
    "WEBP": ("webp", "webp"),
    "GIF": ("gif", "gif"),
    "BMP": ("bmp", "bmp"),
}
# Mutation kinds, dealt in turn: flip 1-8 bits or truncate, anywhere or in a byte range
# of `_regions`. "+crc" (PNG) recomputes the chunk CRCs, so the flip reaches the decoder
# instead of stopping at the checksum. Truncations inside the data keep a valid header.
KINDS = {
    "PNG": (
        "flip",
        "flip-header",
        "flip-ihdr+crc",
        "flip-data",
        "flip-data+crc",
        "truncate",
        "truncate-data",
    )
}
OTHER_KINDS = ("flip", "flip", "flip-header", "flip-data", "truncate", "truncate-data")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _seed_image() -> Image.Image:
  """drawn_image's rectangle over a gradient and a few lines: enough structure that each
  encoder emits real entropy-coded data, still small."""
  arr = np.array(drawn_image(SEED))
  arr[20:, :, 0] = np.linspace(0, 255, arr.shape[1], dtype=np.uint8)
  arr[::7, :, 2] = 40
  return Image.fromarray(arr)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
  """(type, payload) of each chunk of a well-formed PNG."""
  assert data.startswith(PNG_SIGNATURE)
  pos, chunks = len(PNG_SIGNATURE), []
  while pos < len(data):
    (n,) = struct.unpack(">I", data[pos : pos + 4])
    chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
    pos += 12 + n
  return chunks


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
  return PNG_SIGNATURE + b"".join(
      struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks
  )


def _encode(fmt: str) -> bytes:
  buf = io.BytesIO()
  _seed_image().save(buf, format=fmt)
  data = buf.getvalue()
  if fmt == "PNG":
    # Pillow writes one IDAT per 64 KiB; libpng-style files carry many. Splitting the
    # zlib stream over three chunks (legal PNG) lets a mutation land in a middle one.
    chunks = _png_chunks(data)
    idat = b"".join(d for t, d in chunks if t == b"IDAT")
    cut = len(idat) // 3
    rest = [c for c in chunks if c[0] not in (b"IDAT", b"IEND")]
    data = _png(
        rest
        + [
            (b"IDAT", idat[:cut]),
            (b"IDAT", idat[cut : 2 * cut]),
            (b"IDAT", idat[2 * cut :]),
            (b"IEND", b""),
        ]
    )
  return data


def _regions(fmt: str, data: bytes) -> dict[str, range]:
  """Byte ranges of a seed file: "header" describes the image, "data" holds the coded
  pixels (for PNG the second IDAT's payload), and for PNG "ihdr" is IHDR's payload."""
  if fmt == "PNG":
    start, idats = len(PNG_SIGNATURE), 0
    for t, d in _png_chunks(data):
      idats += t == b"IDAT"
      if idats == 2:
        break
      start += 12 + len(d)
    assert idats == 2, "the PNG seed has one IDAT"
    # signature + IHDR (length, type, 13 bytes, CRC)
    return {
        "header": range(0, 33),
        "ihdr": range(16, 29),
        "data": range(start + 8, start + 8 + len(d)),
    }
  if fmt == "JPEG":  # everything up to the scan (SOI, APP0, DQT, SOF, DHT, SOS)
    sos = data.index(b"\xff\xda")
    scan = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    return {"header": range(0, scan), "data": range(scan, len(data) - 2)}
  if fmt == "WEBP":  # RIFF, the VP8 chunk header and the frame header with the sizes
    return {"header": range(0, 30), "data": range(30, len(data))}
  if fmt == "GIF":  # screen descriptor, palette, extensions, image descriptor; then LZW
    flags = data[10]
    palette = 3 << ((flags & 7) + 1) if flags & 0x80 else 0
    desc = data.index(b",", 13 + palette)
    return {"header": range(0, desc + 10), "data": range(desc + 10, len(data) - 1)}
  if fmt == "BMP":  # file and info headers
    return {"header": range(0, 54), "data": range(54, len(data))}
  raise ValueError(fmt)


def _mutate(fmt: str, kind: str, data: bytes, rng: np.random.Generator) -> bytes:
  regions = {"": range(0, len(data)), **_regions(fmt, data)}
  op, _, where = kind.removesuffix("+crc").partition("-")
  span = regions[where]
  if op == "truncate":
    return data[: int(rng.integers(span.start, span.stop))]
  out = np.frombuffer(data, np.uint8).copy()
  bits = rng.choice(len(span) * 8, size=int(rng.integers(1, 9)), replace=False)
  np.bitwise_xor.at(out, span.start + bits // 8, (1 << (bits % 8)).astype(np.uint8))
  if kind.endswith("+crc"):  # flips inside one chunk's payload: the lengths still hold
    return _png(_png_chunks(out.tobytes()))
  return out.tobytes()


def _mutants() -> list[tuple[str, str, bytes]]:
  """(format, kind, bytes), PER_FORMAT distinct ones of each format."""
  rng = np.random.default_rng(SEED)
  out, seen = [], set()
  for fmt in FORMATS:
    seed = _encode(fmt)
    kinds = KINDS.get(fmt, OTHER_KINDS)
    for i in range(PER_FORMAT):
      kind = kinds[i % len(kinds)]
      mutant = _mutate(fmt, kind, seed, rng)
      while mutant in seen:  # two truncations at one length
        mutant = _mutate(fmt, kind, seed, rng)
      seen.add(mutant)
      out.append((fmt, kind, mutant))
  return out


MUTANTS = _mutants()


def test_the_seeds_are_valid_files_and_every_mutant_differs():
  """The premises, checked with Pillow alone: each seed is a readable file of its format
  (PNG with three IDATs, lossless), the regions hold, no mutant equals its seed."""
  for fmt in FORMATS:
    data = _encode(fmt)
    with Image.open(io.BytesIO(data)) as img:
      assert img.format == fmt and img.size == (48, 40)
      if fmt == "PNG":
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), np.asarray(_seed_image()))
    regions = _regions(fmt, data)
    assert 0 < len(regions["header"]) and regions["header"].stop <= regions["data"].start
    assert 0 < len(regions["data"]) and regions["data"].stop <= len(data)
  chunks = [t for t, _ in _png_chunks(_encode("PNG"))]
  assert chunks.count(b"IDAT") == 3
  seeds = {fmt: _encode(fmt) for fmt in FORMATS}
  assert len(MUTANTS) == PER_FORMAT * len(FORMATS) >= 260
  assert all(m != seeds[fmt] for fmt, _, m in MUTANTS)
  assert len({m for _, _, m in MUTANTS}) == len(MUTANTS)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_mutant_decodes_to_a_usable_image_or_raises_oserror(fmt):
  cfg = layout("hybrid").image
  refused, decoded, wrong = 0, 0, []
  for i, (f, kind, data) in enumerate(MUTANTS):
    if f != fmt:
      continue
    try:
      img = load_image(data)
    except OSError:
      refused += 1
      continue
    except Exception as e:  # pylint: disable=broad-exception-caught
      wrong.append(f"mutant {i} ({kind}): load_image raised {type(e).__name__}: {e}")
      continue
    try:
      pixels = process_uint8(img, cfg)
    except Exception as e:  # pylint: disable=broad-exception-caught
      wrong.append(
          f"mutant {i} ({kind}): process_uint8 on a {img.mode} {img.size} image "
          f"raised {type(e).__name__}: {e}"
      )
      continue
    assert pixels.dtype == np.uint8 and pixels.shape == (3, cfg.image_size, cfg.image_size)
    decoded += 1
  assert not wrong, "\n".join(wrong)
  # Both outcomes occur: the mutations reach the decoders and are not all refused early.
  assert refused > 0 and decoded > 0, (refused, decoded)
  assert refused + decoded == PER_FORMAT


def test_the_server_answers_or_refuses_every_mutant_and_keeps_serving():
  config = serve_config(api_key_env="", max_tokens=1, default_max_tokens=1)
  refused, answered, wrong = 0, 0, []
  with running_server(config) as (url, _), httpx.Client(base_url=url, timeout=60) as client:

    def post(image_url: str) -> httpx.Response:
      body = {
          "messages": [
              {
                  "role": "user",
                  "content": [
                      {"type": "image_url", "image_url": {"url": image_url}},
                      {"type": "text", "text": "what is this?"},
                  ],
              }
          ],
          "max_tokens": 1,
      }
      return client.post(
          "/v1/chat/completions",
          content=json.dumps(body),
          headers={"Content-Type": "application/json"},
      )

    for i, (fmt, kind, data) in enumerate(MUTANTS):
      r = post(f"data:image/{FORMATS[fmt][0]};base64," + base64.b64encode(data).decode())
      if r.status_code == 200:
        answered += 1
        assert r.json()["choices"][0]["finish_reason"] in ("stop", "length"), r.text
      elif r.status_code == 400 and r.json()["error"]["code"] == "invalid_image":
        refused += 1
      else:
        wrong.append(f"mutant {i} ({fmt} {kind}): {r.status_code} {r.text[:200]}")
    ok = post(data_uri(drawn_image(1)))
    assert ok.status_code == 200, ok.text
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
  print(f"server: {refused} refused, {answered} answered of {len(MUTANTS)} mutants")
  assert not wrong, "\n".join(wrong)
  assert refused > 0 and answered > 0
  assert refused + answered == len(MUTANTS)


def test_the_pipeline_uses_or_counts_every_mutant(tmp_path):
  """One record per mutant, then a good sentinel; one sample per row (unpacked, B = 1),
  unshuffled, so rows end exactly at the sentinel once each record has been read."""
  records = []
  for i, (fmt, _, data) in enumerate(MUTANTS):
    name = f"m{i:03d}.{FORMATS[fmt][1]}"
    (tmp_path / name).write_bytes(data)
    records.append({"images": [name], "text": f"{IMAGE_TOKEN}record {i}"})
  drawn_image(1).save(tmp_path / "sentinel.png")
  records.append({"images": ["sentinel.png"], "text": f"{IMAGE_TOKEN}record {len(MUTANTS)}"})
  manifest = write_manifest(tmp_path, records)
  cfg = data_config(
      sources={"fuzz": dict(type="jsonl", paths=[str(manifest)])},
      multimodal_share=1.0,
      shuffle=False,
      pack=False,
      global_batch_size=1,
      max_images_per_row=1,
      seq_len=64,
  )
  tok = byte_tokenizer()
  used, read = [], 0
  it = iter(TrainDataset(cfg, layout()))
  try:
    while read < len(records):
      batch = next(it)
      metrics = it.metrics()
      read = metrics["data/samples/fuzz"] + metrics["data/skipped"]
      used.append(int(re.fullmatch(r"record (\d+)", tok.decode(batch["inputs"][0])).group(1)))
      assert batch["num_images"][0] == 1
      assert valid_images(batch)[0].std() > 0, f"record {used[-1]} became a constant image"
  finally:
    it.close()
  skipped = {k: v for k, v in metrics.items() if k.startswith("data/skipped/")}
  print(f"pipeline: {len(used) - 1} used, {skipped} of {len(MUTANTS)} mutants")
  assert read == len(records)  # the last row ended at the sentinel, not beyond
  assert used == sorted(set(used)) and used[-1] == len(MUTANTS)  # each once, in order
  assert set(skipped) == {"data/skipped/bad_image"}
  assert metrics["data/samples/fuzz"] == len(used)
  assert len(used) - 1 + skipped["data/skipped/bad_image"] == len(MUTANTS)
  assert len(used) > 1 and skipped["data/skipped/bad_image"] > 0

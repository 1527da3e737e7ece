"""The built-in dataset: deterministic, and its answers are in its pixels."""

import re

import numpy as np
import pytest

from dsvl_jax.data import synthetic
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN


def _text(record):
  if "text" in record:
    return record["text"]
  return " ".join(m["content"] for m in record["messages"])


def test_deterministic_from_seed_and_index():
  for i in range(20):
    a, b = synthetic.sample(3, i, 64), synthetic.sample(3, i, 64)
    assert _text(a) == _text(b) and a["kind"] == b["kind"]
    for x, y in zip(a["images"], b["images"]):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  kinds = {synthetic.sample(3, i, 64)["kind"] for i in range(60)}
  assert kinds == set(synthetic.KINDS)
  assert _text(synthetic.sample(3, 0, 64)) != _text(synthetic.sample(4, 0, 64)) or _text(
      synthetic.sample(3, 1, 64)
  ) != _text(synthetic.sample(4, 1, 64))


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_placeholders_match_images(kind):
  for i in range(10):
    record = synthetic.sample(0, i, 48, kind)
    assert _text(record).count(IMAGE_TOKEN) == len(record["images"])
    assert all(img.size == (48, 48) for img in record["images"])


def test_colour_answers_are_the_pixels():
  checked = 0
  for i in range(200):
    record = synthetic.sample(1, i, 128, "chat")
    msgs = record["messages"]
    seen = 0  # a question is about the last image placed before it
    for q, a in zip(msgs[0::2], msgs[1::2]):
      seen += q["content"].count(IMAGE_TOKEN)
      image = np.asarray(record["images"][seen - 1])
      m = re.match(r"(?:<image_placeholder>)?What colour is the shape at the (.+)\?", q["content"])
      if not m:
        continue
      fx, fy = synthetic.PLACES[m.group(1)]
      pixel = image[int(fy * 128) + 8, int(fx * 128)]  # inside every shape kind
      colour = a["content"].rstrip(".").lower()
      np.testing.assert_array_equal(pixel, synthetic.COLOURS[colour])
      checked += 1
  assert checked > 20


def test_printed_words_are_in_the_image():
  with_word = without = 0
  for i in range(40):
    record = synthetic.sample(2, i, 128, "caption")
    centre = np.asarray(record["images"][0])[52:76, 40:88]
    dark = (centre.sum(-1) < 150).sum()
    if '"' in record["text"]:
      assert dark > 10
      with_word += 1
    else:
      assert dark == 0  # the shapes (radius size/8, in the edge cells) miss this band
      without += 1
  assert with_word and without

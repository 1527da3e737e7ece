"""collate: left padding (reference 5.1), flat batch-major images, overflow policies."""

import numpy as np
import pytest
from conftest import tiny_config

from dsvl_jax.models.vlm import check_image_tokens
from dsvl_jax.processor.batching import Sample, collate
from dsvl_jax.processor.conversation import EncodedSample

CFG = tiny_config("siglip")  # bos 1, pad = eos 2, image 500, 16 tokens per image, 32 px
BOS, PAD, IMG, K, S = 1, 2, 500, 16, 32


def _images(*values):
  """[n, 3, S, S] images filled with the given constants (to recognise them later)."""
  out = np.empty((len(values), 3, S, S), np.float32)
  out[:] = np.reshape(values, (-1, 1, 1, 1))
  return out


def _three_samples():
  a = Sample(np.array([BOS, 10, 11, 12]), _images())  # no image
  b = Sample(np.array([BOS, 20] + [IMG] * K + [21, 22]), _images(0.25))
  c = Sample(np.array([BOS] + [IMG] * K + [30] + [IMG] * K + [31]), _images(0.5, 0.75))
  return a, b, c


def test_left_padding_and_attention_mask():
  a, b, c = _three_samples()
  batch = collate([a, b, c], CFG)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  t = 2 * K + 3  # the longest sample, c
  assert ids.shape == mask.shape == (3, t) and ids.dtype == mask.dtype == np.int32
  for row, sample in enumerate([a, b, c]):
    n = len(sample.ids)
    np.testing.assert_array_equal(ids[row, t - n :], sample.ids)  # right-aligned
    assert (ids[row, : t - n] == PAD).all()
    np.testing.assert_array_equal(mask[row], [0] * (t - n) + [1] * n)
  assert "loss_mask" not in batch


def test_images_are_batch_major_with_mixed_counts():
  a, b, c = _three_samples()
  images = collate([c, a, b], CFG)["images"]  # 2 + 0 + 1 images
  assert images.shape == (3, 3, S, S) and images.dtype == np.float32
  np.testing.assert_array_equal(images[:, 0, 0, 0], [0.5, 0.75, 0.25])
  batch = collate([b, a, c], CFG)
  np.testing.assert_array_equal(batch["images"][:, 0, 0, 0], [0.25, 0.5, 0.75])
  check_image_tokens(batch["input_ids"], len(batch["images"]), CFG)  # the model agrees
  none = collate([a, a], CFG)["images"]
  assert none.shape == (0, 3, S, S) and none.dtype == np.float32


def test_loss_mask_is_left_padded_false():
  ids = np.array([BOS, 5, 6, 7, 8])
  enc = EncodedSample(ids.astype(np.int32), np.array([0, 0, 0, 1, 1], bool), 0)
  short = Sample(np.array([BOS, 9]), _images(), np.array([False, True]))
  batch = collate([Sample.from_encoded(enc, _images()), short], CFG)
  np.testing.assert_array_equal(batch["loss_mask"], [[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]])
  with pytest.raises(ValueError, match="every sample carries a loss_mask"):
    collate([short, Sample(ids, _images())], CFG)
  with pytest.raises(ValueError, match="1 image placeholder"):
    Sample.from_encoded(EncodedSample(ids, ids > 0, 1), _images())


def test_overflow_error_names_sample_and_lengths():
  a, b, c = _three_samples()
  with pytest.raises(ValueError, match=rf"sample 2 has {2 * K + 3} tokens .*max_length=30"):
    collate([a, b, c], CFG, max_length=30)
  # the default limit is the config's max_position_embeddings (2048 here)
  long = Sample(np.array([BOS] + [7] * 2048), _images())
  with pytest.raises(ValueError, match="max_length=2048"):
    collate([long], CFG)
  with pytest.raises(ValueError, match="overflow must be"):
    collate([a], CFG, overflow="truncate_right")


def test_truncate_left_keeps_bos_and_image_blocks():
  text = list(range(100, 110))
  ids = np.array([BOS] + text + [IMG] * K + [40, 41])  # 29 tokens, image at 11
  loss = np.r_[np.zeros(11 + K, bool), [True, True]]
  sample = Sample(ids, _images(0.5), loss)
  batch = collate([sample], CFG, max_length=22, overflow="truncate_left")
  np.testing.assert_array_equal(batch["input_ids"][0], [BOS] + text[7:] + [IMG] * K + [40, 41])
  np.testing.assert_array_equal(batch["loss_mask"][0], [False] * (4 + K) + [True, True])
  # 29 -> 19 would need 10 dropped tokens but only 10 precede the image: that is fine ...
  out = collate([sample], CFG, max_length=19, overflow="truncate_left")["input_ids"][0]
  np.testing.assert_array_equal(out, [BOS] + [IMG] * K + [40, 41])
  # ... one more would cut into the image block
  with pytest.raises(ValueError, match="sample 0: cannot truncate 29 tokens to max_length=18"):
    collate([sample], CFG, max_length=18, overflow="truncate_left")
  # samples within the limit are untouched; no image: any prefix after BOS can go
  plain = Sample(np.array([BOS] + text), _images(), np.zeros(11, bool))
  out = collate([plain, sample], CFG, max_length=22, overflow="truncate_left")
  assert out["input_ids"].shape == (2, 22)
  np.testing.assert_array_equal(out["input_ids"][0], [PAD] * 11 + [BOS] + text)
  out = collate([plain], CFG, max_length=4, overflow="truncate_left")["input_ids"][0]
  np.testing.assert_array_equal(out, [BOS] + text[-3:])


def test_sample_validation():
  with pytest.raises(ValueError, match=r"sample 0: 16 image tokens but 0 image"):
    collate([Sample(np.array([BOS] + [IMG] * K), _images())], CFG)
  with pytest.raises(ValueError, match=r"sample 1: images must be \[n, 3, 32, 32\]"):
    collate(
        [
            Sample(np.array([BOS]), _images()),
            Sample(np.array([BOS] + [IMG] * K), np.zeros((1, 3, 16, 16), np.float32)),
        ],
        CFG,
    )
  with pytest.raises(ValueError, match="at least one sample"):
    collate([], CFG)

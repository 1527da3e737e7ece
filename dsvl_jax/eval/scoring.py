"""Option log-likelihoods, batched, and the multiple-choice decision.

A row is one (prompt, continuation) pair: an item's prompt followed by one option's
tokens. Rows are *left*-padded, so every continuation ends at the last position and
the model projects only the last K positions to the vocabulary (`logits_to_keep`):
the [B, K, V] log-softmax covers the options, never the prompt's [B, T, V]. RoPE
positions come from the mask (cumsum - 1), so padding changes no score.

Shapes are bucketed so a compiled program is reused: B = `batch_size` rows (a short
batch is filled with one-token dummy rows), T rounded up to `length_bucket`, K to a
multiple of 16, and the flat image count N to a power of two (extra images are zeros
that no image token reads; N = 0 skips the towers).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.llm import check_context
from dsvl_jax.models.vlm import DeepseekVL
from dsvl_jax.processor.batching import left_pad, round_up

KEEP_BUCKET = 16  # K (kept logit positions) is a multiple of this


@dataclasses.dataclass(frozen=True)
class Row:
  """prompt ids [P] (images expanded); continuation ids [C >= 1]; images [n, 3, S, S]."""

  prompt: np.ndarray
  continuation: np.ndarray
  images: np.ndarray


def option_scores(sums: Sequence[float], counts: Sequence[int], normalize: str) -> np.ndarray:
  """Per-option scores: mean token log-likelihood (sum / count) or the sum itself."""
  sums = np.asarray(sums, np.float64)
  if normalize == "sum":
    return sums
  if normalize == "mean":
    return sums / np.asarray(counts, np.float64)
  raise ValueError(f"normalize must be 'mean' or 'sum', got {normalize!r}")


def choose(sums: Sequence[float], counts: Sequence[int], normalize: str) -> int:
  """The most likely option: argmax of `option_scores` (first one on ties).

  Mean log-likelihood is the paper's lowest perplexity, exp(-mean).
  """
  return int(np.argmax(option_scores(sums, counts, normalize)))


def layout(
    rows: Sequence[Row], cfg: VLMConfig, batch_size: int, length_bucket: int
) -> dict[str, np.ndarray | None]:
  """Rows -> the bucketed, left-padded batch the scoring function takes.

  ids, mask [B, T] int32; images [N, 3, S, S] float32 or None; targets [B, K] int32
  (the token each kept position predicts); weights [B, K] float32 (1 on option tokens).
  """
  if not 0 < len(rows) <= batch_size:
    raise ValueError(f"a scoring batch holds 1..{batch_size} rows, got {len(rows)}")
  seqs = [np.concatenate([r.prompt, r.continuation]).astype(np.int32) for r in rows]
  longest = max(map(len, seqs))
  check_context(cfg.llm, longest, f"a prompt + option of {longest} tokens")
  t = round_up(longest, length_bucket)
  k = min(t, round_up(max(len(r.continuation) for r in rows) + 1, KEEP_BUCKET))
  dummies = [[cfg.bos_token_id]] * (batch_size - len(rows))  # one real token, nothing scored
  ids, mask = left_pad(seqs + dummies, t, cfg.pad_token_id)
  targets = np.zeros((batch_size, k), np.int32)
  weights = np.zeros((batch_size, k), np.float32)
  for b, row in enumerate(rows):
    c = len(row.continuation)
    # Kept position j is absolute t - k + j and predicts token t - k + j + 1; the option
    # holds the last c tokens, predicted by positions k - 1 - c .. k - 2.
    targets[b, :-1] = ids[b, t - k + 1 :]
    weights[b, k - 1 - c : k - 1] = 1.0
  images = [r.images for r in rows if len(r.images)]
  if not images:
    return dict(ids=ids, mask=mask, images=None, targets=targets, weights=weights)
  images = np.concatenate(images).astype(np.float32)
  n = 1 << (len(images) - 1).bit_length()  # next power of two
  padded = np.zeros((n, *images.shape[1:]), np.float32)
  padded[: len(images)] = images
  return dict(ids=ids, mask=mask, images=padded, targets=targets, weights=weights)


@functools.partial(jax.jit, static_argnums=0)
def score_rows(cfg: VLMConfig, params, ids, mask, images, targets, weights):
  """Summed log-likelihood of the weighted targets, per row.

  ids, mask [B, T]; images [N, 3, S, S] or None; targets [B, K] (what each of the last K
  positions predicts); weights [B, K]. Returns (sums [B] float32, counts [B] float32).
  A module-level jit keyed on the (hashable) config: every scorer of a config shares
  its compiled programs.
  """
  out = DeepseekVL(cfg).apply(
      {"params": params}, ids, images, attention_mask=mask, logits_to_keep=targets.shape[1]
  )
  logits = out["logits"]  # [B, K, V] float32
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  logp = picked - jax.nn.logsumexp(logits, axis=-1)
  logp = jnp.where(weights > 0, logp, 0.0)  # padding may hold any finite value
  return jnp.sum(logp * weights, -1), jnp.sum(weights, -1)


class OptionScorer:
  """Batches rows into bucketed shapes for `score_rows`."""

  def __init__(self, cfg: VLMConfig, batch_size: int = 8, length_bucket: int = 64):
    self.cfg, self.batch_size, self.length_bucket = cfg, batch_size, length_bucket

  def score_batch(self, params, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
    """Up to batch_size rows -> (sums [R] float32, counts [R] int)."""
    batch = layout(rows, self.cfg, self.batch_size, self.length_bucket)
    sums, counts = score_rows(
        self.cfg,
        params,
        batch["ids"],
        batch["mask"],
        batch["images"],
        batch["targets"],
        batch["weights"],
    )
    n = len(rows)
    return np.asarray(sums)[:n], np.asarray(counts)[:n].astype(np.int64)

"""Item sets scored by option likelihood (multiple-choice accuracy), with greedy exact
match: item jsonl files (BUILD.md, "Evaluation") and `textmc` sets. `evaluator.Evaluator`
holds one `LikelihoodSets` and calls it with each set of parameters.

Items are visited in order of prompt length (similar lengths share a padded shape) in
chunks of `batch_size`: a chunk's images are decoded once, its prompts generate
answers together, and its (item, option) rows join a queue scored `batch_size` rows
at a time, so at most about two chunks of images are in memory.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from dsvl_jax.eval import metrics
from dsvl_jax.eval.eval_config import EvalConfig
from dsvl_jax.eval.generation import AnswerGenerator
from dsvl_jax.eval.items import EvalItem, ItemError, load_items
from dsvl_jax.eval.prompts import build_prompt, continuation_ids
from dsvl_jax.eval.scoring import OptionScorer, Row, choose, option_scores
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.processor.batching import Sample
from dsvl_jax.processor.conversation import EncodedSample, Template, template_for
from dsvl_jax.processor.image_processor import ImageProcessorConfig, load_image, process_batch
from dsvl_jax.processor.tokenizer import Tokenizer

SetSource = str | os.PathLike | Sequence[EvalItem]


@dataclasses.dataclass(frozen=True)
class PreparedSet:
  """A set's items with their prompts and option continuations tokenised."""

  items: list[EvalItem]
  prompts: list[EncodedSample]
  continuations: list[list[np.ndarray]]  # [item][option] ids [C]
  settings: SetScoring


@dataclasses.dataclass(frozen=True)
class SetScoring:
  """How a set's options are scored: eval.normalize and eval.score_eos, or its
  benchmark's SCORING; template None = plain-text prompts (no chat turn)."""

  normalize: str
  score_eos: bool
  template: Template | None


class LikelihoodSets:
  """Item sets scored by option likelihood, with greedy exact match when an answerer is
  given; prompts and continuations are tokenised at construction."""

  def __init__(
      self,
      cfg: VLMConfig,
      tokenizer: Tokenizer,
      eval_cfg: EvalConfig,
      sets: Mapping[str, SetSource],
      answerer: AnswerGenerator | None,
      modules: Mapping[str, Any] | None = None,
  ):
    """sets: name -> item jsonl path or items; answerer: parameters set by the caller.
    modules: name -> the benchmark module of a set read from a public release (textmc,
    mmlu, hellaswag): its SCORING settings (the official rule's option score, EOS and
    prompt) replace eval.normalize / score_eos / the template for that set, and its
    `score` adds the official metrics."""
    self.cfg, self.tokenizer, self.eval_cfg, self.answerer = cfg, tokenizer, eval_cfg, answerer
    self.modules = dict(modules or {})
    self.sets = {name: self._prepare(src, self._settings(name)) for name, src in sets.items()}
    self.processor = ImageProcessorConfig.for_model(cfg)
    self.scorer = OptionScorer(cfg, eval_cfg.batch_size, eval_cfg.length_bucket)

  def _settings(self, name: str) -> SetScoring:
    scoring = getattr(self.modules.get(name), "SCORING", {})
    plain = scoring.get("template") == "none"
    return SetScoring(
        scoring.get("normalize", self.eval_cfg.normalize),
        scoring.get("score_eos", self.eval_cfg.score_eos),
        None if plain else template_for(self.eval_cfg.system_prompt),
    )

  def _prepare(self, src: SetSource, settings: SetScoring) -> PreparedSet:
    n = self.eval_cfg.max_items
    if isinstance(src, (str, os.PathLike)):
      items = load_items(src, n)
    else:
      items = list(src)[: n or None]
    prompts, conts = [], []
    for item in items:
      try:
        prompts.append(build_prompt(item, self.tokenizer, self.cfg, settings.template))
      except ValueError as e:  # a tokenizer/config mismatch, named with the item
        raise ItemError(f"{item.source}: cannot build the prompt: {e}") from e
      conts.append([continuation_ids(o, self.tokenizer, settings.score_eos) for o in item.options])
    return PreparedSet(items, prompts, conts, settings)

  def images(self, item: EvalItem) -> np.ndarray:
    """The item's images, processed: [n, 3, S, S] float32 in [0, 1]."""
    try:
      return process_batch([load_image(p) for p in item.images], self.processor)
    except OSError as e:  # missing or unreadable since loading: name the item
      raise ItemError(f"{item.source}: {e}") from e

  def __call__(self, params) -> dict[str, dict[str, Any]]:
    """{set name: metrics} for every set. Metrics (plain JSON types):

    num_items, chance_accuracy (mean of 1 / options), mc_accuracy, mc_accuracy_by_type,
    num_items_by_type; with an answerer: exact_match, exact_match_by_type; with
    `predictions`: per item {id, type, answer, choice, correct, scores (per option, as
    normalised), log_likelihoods (sums), num_tokens, generated, exact_match}.
    Accuracies are fractions in [0, 1]; by-type maps cover items with a non-empty type.
    """
    return {name: self._evaluate_set(params, name) for name in self.sets}

  def _evaluate_set(self, params, name: str) -> dict[str, Any]:
    prepared = self.sets[name]
    items, b = prepared.items, self.eval_cfg.batch_size
    sums = [np.zeros(len(it.options), np.float64) for it in items]
    counts = [np.zeros(len(it.options), np.int64) for it in items]
    answers: list[str] = [""] * len(items)
    queue: list[tuple[int, int, Row]] = []  # (item, option, row) waiting to be scored

    def flush(rows):
      s, c = self.scorer.score_batch(params, [r for _, _, r in rows])
      for (i, j, _), si, ci in zip(rows, s, c):
        sums[i][j], counts[i][j] = si, ci

    order = sorted(range(len(items)), key=lambda i: len(prepared.prompts[i]))
    for start in range(0, len(order), b):
      chunk = order[start : start + b]
      images = {i: self.images(items[i]) for i in chunk}
      if self.answerer is not None:
        texts = self.answerer([Sample(prepared.prompts[i].ids, images[i]) for i in chunk])
        for i, text in zip(chunk, texts):
          answers[i] = text
      for i in chunk:
        queue += [
            (i, j, Row(prepared.prompts[i].ids, cont, images[i]))
            for j, cont in enumerate(prepared.continuations[i])
        ]
      while len(queue) >= b:
        flush(queue[:b])
        queue = queue[b:]
    if queue:
      flush(queue)
    out = self._summarise(items, sums, counts, answers, prepared.settings.normalize)
    module = self.modules.get(name)
    if hasattr(module, "score"):
      out.update(module.score(items, sums))
    return out

  def _summarise(self, items, sums, counts, answers, normalize) -> dict[str, Any]:
    choices = [choose(s, c, normalize) for s, c in zip(sums, counts)]
    mc = [c == it.answer for c, it in zip(choices, items)]
    types = [it.type for it in items]
    out: dict[str, Any] = {
        "num_items": len(items),
        "chance_accuracy": metrics.chance_accuracy([len(it.options) for it in items]),
        "mc_accuracy": metrics.accuracy(mc),
        "mc_accuracy_by_type": metrics.by_type(mc, types),
        "num_items_by_type": {t: types.count(t) for t in sorted(set(types)) if t},
    }
    exact = None
    if self.answerer is not None:
      exact = [metrics.exact_match(a, it.answer_text) for a, it in zip(answers, items)]
      out["exact_match"] = metrics.accuracy(exact)
      out["exact_match_by_type"] = metrics.by_type(exact, types)
    if self.eval_cfg.predictions:
      out["predictions"] = []
      for k, it in enumerate(items):
        record = {
            "id": it.id,
            "type": it.type,
            "answer": it.answer_text,
            "choice": it.options[choices[k]],
            "correct": bool(mc[k]),
            "scores": [float(x) for x in option_scores(sums[k], counts[k], normalize)],
            "log_likelihoods": [float(x) for x in sums[k]],
            "num_tokens": [int(x) for x in counts[k]],
        }
        if exact is not None:
          record.update(generated=answers[k], exact_match=bool(exact[k]))
        out["predictions"].append(record)
    return out

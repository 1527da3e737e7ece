"""Evaluation: option likelihood, greedy exact match and public benchmarks.

Pieces, one concept each (a benchmark harness reuses them): `items` (jsonl loading),
`prompts` (chat prompt and option continuations), `scoring` (batched option
log-likelihoods, `choose`), `generation` (batched greedy answers), `metrics` (answer
normalisation, accuracies), `likelihood` (item sets scored by option likelihood),
`harness` (benchmarks answered by generation), `evaluator` (`Evaluator`: every set, for
`--config.mode=eval` and the trainer's `eval_every` alike), `run`
(`--config.mode=eval`). This file imports nothing: config files import `eval_config`.
"""

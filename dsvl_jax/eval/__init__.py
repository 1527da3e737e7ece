"""Evaluation: multiple-choice scoring by option likelihood and greedy exact match.

Pieces, one concept each (a benchmark harness reuses them): `items` (jsonl loading),
`prompts` (chat prompt and option continuations), `scoring` (batched option
log-likelihoods, `choose`), `generation` (batched greedy answers), `metrics` (answer
normalisation, accuracies), `evaluator` (`Evaluator`, `evaluate`), `run`
(`--config.mode=eval`). This file imports nothing: config files import `eval_config`.
"""

"""Runs a benchmark (dsvl_jax/eval/benchmarks) through batched greedy generation.

  items (the benchmark's loader, public files as released)
  -> prompts: the "deepseek" template around the benchmark's user turn, images through
     the model's processor (exactly as the chat CLI builds a turn)
  -> pending = items without a line in the predictions file (a rerun resumes, when the
     same model, generation settings and prompts answered them: NAME.run.json)
  -> sorted by prompt length (items about the same image adjacent), cut into batches
     of `batch_size`; prompt lengths are padded to `length_bucket` multiples, so each
     compiled shape is reused; a prefix rows share is computed once (generation.py)
  -> greedy answers (eval/generation.py, the benchmark's published length), the
     benchmark's parse, its LLM judge where it has one and one is given (eval/judge.py),
     and the per-item check
  -> one predictions line per item, appended and flushed per batch:
     {"id", "prompt", "output", "parsed", "correct"} (+ "judge": the judge's log)
  -> the benchmark's score over every item -> summary JSON

Several processes (`jax.distributed`) split the pending items round-robin; each
appends to its own predictions file, and every process scores the union at the end
(after a barrier), process 0 writing the summary.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from typing import Any, Sequence

import numpy as np

from dsvl_jax.checkpoint.run_base import matches
from dsvl_jax.config.schema import ConfigError
from dsvl_jax.eval.benchmarks import registry
from dsvl_jax.eval.benchmarks.base import BenchItem, Benchmark
from dsvl_jax.eval.generation import sort_key
from dsvl_jax.processor.batching import Sample
from dsvl_jax.processor.conversation import Message, encode_conversation, template_for
from dsvl_jax.processor.image_processor import ImageProcessorConfig, process_batch
from dsvl_jax.processor.tokenizer import Tokenizer


def predictions_path(outdir: pathlib.Path, name: str, index: int, count: int) -> pathlib.Path:
  suffix = "" if count == 1 else f".{index}-of-{count}"
  return outdir / f"{name}.predictions{suffix}.jsonl"


def read_predictions(outdir: pathlib.Path, name: str) -> dict[str, dict[str, Any]]:
  """Every finished item of a benchmark run, from all processes' files. A line cut off
  by an interruption (the last one, unterminated) is dropped and redone."""
  done: dict[str, dict[str, Any]] = {}
  for path in sorted(outdir.glob(f"{name}.predictions*.jsonl")):
    for line in path.read_text().splitlines():
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      done[row["id"]] = row
  return done


def _check_run(
    outdir: pathlib.Path,
    name: str,
    identity: dict[str, Any],
    done: dict[str, dict[str, Any]],
    prompts: dict[str, str],
) -> None:
  """Refuses to resume predictions that another model, other generation settings or
  another prompt produced (OUTDIR/NAME.run.json records what answered them), so a run
  never mixes answers."""
  if not done:
    return
  where = f"{outdir}/{name}.predictions*.jsonl"
  fix = "evaluate into another directory, or remove them to start afresh"
  record = outdir / f"{name}.run.json"
  if not record.is_file():
    raise ConfigError(f"{where}: no record of the model that answered them ({record}); {fix}")
  before = json.loads(record.read_text())
  differ = [
      k for k in sorted(set(before) | set(identity)) if not _same(k, before.get(k), identity.get(k))
  ]
  changed = [i for i, row in done.items() if i in prompts and row.get("prompt") != prompts[i]]
  if changed:
    differ.append(f"the prompt of {len(changed)} items (first: {changed[0]})")
  if differ:
    raise ConfigError(
        f"{where} were answered by another model or other settings ({', '.join(differ)} "
        f"differ); {fix}"
    )


def _same(key: str, a: Any, b: Any) -> bool:
  """Equal; parameter fingerprints to their summing's rounding (run_base.matches)."""
  if key == "params" and isinstance(a, list) and isinstance(b, list):
    return matches(a, b)
  return a == b


def build_sample(
    bench: Benchmark,
    item: BenchItem,
    tokenizer: Tokenizer,
    cfg,
    template,
    processor: ImageProcessorConfig,
) -> tuple[str, Sample]:
  """(user text, the prompt's ids and processed images)."""
  text = bench.prompt(item)
  encoded = encode_conversation(
      [Message("user", text)], tokenizer, cfg, add_generation_prompt=True, template=template
  )
  images = item.images()
  pixels = (
      process_batch(images, processor)
      if images
      else np.zeros((0, 3, processor.image_size, processor.image_size), np.float32)
  )
  return text, Sample.from_encoded(encoded, pixels)


def run_benchmark(
    name: str,
    kind: str | Benchmark,
    path: str,
    answerer,
    tokenizer: Tokenizer,
    cfg,
    outdir: str | pathlib.Path,
    *,
    system_prompt: str = "default",
    max_items: int = 0,
    progress: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    barrier=None,
    items: Sequence[BenchItem] | None = None,
    resume: bool = True,
    write: bool = True,
    max_new_tokens: int = 0,
    judge=None,
) -> dict[str, Any]:
  """Evaluates `answerer` (eval.generation.AnswerGenerator with parameters set) on the
  benchmark `kind` (a registry name, or a module or object with the Benchmark members)
  read from `path` (or its `items`, already loaded); writes
  OUTDIR/NAME.predictions*.jsonl and OUTDIR/NAME.summary.json; returns the summary.

  resume: items with a prediction in OUTDIR are not answered again, and processes
  split the rest. Without it (the trainer: every process runs every item, in lockstep
  over parameters sharded across them) all items are answered, the predictions file
  is rewritten, and only a process with `write` touches OUTDIR.

  max_new_tokens: the answers' length limit (0: the benchmark's published MAX_NEW_TOKENS,
  else the answerer's). judge: an eval.judge.Judge for a benchmark with a `judge` hook
  (required when the benchmark's JUDGE is "required"); each row records its log."""
  bench = registry.get(kind) if isinstance(kind, str) else kind
  kind = bench.NAME
  outdir = pathlib.Path(outdir)
  length = max_new_tokens or getattr(bench, "MAX_NEW_TOKENS", 0) or None
  judging = judge if hasattr(bench, "judge") else None
  if getattr(bench, "JUDGE", "") == "required" and judging is None:
    raise ConfigError(
        f"eval set {name!r} ({kind}) is scored by an LLM judge: set eval.judge_url and "
        "eval.judge_model (any OpenAI-compatible endpoint, BUILD.md)"
    )
  if items is None:
    items = bench.load(path)
  items = list(items)[: max_items or None]
  ids = [it.id for it in items]
  if len(set(ids)) != len(ids):
    raise ValueError(f"{kind} at {path}: item ids are not unique")
  if write:
    outdir.mkdir(parents=True, exist_ok=True)
  done = read_predictions(outdir, name) if resume else {}
  template = template_for(system_prompt)
  if resume:
    identity = {"system_prompt": system_prompt}
    if hasattr(answerer, "identity"):
      identity.update(answerer.identity(length))
    if judging is not None:
      identity["judge"] = judging.name
    _check_run(outdir, name, identity, done, {it.id: bench.prompt(it) for it in items})
    if process_index == 0 and write:
      (outdir / f"{name}.run.json").write_text(json.dumps(identity, indent=1) + "\n")
  pending = [it for it in items if it.id not in done][process_index::process_count]
  processor = ImageProcessorConfig.for_model(cfg)
  out_file = predictions_path(outdir, name, process_index, process_count) if write else None
  t0 = time.perf_counter()
  rows = _answer(
      bench,
      pending,
      answerer,
      (tokenizer, cfg, template, processor),
      out_file,
      "a" if resume else "w",
      progress,
      f"{name} ({kind})",
      length,
      judging,
  )
  if barrier is not None:
    barrier()
  done = read_predictions(outdir, name) if resume else {r["id"]: r for r in rows}
  missing = [i for i in ids if i not in done]
  if missing:
    raise RuntimeError(
        f"{name}: {len(missing)} items have no prediction (first: "
        f"{missing[0]}); rerun to finish them"
    )
  parsed = [done[i]["parsed"] for i in ids]
  logs = [done[i].get("judge", {}) for i in ids]
  summary = {"benchmark": kind, "path": str(path), **bench.score(items, parsed)}
  # Answers an official rule decided by its default: POPE's "yes", MMMU's random pick,
  # VLMEvalKit's random pick after its judge failed thrice.
  if hasattr(bench, "fallback"):
    summary["fallbacks"] = sum(bool(bench.fallback(it, done[it.id]["output"])) for it in items)
  elif any(log.get("random_pick") for log in logs):
    summary["fallbacks"] = sum(bool(log.get("random_pick")) for log in logs)
  if judging is not None:
    summary["judge"] = judging.name
    summary["judged"] = sum(bool(log.get("judged")) for log in logs)
  summary.update(
      generated_now=len(pending),
      seconds=time.perf_counter() - t0,
  )
  if process_index == 0 and write:
    (outdir / f"{name}.summary.json").write_text(json.dumps(summary, indent=1) + "\n")
  return summary


def _answer(
    bench: Benchmark,
    items: Sequence[BenchItem],
    answerer,
    prompting: tuple,
    out_file: pathlib.Path | None,
    file_mode: str,
    progress: bool,
    label: str,
    max_new_tokens: int | None = None,
    judge=None,
) -> list[dict[str, Any]]:
  """One predictions row per item (in answering order), each appended to `out_file`
  (when given) and flushed per batch. prompting: (tokenizer, cfg, template, processor).
  judge: the benchmark's `judge` hook runs on each parsed answer; a row it logs carries
  {"judge": log}."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  cfg = prompting[1]
  prepared = [(it, *build_sample(bench, it, *prompting)) for it in items]
  # Longest first (the first batch compiles the largest shapes; similar lengths share
  # batches), items asking about the same image next to each other (generation.py).
  prepared.sort(key=lambda p: p[0].id)
  key = sort_key([p[2] for p in prepared], cfg)
  prepared = [prepared[i] for i in sorted(range(len(prepared)), key=key)]
  rows: list[dict[str, Any]] = []
  if not prepared:
    return rows
  bar = tqdm(total=len(prepared), desc=label, unit="item", disable=not progress, dynamic_ncols=True)
  batch_size = answerer.batch_size
  if out_file is not None and file_mode == "a":
    # A line cut off by an interruption is ended first, so that the next one stays
    # whole (read_predictions skips the cut one, whose item is among the pending).
    with out_file.open("a+b") as f:
      if f.tell() and (f.seek(-1, 2), f.read(1))[1] != b"\n":
        f.write(b"\n")
  with contextlib.ExitStack() as stack:
    f = None if out_file is None else stack.enter_context(out_file.open(file_mode))
    for start in range(0, len(prepared), batch_size):
      chunk = prepared[start : start + batch_size]
      outputs = answerer([p[2] for p in chunk], max_new_tokens)
      try:
        for (item, text, _), output in zip(chunk, outputs):
          parsed = bench.parse(item, output)
          log = None
          if judge is not None:  # may raise JudgeError: the rows before it are kept
            parsed, log = bench.judge(item, output, parsed, judge)
          correct = bool(bench.is_correct(item, parsed))
          row = dict(id=item.id, prompt=text, output=output, parsed=parsed, correct=correct)
          if log:
            row["judge"] = log
          rows.append(row)
          if f is not None:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
      finally:
        if f is not None:
          f.flush()  # an interruption loses at most the batch in flight
      bar.update(len(chunk))
  bar.close()
  return rows

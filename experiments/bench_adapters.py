"""Serving several LoRA adapters at once: what a decode step of 8 busy slots costs.

  python experiments/bench_adapters.py [--config mid] [--steps 12] [--repeats 5]
  python experiments/bench_adapters.py --config tiny       # a smoke run, ~30 s
  python experiments/bench_adapters.py --skip-torch        # dsvl_jax only

One SlotModel (infer/slots.py, the engine's device side) with 8 slots, all busy: each
slot prefilled with its own 32-token text prompt, then `SlotModel.decode` steps (greedy;
every step brings its tokens back to the host, as the engine's loop does). Four models
over the same base weights, LoRA rank 16 (alpha 32) on the LLM's projections
(LoraConfig's default targets), random adapters (lora_b random too: a fresh adapter is
the identity):

  no adapters        the plain model
  1 adapter          one adapter, unmerged (compute.lora.rank 16): the base matmuls plus
                     the low-rank ones, every row through it
  2 adapters + base  models/adapter_stack.py, stacked = 3; rows' adapters 0,1,2,0,1,2,0,1
  8 adapters         stacked = 9; row i through adapter i + 1, each row its own

A row of a stacked model takes its adapter's lora_a / lora_b (layers.Dense: a jnp.take
per adapted kernel, [B, *in, rank] and [B, rank, *out]) and runs batched low-rank
matmuls. Time per step: `--steps` steps after two warm-up steps (compiles excluded), the
median of `--repeats` runs, each from its own copy of the prefilled state. CPU ms (user
+ system) and minor page faults per step: the whole process's (getrusage) over the timed
runs, divided by the steps: they tell computing from the kernel's work of mapping fresh
memory. `bound`: the bytes a step must read (the LLM's weights and head, and each
distinct adapter its rows use) over the host's streaming read rate
(dsvl_jax.runtime.perf, measured at start).

Reference, unless --skip-torch: transformers' DeepSeek-VL of the same config and
weights (experiments/hf_reference.py), the same 8 adapters exported with
checkpoint/adapters.save_peft and loaded into one `peft.PeftModel` (`load_adapter`);
float32, torch.set_num_threads(the CPU count, XLA:CPU's thread pool size). The same
prompts and decode steps in eager PyTorch with its KV cache (a DynamicCache cropped back
to the prompt before each run): no adapters (`disable_adapter()`), one adapter active,
and peft's mixed-adapter batches: `adapter_names=[...]` per row ("__base__" for base
rows), which runs each adapted Linear's low-rank path once per distinct adapter on that
adapter's rows (`_mixed_batch_forward`). `same tokens`: the rows whose greedy tokens
(the prefill's and every step's of the first timed run) all equal ours: a check that
both sides do the same work.

`mid` is bench_generate.py's (the 1.3B architecture, 8 LLM layers, random weights,
float32); `tiny` is configs/tiny.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import resource
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import peft
import torch
import transformers

# Siblings: python puts the script's folder, experiments/, first on sys.path.
from bench_generate import model_config
from hf_reference import paired_models

from dsvl_jax.checkpoint.adapters import save_peft
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.infer.slots import SlotModel
from dsvl_jax.models import adapter_stack, lora
from dsvl_jax.models.config import LoraConfig, VLMConfig
from dsvl_jax.models.init import count_params, init_adapters, init_params
from dsvl_jax.runtime.perf import host_limits

ROWS = 8
SPEC = LoraConfig(rank=16, alpha=32.0)  # default targets: the LLM's projections


def with_lora(cfg: VLMConfig, spec: LoraConfig) -> VLMConfig:
  return cfg.replace(compute=dataclasses.replace(cfg.compute, lora=spec))


def random_adapters(cfg: VLMConfig, count: int) -> list[dict]:
  """`count` adapter trees of SPEC, unlike each other: init_adapters' lora_a (one init,
  compiled once) plus noise, and random lora_b (a fresh one is zero: no change)."""
  fresh = lora.flatten(init_adapters(with_lora(cfg, SPEC), jax.random.key(0)))
  out = []
  for seed in range(count):
    rng = np.random.default_rng(seed)
    out.append(
        lora.unflatten(
            {
                path: np.asarray(x) * path.endswith("/lora_a")
                + 0.02 * rng.standard_normal(x.shape, np.float32)
                for path, x in fresh.items()
            }
        )
    )
  return out


@dataclasses.dataclass
class Variant:
  name: str
  cfg: VLMConfig
  params: dict
  rows: list[int]  # each row's adapter index in `params` (0: the base / the only one)
  torch_rows: list[str] | None  # peft adapter names per row; None: the active adapter
  adapters_read: int  # distinct adapters a step reads


def variants(cfg: VLMConfig, base: dict, adapters: list[dict]) -> list[Variant]:
  cfg_one = with_lora(cfg, SPEC)
  cfg2, stack2 = adapter_stack.stack(cfg, [(SPEC, a) for a in adapters[:2]])
  cfg8, stack8 = adapter_stack.stack(cfg, [(SPEC, a) for a in adapters[:ROWS]])
  spread = [i % 3 for i in range(ROWS)]
  return [
      Variant("no adapters", cfg, base, [0] * ROWS, None, 0),
      Variant("1 adapter", cfg_one, lora.merge(base, adapters[0]), [0] * ROWS, None, 1),
      Variant(
          "2 adapters + base",
          cfg2,
          lora.merge(base, stack2),
          spread,
          [f"a{i}" if i else "__base__" for i in spread],
          2,
      ),
      Variant(
          f"{ROWS} adapters",
          cfg8,
          lora.merge(base, stack8),
          list(range(1, ROWS + 1)),
          [f"a{i}" for i in range(1, ROWS + 1)],
          ROWS,
      ),
  ]


def prompts(cfg: VLMConfig, length: int) -> np.ndarray:
  """[ROWS, length] int32: BOS and random text tokens."""
  rng = np.random.default_rng(0)
  ids = rng.integers(100, min(cfg.llm.vocab_size, 30000), (ROWS, length))
  ids[:, 0] = cfg.bos_token_id
  return ids.astype(np.int32)


@dataclasses.dataclass
class Timing:
  times: list[float]  # seconds per step, one per timed run
  tokens: np.ndarray  # [ROWS, 1 + steps]: the prefill's token and the first run's
  user: float  # the process's CPU seconds per step (all its threads), user ...
  system: float  # ... and system (the kernel's: page faults among them)
  faults: float  # minor page faults per step

  @property
  def step(self) -> float:
    return statistics.median(self.times)


class Usage:
  """The process's CPU time and minor page faults over a `with` block."""

  def __enter__(self):
    self.start = resource.getrusage(resource.RUSAGE_SELF)
    return self

  def __exit__(self, *exc):
    end = resource.getrusage(resource.RUSAGE_SELF)
    self.user = end.ru_utime - self.start.ru_utime
    self.system = end.ru_stime - self.start.ru_stime
    self.faults = end.ru_minflt - self.start.ru_minflt
    return False


def timing(times, tokens, usage: Usage, steps: int) -> Timing:
  n = len(times) * steps
  return Timing(times, tokens, usage.user / n, usage.system / n, usage.faults / n)


def time_ours(v: Variant, ids: np.ndarray, steps: int, repeats: int, max_len: int) -> Timing:
  model = SlotModel(v.cfg, v.params, num_slots=ROWS, max_len=max_len)
  state, first = model.init_state(), []
  mask = np.ones((1, ids.shape[1]), np.int32)
  for slot in range(ROWS):
    state, token = model.prefill(
        state, slot, ids[slot : slot + 1], mask, None, 0, 0, SamplingConfig(), v.rows[slot]
    )
    first.append(token)
  active = np.ones(ROWS, bool)
  warm = jax.tree.map(jnp.copy, state)
  for _ in range(2):  # compiles
    warm, _ = model.decode(warm, active)
  del warm
  times, tokens = [], None
  runs = [jax.block_until_ready(jax.tree.map(jnp.copy, state)) for _ in range(repeats)]
  del state
  with Usage() as usage:
    for run in runs:
      out = []
      t0 = time.perf_counter()
      for _ in range(steps):  # each step's tokens come back to the host, as in the engine
        run, step = model.decode(run, active)
        out.append(step)
      times.append((time.perf_counter() - t0) / steps)
      if tokens is None:
        tokens = np.column_stack([first] + out)
      del run
  return timing(times, tokens, usage, steps)


def peft_model(cfg: VLMConfig, hf, adapters: list[dict]):
  """`hf` with the adapters loaded as peft's "a1", "a2", ... (exported by save_peft)."""
  model = None
  with tempfile.TemporaryDirectory() as tmp:
    for i, tree in enumerate(adapters, start=1):
      folder = os.path.join(tmp, f"a{i}")
      save_peft(tree, with_lora(cfg, SPEC), folder)
      if model is None:
        model = peft.PeftModel.from_pretrained(hf, folder, adapter_name="a1")
      else:
        model.load_adapter(folder, adapter_name=f"a{i}")
  return model.eval()


def time_theirs(model, v: Variant, ids: np.ndarray, steps: int, repeats: int) -> Timing:
  """The same prompts and steps in eager PyTorch; peft's `adapter_names` per row."""
  prompt = torch.from_numpy(ids).long()
  n = prompt.shape[1]
  rows = {} if v.torch_rows is None else {"adapter_names": v.torch_rows}
  model.set_adapter("a1")
  plain = v.torch_rows is None and not v.adapters_read
  with model.disable_adapter() if plain else contextlib.nullcontext(), torch.no_grad():

    def forward(ids, mask, cache=None):
      out = model(
          input_ids=ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1, **rows
      )
      return out.cache, out.logits[:, -1].argmax(-1)

    cache, first = forward(prompt, torch.ones_like(prompt))

    def run(count):
      cache.crop(n - cache.get_seq_length())  # back to the prompt (0: nothing)
      token, got = first, [first]
      for k in range(count):
        _, token = forward(token[:, None], torch.ones((ROWS, n + k + 1), dtype=torch.long), cache)
        got.append(token)
      return torch.stack(got, 1).numpy()

    run(2)  # warm-up
    times, tokens = [], None
    with Usage() as usage:
      for _ in range(repeats):
        t0 = time.perf_counter()
        got = run(steps)
        times.append((time.perf_counter() - t0) / steps)
        tokens = got if tokens is None else tokens
  return timing(times, tokens, usage, steps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="mid")
  parser.add_argument("--steps", type=int, default=12, help="decode steps per timed run")
  parser.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
  parser.add_argument("--torch-repeats", type=int, default=3, help="timed runs of the reference")
  parser.add_argument("--prompt-len", type=int, default=32)
  parser.add_argument("--max-len", type=int, default=256, help="cache columns per slot")
  parser.add_argument("--skip-torch", action="store_true", help="no transformers + peft rows")
  args = parser.parse_args()
  if args.prompt_len + args.steps >= args.max_len - 1:  # column max_len - 1 is scratch
    parser.error("--prompt-len + --steps must stay below --max-len - 1")
  start = time.perf_counter()

  def log(*what):
    print(f"[{time.perf_counter() - start:5.0f} s]", *what, flush=True)

  threads = os.cpu_count()  # XLA:CPU's thread pool; torch is given as many
  limits = host_limits()  # before any model: a quiet machine
  cfg = model_config(args.config)
  if args.skip_torch:
    hf, base = None, init_params(cfg, jax.random.key(0))
  else:
    torch.set_num_threads(threads)
    hf, base = paired_models(cfg)
  adapters = random_adapters(cfg, ROWS)
  vs = variants(cfg, base, adapters)
  ids = prompts(cfg, args.prompt_len)
  log("models built")

  ours, theirs = {}, {}
  for v in vs:
    ours[v.name] = time_ours(v, ids, args.steps, args.repeats, args.max_len)
    log("dsvl_jax", v.name, [f"{t * 1e3:.1f} ms" for t in ours[v.name].times])
  if hf is not None:
    model = peft_model(cfg, hf, adapters)
    for v in vs:
      theirs[v.name] = time_theirs(model, v, ids, args.steps, args.torch_repeats)
      log("transformers + peft", v.name, [f"{t * 1e3:.1f} ms" for t in theirs[v.name].times])

  versions = f"jax {jax.__version__}"
  if hf is not None:
    versions += (
        f", torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}"
    )
  # The bytes a step must read: the LLM's weights (the head included, the embedding
  # table not: a step reads 8 of its rows) plus each distinct adapter its rows use.
  weight_bytes = 4 * (count_params(base["llm"]) - cfg.llm.vocab_size * cfg.llm.hidden_size)
  adapter_bytes = 4 * count_params(adapters[0])
  print(
      f"\n{versions}; {threads} CPU threads; {limits}\n"
      f"config {args.config}, float32, LoRA rank {SPEC.rank} on {', '.join(SPEC.targets)} "
      f"({adapter_bytes / 1e6:.1f} MB an adapter, LLM weights {weight_bytes / 1e9:.2f} GB); "
      f"{ROWS} busy slots, {args.prompt_len}-token prompts, {args.max_len} cache columns; "
      f"median of {args.repeats} runs of {args.steps} steps (transformers: "
      f"{args.torch_repeats})\n"
  )
  print(
      "| implementation | adapters | ms / step | tokens/s | vs no adapters | CPU ms / step "
      "(user + sys) | page faults / step | bound ms | same tokens as dsvl_jax |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for label, results in (("dsvl_jax", ours), ("transformers + peft", theirs)):
    for v in vs:
      if v.name not in results:
        continue
      r, plain = results[v.name], results[vs[0].name]
      bound = (weight_bytes + v.adapters_read * adapter_bytes) / limits.bandwidth
      same = "-"
      if results is theirs:
        same = f"{int((r.tokens == ours[v.name].tokens).all(axis=1).sum())}/{ROWS} rows"
      print(
          f"| {label} | {v.name} | {r.step * 1e3:.1f} | {ROWS / r.step:.1f} | "
          f"{(r.step / plain.step - 1) * 100:+.0f}% | {r.user * 1e3:.0f} + "
          f"{r.system * 1e3:.0f} | {r.faults:.0f} | {bound * 1e3:.1f} | {same} |"
      )


if __name__ == "__main__":
  main()

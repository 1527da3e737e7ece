"""Quantised decoding on this host, for `bench_generate.py --quant`: our Generator with
float32, bfloat16, int8 and int4 parameters (int kinds weight-only, compute.quant's default
targets: the LLM's projections), prefill and decode speed at batch 1 and 8, the bytes each
decode step must read, and, from the compiled decode step's optimised HLO, whether XLA
fuses the dequantisation into the matmuls or writes the float kernels out first.

The parameters are what the inference sections hold: float32 and bfloat16 as
`dsvl_jax.load(dtype=...)` gives them (`formats.with_dtype`: bfloat16 parameters compute
in bfloat16), int8 / int4 as `--config.chat.dtype=bfloat16 --config.chat.quantize=K`
(`infer/load.quantized` on the bfloat16 tree, blocks of `QUANT_BLOCK`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import resource
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from dsvl_jax.checkpoint.formats import with_dtype
from dsvl_jax.infer import generate as generate_lib
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.load import quantized
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.models import VLMConfig
from dsvl_jax.models.init import init_params
from dsvl_jax.models.llm import init_cache
from dsvl_jax.processor.batching import round_up

KINDS = ("float32", "bfloat16", "int8", "int4")
QUANT_BLOCK = 64  # chat / eval / serve's default quant_block
BATCHES = (1, 8)
TEXT_TOKENS = 24  # after BOS and the image's tokens, as the float table's prompt


# -- parameters ---------------------------------------------------------------------------


def variants(cfg: VLMConfig, kinds: list[str]) -> Iterator[tuple[str, VLMConfig, dict]]:
  """(kind, config, parameters) per kind, from one float32 random init: bfloat16 cast
  from it, int8 / int4 quantised from the bfloat16. A tree is dropped once no later kind
  needs it (the float32 mid model is 4.5 GB)."""
  unknown = set(kinds) - set(KINDS)
  if unknown:
    raise ValueError(f"--quant: no kind {sorted(unknown)}; choose from {KINDS}")
  f32_cfg, bf16_cfg = with_dtype(cfg, "float32"), with_dtype(cfg, "bfloat16")
  f32, bf16 = init_params(f32_cfg, jax.random.key(0)), None
  for i, kind in enumerate(kinds):
    if kind == "float32":
      out = (f32_cfg, f32)
    else:
      if bf16 is None:
        bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), f32)
      out = (
          (bf16_cfg, bf16)
          if kind == "bfloat16"
          else quantized(bf16_cfg, bf16, kind, QUANT_BLOCK, "bench")
      )
    yield (kind, *out)
    out, later = None, kinds[i + 1 :]
    needs_bf16 = any(k != "float32" for k in later)
    if needs_bf16 and bf16 is None:
      bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), f32)
    if "float32" not in later:
      f32 = None
    if not needs_bf16:
      bf16 = None


def nbytes(tree) -> int:
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


@dataclasses.dataclass(frozen=True)
class StepBytes:
  """Bytes one decode step of B rows must read, from the trees the generator holds."""

  layers: int  # every leaf of the LLM's layers: kernels (or codes + scales), norms
  head: int  # the LM head [V, D] (never quantised) and the final norm
  embed: int  # the B rows of the token embedding the step looks up
  kv: int  # k and v of every layer, all S columns: the step's attention reads them all

  @property
  def total(self) -> int:
    return self.layers + self.head + self.embed + self.kv


def step_bytes(gen: Generator, state) -> StepBytes:
  """`state`: the (abstract) DecodeState the step takes."""
  llm = gen.params["model"]["llm"]
  table = llm["embed_tokens"]["embedding"]
  b = state.slots.shape[0]
  return StepBytes(
      layers=nbytes({k: v for k, v in llm.items() if k.startswith("layers_")}),
      head=nbytes(gen.params["head"]) + nbytes(llm["norm"]),
      embed=b * table.shape[1] * table.dtype.itemsize,
      kv=nbytes(state.cache),
  )


# -- timing -------------------------------------------------------------------------------


def prompts(cfg: VLMConfig, b: int) -> tuple[np.ndarray, np.ndarray]:
  """B identical-length prompts (BOS, one image's tokens, TEXT_TOKENS of text), ids
  [B, T], and their images [B, 3, S, S]."""
  rng = np.random.default_rng(0)
  text = rng.integers(3, 400, (b, TEXT_TOKENS))
  head = np.array([cfg.bos_token_id] + [cfg.image_token_id] * cfg.num_image_tokens)
  ids = np.concatenate([np.broadcast_to(head, (b, len(head))), text], 1).astype(np.int32)
  images = rng.random((b, 3, cfg.image_size, cfg.image_size), dtype=np.float32)
  return ids, images


def timed_generate(gen: Generator, ids, images, new: int) -> tuple[float, np.ndarray, np.ndarray]:
  """(seconds to the first token: the prefill, seconds between later tokens [new - 1]:
  the decode steps, the process's minor page faults in each of those steps [new - 1]),
  from when each of row 0's tokens reaches the host. EOS ignored. A fault is a page of
  memory the step touches for the first time: XLA:CPU buffers allocated afresh."""
  stamps = []

  def on_token(row, _):
    if row == 0:
      stamps.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt))

  t0 = time.perf_counter()
  gen.generate(
      ids, None, images, SamplingConfig(max_new_tokens=new, ignore_eos=True), None, on_token
  )
  times, faults = np.array(stamps).T
  return times[0] - t0, np.diff(times), np.diff(faults)


# -- the compiled decode step -------------------------------------------------------------


@dataclasses.dataclass
class CompiledStep:
  """A Generator's decode step as compiled for one generate() shape."""

  hlo: str  # the optimised HLO text
  state: generate_lib.DecodeState  # abstract: the state the step takes
  bytes_accessed: float  # XLA's cost analysis: every instruction's operands and output


def compile_shapes(gen: Generator, ids, images, new: int) -> CompiledStep:
  """Compiles the prefill and the decode step `gen.generate(ids, None, images,
  max_new_tokens=new)` runs (the Generator's jitted `_prefill` and `_step`, at generate's
  prompt and cache buckets) ahead of the timed runs, which then find both in JAX's
  cache; returns the step's HLO. (Were the cache missed, the first timed run would
  compile: the best prefill and the median step would still leave it out.)"""
  b, t = ids.shape
  sampling = generate_lib._static(SamplingConfig(max_new_tokens=new, ignore_eos=True))  # pylint: disable=protected-access
  tp = round_up(t, gen.prompt_bucket)
  s = round_up(tp + new, gen.cache_bucket)
  tokens = jax.ShapeDtypeStruct((b, tp), jnp.int32)
  pixels = jax.ShapeDtypeStruct(images.shape, jnp.float32)
  dtype = jnp.dtype(gen.cfg.compute.dtype)
  cache = jax.eval_shape(lambda: init_cache(gen.cfg.llm, b, s, dtype, stacked=False))
  args = (gen.params, tokens, tokens, pixels, cache, jax.random.key(0))
  gen._prefill.lower(*args, sampling=sampling).compile()  # pylint: disable=protected-access
  prefill = functools.partial(gen._prefill_fn, sampling=sampling)  # pylint: disable=protected-access
  state, token = jax.eval_shape(prefill, *args)
  step = gen._step.lower(gen.params, state, token, sampling=sampling).compile()  # pylint: disable=protected-access
  cost = step.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return CompiledStep(step.as_text(), state, float(cost.get("bytes accessed", float("nan"))))


_DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s4": 0.5, "u4": 0.5, "bf16": 2, "f16": 2, "s16": 2,
    "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8,
}  # fmt: skip
_ARRAY = re.compile(r"^([a-z]+\d*)\[([\d,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = (.*)$")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+) \(")


@dataclasses.dataclass
class Instr:
  name: str
  shape: str  # 'f32[2048,5632]{1,0}', or a tuple's text
  opcode: str
  operands: list[str]
  calls: str | None  # a fusion's computation
  index: int | None  # a parameter's number

  @property
  def dtype(self) -> str:
    m = _ARRAY.match(self.shape)
    return m.group(1) if m else "tuple"

  @property
  def dims(self) -> tuple[int, ...]:
    m = _ARRAY.match(self.shape)
    return tuple(int(d) for d in m.group(2).split(",") if d) if m else ()

  @property
  def nbytes(self) -> float:
    return _DTYPE_BYTES.get(self.dtype, 0) * int(np.prod(self.dims))


def _closing(text: str, start: int) -> int:
  """The index of the parenthesis closing the one at `start`."""
  depth = 0
  for i in range(start, len(text)):
    depth += {"(": 1, ")": -1}.get(text[i], 0)
    if depth == 0:
      return i
  raise ValueError(f"unbalanced HLO: {text[:80]}")


def _parse_instr(line: str) -> Instr | None:
  m = _INSTR.match(line)
  if not m:
    return None
  name, rest = m.groups()
  if rest.startswith("("):  # a tuple shape
    end = _closing(rest, 0)
    shape, rest = rest[: end + 1], rest[end + 2 :]
  else:
    shape, _, rest = rest.partition(" ")
  opcode, paren, rest = rest.partition("(")
  if not paren:
    return None
  end = _closing("(" + rest, 0) - 1
  args, attrs = rest[:end], rest[end + 1 :]
  operands = re.findall(r"%([\w.\-]+)", args)
  calls = re.search(r"calls=%([\w.\-]+)", attrs)
  index = int(args) if opcode == "parameter" and args.strip().isdigit() else None
  return Instr(name, shape, opcode, operands, calls and calls.group(1), index)


def parse_hlo(text: str) -> tuple[dict[str, dict[str, Instr]], str]:
  """({computation: {instruction name: Instr}}, the entry computation's name)."""
  comps, entry, current = {}, None, None
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header:
      current = header.group(1)
      comps[current] = {}
      if line.startswith("ENTRY"):
        entry = current
      continue
    if current is not None and (instr := _parse_instr(line)):
      comps[current][instr.name] = instr
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text")
  return comps, entry


@dataclasses.dataclass
class Operand:
  """Where a dot's operand comes from: an entry parameter read as stored (with the ops
  of the dot's own fusion applied on the way, `fused`), or a `buffer` another
  instruction writes to memory, computed from the entry parameters `sources`."""

  param: Instr | None
  buffer: Instr | None
  fused: frozenset[str]
  sources: tuple[Instr, ...]


_FREE = ("bitcast",)  # no data movement


class DotOperands:
  """Traces the operands of every dot in an optimised HLO module back to the entry
  parameters: through bitcasts, into the fusions that hold the dots (XLA:CPU's YNNPACK
  and output fusions take their operands as fusion parameters) and out to the caller."""

  def __init__(self, text: str):
    self.comps, self.entry = parse_hlo(text)
    self.callers = {
        ins.calls: (comp, ins)
        for comp, body in self.comps.items()
        for ins in body.values()
        if ins.calls
    }

  def dots(self) -> Iterator[tuple[str, Instr]]:
    for comp, body in self.comps.items():
      for ins in body.values():
        if ins.opcode == "dot":
          yield comp, ins

  def origins(self, comp: str, name: str, home: str, fused=frozenset()) -> list[Operand]:
    """Where value `name` of computation `comp` comes from, for a dot in computation
    `home` (inside `home`, a fusion, ops are fused into the dot; elsewhere an op writes
    a buffer)."""
    ins = self.comps[comp][name]
    if ins.opcode in _FREE:
      return self.origins(comp, ins.operands[0], home, fused)
    if ins.opcode == "parameter":
      if comp == self.entry:
        return [Operand(ins, None, fused, (ins,))]
      if comp not in self.callers:  # a loop body's parameter: not followed
        return []
      caller, call = self.callers[comp]
      return self.origins(caller, call.operands[ins.index], home, fused)
    if ins.opcode == "constant":
      return []
    if comp == home and home != self.entry:
      return [o for x in ins.operands for o in self.origins(comp, x, home, fused | {ins.opcode})]
    return [Operand(None, ins, fused, tuple(self._params(comp, ins)))]

  def _params(self, comp: str, ins: Instr) -> Iterator[Instr]:
    """The entry parameters an instruction reads directly: through bitcasts, copies and
    transposes, and from a fusion's parameters out to its caller."""
    for x in ins.operands:
      yield from self._param_of(comp, x)

  def _param_of(self, comp: str, name: str) -> Iterator[Instr]:
    ins = self.comps[comp][name]
    if ins.opcode in _FREE + ("copy", "transpose"):
      yield from self._param_of(comp, ins.operands[0])
    elif ins.opcode == "parameter":
      if comp == self.entry:
        yield ins
      elif comp in self.callers:
        caller, call = self.callers[comp]
        yield from self._param_of(caller, call.operands[ins.index])


def is_weight(param: Instr) -> bool:
  """An entry parameter of the `params` argument holding a kernel (float, or quantised
  codes and scales) or the LM head; not a norm's scale nor the embedding table."""
  return param.name.startswith("params") and (
      "kernel" in param.name or "params__head" in param.name
  )


CODES = ("s8", "u8", "s4", "u4")  # the dtypes of quantised codes (models/quant.py: int8)


@dataclasses.dataclass
class Reads:
  """How the dots on one class of weights (quantised, or float) get them."""

  dots: int = 0
  direct: int = 0  # reading the stored array itself
  fused: int = 0  # converting it inside the dot's own fusion
  buffers: dict[str, Instr] = dataclasses.field(default_factory=dict)  # written apart
  stored: set[str] = dataclasses.field(default_factory=set)  # the stored dtypes

  @property
  def written(self) -> float:
    """Bytes of the separately written copies: each written once, then read by its dot."""
    return sum(b.nbytes for b in self.buffers.values())

  def describe(self, what: str, convert: str) -> str:
    n, m = self.dots, self.dots - self.direct - self.fused
    stored = "/".join(sorted(self.stored))
    if m == 0 and self.fused == 0:
      return f"{what} ({stored}): all {n} dots read the stored arrays directly"
    if m == 0:
      return f"{what} ({stored}): {self.fused} of {n} dots convert inside their own fusion: {convert} fused"
    big = max(self.buffers.values(), key=lambda b: b.nbytes)
    return (
        f"{what} ({stored}): {m} of {n} dots read a copy that a separate fusion writes whole "
        f"as {big.dtype} ({len(self.buffers)} buffers, largest {big.dtype}{list(big.dims)}, "
        f"{self.written / 1e6:.0f} MB a step written then re-read): {convert} materialised"
    )


@dataclasses.dataclass
class Verdict:
  """How a decode step's matmuls get the weights."""

  quantised: Reads  # kernels stored as codes + scales
  float: Reads  # float kernels and the LM head

  @property
  def written(self) -> float:
    return self.quantised.written + self.float.written

  def line(self, label: str) -> str:
    parts = []
    if self.quantised.dots:
      parts.append(self.quantised.describe("quantised kernels", "dequantisation"))
    if self.float.dots:
      parts.append(self.float.describe("float kernels and head", "conversion"))
    return f"{label}: " + "; ".join(parts)


def verdict(text: str) -> Verdict:
  """The verdict on one optimised HLO module (a Generator's decode step): a dot operand
  is a weight when it comes from a kernel or head parameter (`is_weight`), quantised when
  one of those is stored as codes."""
  hlo = DotOperands(text)
  quant, plain = Reads(), Reads()
  for comp, dot in hlo.dots():
    origins = [o for x in dot.operands for o in hlo.origins(comp, x, comp)]
    weights = [o for o in origins if any(is_weight(p) for p in o.sources)]
    if weights:
      o = weights[0]
      stored = {p.dtype for p in o.sources if is_weight(p)}
      reads = quant if stored & set(CODES) else plain
      reads.dots += 1
      reads.stored |= stored
      if o.buffer is not None:
        reads.buffers[o.buffer.name] = o.buffer
      elif "convert" in o.fused:
        reads.fused += 1
      else:
        reads.direct += 1
  return Verdict(quant, plain)


def excerpt(text: str) -> str:
  """The HLO evidence behind a verdict: for the first dot on a quantised kernel (else on
  any weight), the fusion that produces its kernel operand (computation and call) and the
  dot, with the fusion that holds the dot."""
  hlo = DotOperands(text)
  found = []
  for comp, dot in hlo.dots():
    for x in dot.operands:
      for o in hlo.origins(comp, x, comp):
        stored = {p.dtype for p in o.sources if is_weight(p)}
        if stored:
          found.append((not stored & set(CODES), comp, dot, o))
  if not found:
    return "(no dot reads a weight)"
  _, comp, dot, o = min(found, key=lambda f: f[0])
  lines = []
  if o.buffer is not None:
    if o.buffer.calls:
      body = text.split(f"\n%{o.buffer.calls} ", 1)[1].split("\n}", 1)[0]
      lines.append(f"%{o.buffer.calls} " + body + "\n}")
    lines.append(_line(text, o.buffer.name))
  if comp != hlo.entry:
    body = text.split(f"\n%{comp} ", 1)[1].split("\n}", 1)[0]
    lines.append(f"%{comp} " + body + "\n}")
    lines.append(_line(text, hlo.callers[comp][1].name))
  else:
    lines.append(_line(text, dot.name))
  return "\n".join(_short(x) for x in lines)


def _line(text: str, name: str) -> str:
  m = re.search(rf"^\s*(?:ROOT )?%{re.escape(name)} = .*$", text, re.M)
  return m.group(0) if m else ""


def _short(text: str) -> str:
  return re.sub(r", metadata=\{[^}]*\}|, backend_config=\S+", "", text)


# -- the table ----------------------------------------------------------------------------


def run(cfg: VLMConfig, kinds: list[str], new: int, repeats: int) -> tuple[list, dict]:
  """Rows (kind, batch, prefill tok/s, decode tok/s, StepBytes, Verdict, XLA's bytes
  accessed a step, bytes of fresh pages a step: the median step's page faults) and the HLO excerpts {(kind, batch): text}: `repeats` runs of `new`
  decode steps per shape, after compiling it."""
  rows, excerpts = [], {}
  for kind, kcfg, params in variants(cfg, kinds):
    gen = Generator(kcfg, params)
    params = None
    for b in BATCHES:
      ids, images = prompts(kcfg, b)
      step = compile_shapes(gen, ids, images, new + 1)
      prefill, steps, faults = zip(
          *(timed_generate(gen, ids, images, new + 1) for _ in range(repeats))
      )
      excerpts[kind, b] = excerpt(step.hlo)
      dt = float(np.median(np.concatenate(steps)))
      fresh = float(np.median(np.concatenate(faults))) * resource.getpagesize()
      sb, v = step_bytes(gen, step.state), verdict(step.hlo)
      rows.append(
          (kind, b, b * ids.shape[1] / min(prefill), b / dt, sb, v, step.bytes_accessed, fresh)
      )
      print(
          f"  {kind}, batch {b}: prefill {min(prefill):.2f} s, decode step {dt * 1e3:.0f} ms",
          flush=True,
      )
    gen = None
  return rows, excerpts


def print_table(cfg: VLMConfig, rows: list, bandwidth: float, new: int) -> None:
  mb = 1e6
  print(
      f"Prompt: {prompts(cfg, 1)[0].shape[1]} tokens a row (BOS, one image, {TEXT_TOKENS} of "
      f"text); {new} decode steps a run, EOS ignored. Prefill: the best run's time to the "
      "first token. Decode: the median step. Read: what a step must read, from the trees "
      "the generator holds: the LLM's layers (kernels, or codes + float32 scales; norms) + "
      "the head (LM head, final norm) + the KV cache (k and v of every layer and cache "
      "column: the step's attention reads them all) + B embedding rows. Bound: the "
      "streaming read rate / those bytes. Copies: the float kernels the compiled step "
      "writes before its dots read them (from its HLO), counted twice (written, re-read). "
      "XLA: the compiled step's own cost analysis, 'bytes accessed' (every instruction's "
      "operands and output; KV-cache copies included). Fresh pages: the median step's "
      "minor page faults x the page size: memory the step touches for the first time "
      "(buffers XLA:CPU allocates afresh each step; the kernel zeroes each page).\n"
  )
  print(
      "| params | batch | prefill, tok/s | decode, tok/s | read / step, MB (layers + head + KV) "
      "| bound, steps/s | bound, tok/s | decode / bound | copies, MB | read + copies, MB "
      "| decode / its bound | XLA bytes accessed, MB | decode / its bound | fresh pages, MB |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for kind, b, prefill, decode, sb, v, xla, fresh in rows:
    steps = bandwidth / sb.total
    moved = sb.total + 2 * v.written
    print(
        f"| {kind} | {b} | {prefill:.0f} | {decode:.3g} | {sb.total / mb:.0f} "
        f"({sb.layers / mb:.0f} + {sb.head / mb:.0f} + {sb.kv / mb:.0f}) | {steps:.3g} | "
        f"{steps * b:.3g} | {decode / (steps * b):.0%} | {2 * v.written / mb:.0f} | "
        f"{moved / mb:.0f} | {decode / (bandwidth / moved * b):.0%} | {xla / mb:.0f} | "
        f"{decode / (bandwidth / xla * b):.0%} | {fresh / mb:.0f} |"
    )
  print()
  for kind, b, *_, v, _, _ in rows:
    print(v.line(f"{kind} decode step, batch {b}"))


def print_excerpts(excerpts: dict) -> None:
  """Each step's evidence: the producer of one quantised kernel's dot operand, and the dot."""
  for (kind, b), text in excerpts.items():
    print(f"\n{kind} decode step, batch {b}:\n```\n{text}\n```")

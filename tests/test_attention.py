"""Attention backends against the reference: packed, padded, causal, GQA batches,
forward and gradients; what each backend refuses; the chunked backend's memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsvl_jax.models import attention as attn
from dsvl_jax.models.config import ATTENTION_IMPLS

B, T, H, KVH, D = 2, 40, 4, 2, 16


@pytest.fixture(scope="module")
def batch():
  """Row 0: three packed documents. Row 1: 5 tokens of left padding, then two
  documents. Causal, GQA (4 query heads over 2 key/value heads)."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(B, T, H, D)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(B, T, KVH, D)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(B, T, KVH, D)), jnp.float32)
  slot = jnp.broadcast_to(jnp.arange(T), (B, T))
  valid = jnp.asarray(np.arange(T)[None] >= np.array([[0], [5]]))
  seg = jnp.asarray(
      np.stack([np.repeat([1, 2, 3], [15, 15, 10]), np.repeat([0, 1, 2], [5, 20, 15])])
  )
  masks = dict(causal=True, q_slot=slot, k_slot=slot, k_valid=valid, q_segment=seg, k_segment=seg)
  return (q, k, v), masks, valid


def _value_and_grads(batch, impl, **extra):
  (q, k, v), masks, valid = batch
  w = valid.astype(jnp.float32)[..., None, None]  # padding queries are never read

  def loss(q, k, v):
    out = attn.attention(q, k, v, impl=impl, **masks, **extra)
    return jnp.sum(jnp.sin(out) * w), out * w

  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
  return out, grads


BACKENDS = {  # name -> attention() arguments; every backend this CPU can run
    "chunked, blocks of 16": dict(impl="chunked", chunk=16),
    "chunked, blocks of 7 (T padded)": dict(impl="chunked", chunk=7),
    "chunked, one block": dict(impl="chunked", chunk=64),
    "splash (Pallas interpreter)": dict(impl="splash", interpret=True),
}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_backend_matches_the_reference(batch, name):
  ref_out, ref_grads = _value_and_grads(batch, "xla")
  out, grads = _value_and_grads(batch, **BACKENDS[name])
  np.testing.assert_allclose(out, ref_out, atol=2e-6)
  for g, r, what in zip(grads, ref_grads, "qkv"):
    np.testing.assert_allclose(g, r, atol=1e-5, err_msg=f"d{what}")


@pytest.fixture
def blocked_everywhere(monkeypatch):
  """'blocked' on the fixture's 40 queries too (it hands fewer than 64 to 'xla')."""
  monkeypatch.setattr(attn, "BLOCKED_MIN_QUERIES", 1)


def test_blocked_matches_the_reference(batch, blocked_everywhere):
  """Packed, padded, causal GQA rows, forward and gradients."""
  ref_out, ref_grads = _value_and_grads(batch, "xla")
  out, grads = _value_and_grads(batch, "blocked")
  np.testing.assert_allclose(out, ref_out, atol=2e-6)
  for g, r, what in zip(grads, ref_grads, "qkv"):
    np.testing.assert_allclose(g, r, atol=1e-5, err_msg=f"d{what}")


def test_blocked_adds_each_heads_bias(batch, blocked_everywhere):
  """SAM's relative-position bias [B, H, Tq, Tk]: every head and row its own slice."""
  (q, k, v), masks, valid = batch
  bias = jnp.asarray(np.random.default_rng(3).normal(size=(B, H, T, T)), jnp.float32)
  ref = attn.attention(q, k, v, impl="xla", bias=bias, **masks)
  out = attn.attention(q, k, v, impl="blocked", bias=bias, **masks)
  w = valid[..., None, None]
  np.testing.assert_allclose(out * w, ref * w, atol=2e-6)
  assert not np.allclose(ref * w, attn.attention(q, k, v, impl="xla", **masks) * w)


def test_blocked_leaves_short_query_runs_to_the_reference(batch):
  """Fewer than BLOCKED_MIN_QUERIES queries (a decode step): the reference, bit for bit."""
  (q, k, v), masks, _ = batch
  ref = attn.attention(q, k, v, impl="xla", **masks)
  np.testing.assert_array_equal(attn.attention(q, k, v, impl="blocked", **masks), ref)


def test_generators_run_blocked_on_this_cpu():
  assert attn.for_inference("xla") == attn.for_inference("auto") == "blocked"
  assert attn.for_inference("chunked") == "chunked"


def test_cudnn_path_passes_gqa_natively_and_the_mask(batch):
  """The 'cudnn' backend's call (jax.nn.dot_product_attention with k/v at 2 heads and
  the dense mask), run by jax's XLA implementation: this CPU has no cuDNN."""
  (q, k, v), masks, valid = batch
  mask = attn.make_mask(
      masks["q_slot"],
      masks["k_slot"],
      causal=True,
      k_valid=masks["k_valid"],
      q_segment=masks["q_segment"],
      k_segment=masks["k_segment"],
  )
  out = attn.dot_product_attention(q, k, v, mask, D**-0.5, "xla")
  ref = attn.attention(q, k, v, impl="xla", **masks)
  w = valid[..., None, None]
  np.testing.assert_allclose(out * w, ref * w, atol=2e-6)


def test_config_lists_every_backend():
  assert ATTENTION_IMPLS == attn.IMPLS


@pytest.mark.parametrize("impl", ["chunked", "cudnn", "splash"])
def test_a_bias_is_refused_not_dropped(batch, impl):
  (q, k, v), masks, _ = batch
  with pytest.raises(NotImplementedError, match="bias"):
    attn.attention(q, k, v, impl=impl, bias=jnp.zeros((B, H, T, T)), **masks)


def test_splash_refuses_a_kv_cache(batch):
  (q, k, v), masks, _ = batch
  with pytest.raises(NotImplementedError, match="KV cache"):
    attn.attention(
        q[:, :1],
        k,
        v,
        impl="splash",
        causal=True,
        q_slot=masks["q_slot"][:, :1],
        k_slot=masks["k_slot"],
        interpret=True,
    )


def test_unknown_backend_is_named(batch):
  (q, k, v), _, _ = batch
  with pytest.raises(ValueError, match="'flash'"):
    attn.attention(q, k, v, impl="flash")


@functools.lru_cache(maxsize=None)
def _temp_bytes(impl: str, t: int) -> int:
  """Temporary bytes XLA allocates for forward + backward at sequence length t."""
  q = jax.ShapeDtypeStruct((1, t, 4, 32), jnp.float32)
  k = jax.ShapeDtypeStruct((1, t, 2, 32), jnp.float32)
  s = jax.ShapeDtypeStruct((1, t), jnp.int32)

  def f(q, k, v, slot, seg):
    out = attn.attention(
        q,
        k,
        v,
        impl=impl,
        causal=True,
        q_slot=slot,
        k_slot=slot,
        q_segment=seg,
        k_segment=seg,
        chunk=128,
    )
    return jnp.sum(out**2)

  compiled = jax.jit(jax.grad(f, argnums=(0, 1, 2))).lower(q, k, k, s, s).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_memory_grows_linearly_where_the_reference_grows_quadratically():
  """Measured (jax 0.10.2, CPU): T 512 -> 2048, reference 17 MB -> 270 MB (x16),
  chunked 6 MB -> 25 MB (x4)."""
  for t in (512, 1024):
    chunked = _temp_bytes("chunked", 2 * t) / _temp_bytes("chunked", t)
    ref = _temp_bytes("xla", 2 * t) / _temp_bytes("xla", t)
    assert chunked < 2.5, chunked  # linear: x2 per doubling (sub-quadratic: < x4)
    assert ref > 3.5, ref  # the reference's [T, T] logits and probabilities
  assert _temp_bytes("chunked", 2048) < _temp_bytes("xla", 2048) / 8


@pytest.mark.skipif(
    len(jax.devices()) < 8,
    reason="needs 8 devices (conftest simulates 8 on CPU; a single-accelerator run has 1)",
)
def test_splash_on_a_mesh_runs_per_shard_and_matches(batch):
  """On a (data 2, fsdp 2, tensor 2) mesh the kernel runs inside shard_map with rows
  over data x fsdp and heads over tensor (4 rows: the batch twice)."""
  from dsvl_jax.runtime import sharding

  (q, k, v), masks, valid = batch
  two = lambda x: jnp.concatenate([x, x])  # noqa: E731
  q, k, v, valid = two(q), two(k), two(v), two(valid)
  masks = {n: (two(m) if isinstance(m, jax.Array) else m) for n, m in masks.items()}
  ref = attn.attention(q, k, v, impl="xla", **masks)
  mesh = sharding.make_mesh((2, 2, 2))
  arrays = {n: m for n, m in masks.items() if n != "causal"}
  f = jax.jit(
      lambda q, k, v, m: attn.attention(q, k, v, impl="splash", interpret=True, causal=True, **m)
  )
  with jax.set_mesh(mesh), sharding.activation_rules():
    out = f(q, k, v, arrays)
    text = f.lower(q, k, v, arrays).as_text()
  assert "shard_map" in text or "sdy.manual_computation" in text
  w = valid[..., None, None]
  np.testing.assert_allclose(out * w, ref * w, atol=2e-6)


def test_chunked_llm_equals_the_reference_llm():
  """The tiny LLM on a packed batch: loss and gradients with 'chunked' equal 'xla'."""
  import dataclasses

  from conftest import tiny_config

  from dsvl_jax.models import DeepseekVL
  from dsvl_jax.models.init import init_params

  cfg = tiny_config("siglip")
  params = {"llm": init_params(cfg, jax.random.key(0))["llm"]}
  ids = np.random.default_rng(1).integers(3, 100, (2, 24))
  seg = np.repeat([[1, 2, 3], [1, 1, 2]], 8, axis=1)
  pos = np.concatenate([np.arange(8)] * 3)[None].repeat(2, 0)

  def run(impl):
    c = cfg.replace(
        compute=dataclasses.replace(cfg.compute, attention_impl=impl, attention_block=5)
    )

    def loss(p):
      out = DeepseekVL(c).apply({"params": p}, ids, positions=pos, segment_ids=seg)
      return jnp.mean(out["logits"] ** 2)

    return jax.jit(jax.value_and_grad(loss))(params)

  (l0, g0), (l1, g1) = run("xla"), run("chunked")
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_auto_picks_the_platforms_backend():
  """'auto' resolves per call from the mesh's platform (the AOT test compiles it for
  TPU, where it becomes splash): here, on CPU, the reference; anything with a bias or
  a KV cache falls back to the reference everywhere."""
  assert attn.resolve_impl("auto", self_attention=True, has_bias=False) == "xla"
  assert attn.resolve_impl("chunked", self_attention=False, has_bias=False) == "chunked"
  assert attn.resolve_impl("auto", self_attention=True, has_bias=True) == "xla"


def test_chunked_without_segment_ids_hides_the_keys_that_pad_its_last_block():
  """Decoding's masks: causal over cache slots and k_valid, no segment ids. 13 cache
  slots in blocks of 5 pad with 2 keys at slot 0; with segment ids their segment 0
  matches no query's, without them only their validity hides them (slot 0 is <= every
  query's). Queries at slots 6..9 (a prompt after 6 cached tokens); row 1 has 3 slots
  of left padding; slots 10..12 are not written yet."""
  rng = np.random.default_rng(4)
  s, tq = 13, 4
  q = jnp.asarray(rng.normal(size=(B, tq, H, D)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(B, s, KVH, D)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(B, s, KVH, D)), jnp.float32)
  q_slot = jnp.broadcast_to(6 + jnp.arange(tq), (B, tq))
  k_slot = jnp.broadcast_to(jnp.arange(s), (B, s))
  written = (np.arange(s)[None] >= np.array([[0], [3]])) & (np.arange(s)[None] < 10)

  def run(masks, impl, **extra):
    def loss(q, k, v):
      out = attn.attention(q, k, v, impl=impl, **masks, **extra)
      return jnp.sum(jnp.sin(out)), out

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)

  for k_valid in (jnp.asarray(written), None):
    masks = dict(causal=True, q_slot=q_slot, k_slot=k_slot, k_valid=k_valid)
    (_, ref), ref_grads = run(masks, "xla")
    (_, out), grads = run(masks, "chunked", chunk=5)
    what = "k_valid" if k_valid is not None else "causal only"
    np.testing.assert_allclose(out, ref, atol=2e-6, err_msg=what)
    for g, r, name in zip(grads, ref_grads, "qkv"):
      np.testing.assert_allclose(g, r, atol=1e-5, err_msg=f"{what}: d{name}")

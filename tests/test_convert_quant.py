"""Quantised checkpoints (issue 29): `python -m convert import --quantize` quantises each
targeted kernel as it is read (one layer of a stack at a time) and writes bit for bit
what quantising the float import gives; dsvl_jax.load reads it, quantises a float
checkpoint itself, places codes and scales on a mesh by the quantised config's rules;
`convert export` writes the dequantised float model, whose tensors a numpy dequantisation
written here reproduces and which quantises back to the same codes."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import ml_dtypes
import numpy as np
import pytest
from conftest import tiny_config
from flax import traverse_util
from original_layout import hf_to_original
from safetensors.numpy import save_file

from convert import params_to_state_dict
from convert.__main__ import main as cli
from dsvl_jax.checkpoint import params_io
from dsvl_jax.checkpoint.configs import to_hf, to_original
from dsvl_jax.checkpoint.formats import import_checkpoint, read_any
from dsvl_jax.checkpoint.loading import load
from dsvl_jax.checkpoint.mapping import ConversionError
from dsvl_jax.models import quant, quant_tree
from dsvl_jax.models.init import abstract_params, logical_axes
from dsvl_jax.runtime import sharding

KINDS = ("int8", "int4", "nf4")
# Every kind of Dense: the LLM's and both towers' stacked kernels (fused qkv [L, d, 3,
# h, hd] among them) and the aligner's unstacked ones.
TOWERS = ("llm/layers*/*_proj", "vision/siglip/*", "vision/sam/*", "aligner/*")
BLOCK = 16  # several blocks along the tiny kernels' last axes (16 to 128 values)
BF16 = np.dtype(ml_dtypes.bfloat16)


def flat(tree):
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def modules_q(tree) -> set[str]:
  return {p.rsplit("/", 2)[0] for p in flat(tree) if "/kernel_q/" in p}


def targeted(float_params) -> set[str]:
  """The Dense modules TOWERS names, by hand: every float kernel's but the LM head's and
  the convolutions' (patch embeddings, SAM's neck and downsampling)."""
  convs = ("patch_embed", "neck", "downsample", "lm_head")
  return {
      p[: -len("/kernel")]
      for p in flat(float_params)
      if p.endswith("/kernel") and not any(c in p for c in convs)
  }


def assert_same_tree(got, want):
  got, want = flat(got), flat(want)
  assert got.keys() == want.keys()
  for key in want:
    assert got[key].dtype == want[key].dtype, key
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def numpy_dequantize(codes, scale, kind):
  """Stored codes and scales -> float32 values, by numpy bit operations (models/quant.py
  docstring): int8 codes / 127, int4 two signed nibbles a byte (the first high) / 7,
  nf4 two level indices a byte (the first high) into NF4; times each block's scale,
  blocks of consecutive values along the last axis."""
  codes, scale = np.asarray(codes), np.asarray(scale)
  if kind == "int8":
    assert codes.dtype == np.int8
    q = codes.astype(np.float32) / np.float32(127)
  else:
    byte = codes.view(np.uint8).astype(np.int64)
    pairs = np.stack([byte >> 4, byte & 15], -1).reshape(*codes.shape[:-1], -1)
    if kind == "int4":
      assert codes.dtype == np.int8
      q = np.where(pairs >= 8, pairs - 16, pairs).astype(np.float32) / np.float32(7)
    else:
      assert codes.dtype == np.uint8
      q = quant.NF4[pairs]
  *lead, n = q.shape
  blocks = scale.shape[-1]
  return (q.reshape(*lead, blocks, n // blocks) * scale[..., None]).reshape(q.shape)


@functools.lru_cache(maxsize=None)
def _model(family):
  """(float config with TOWERS as compute.quant.targets, random float32 params: normal,
  so that every block has its own absmax)."""
  cfg = tiny_config(family, quant=dict(targets=TOWERS))
  rng = np.random.default_rng(1)
  draw = lambda a: rng.normal(0, 0.05, a.shape).astype(np.float32)
  return cfg, jax.tree.map(draw, abstract_params(cfg))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """{(family, layout): directory}: random tiny checkpoints in the transformers layout
  (float32) and the original release layout (bfloat16, with the tensors the release
  carries but never runs), each with our config (tiny sizes have no model name)."""
  out = {}
  for family in ("siglip", "hybrid"):
    cfg, params = _model(family)
    state = params_to_state_dict(params, cfg, "hf")
    orig = {k: v.astype(BF16) for k, v in hf_to_original(state, cfg.hybrid).items()}
    for layout, tensors, config in (("hf", state, to_hf), ("original", orig, to_original)):
      root = tmp_path_factory.mktemp(f"{family}_{layout}")
      save_file(tensors, str(root / "model.safetensors"), metadata={"format": "pt"})
      (root / "config.json").write_text(json.dumps(config(cfg)))
      params_io.write_config(root, cfg)
      out[family, layout] = root
  return out


@pytest.fixture(scope="module")
def imported(sources, tmp_path_factory):
  """{(family, kind): our checkpoint} imported from the transformers layout at float32
  ("none": the float import; the others with --quantize, blocks of BLOCK)."""
  out = {}
  for family in ("siglip", "hybrid"):
    for kind in ("none", *KINDS):
      dst = tmp_path_factory.mktemp("ckpt") / f"{family}_{kind}"
      args = ["import", "--src", str(sources[family, "hf"]), "--dst", str(dst), "--quiet"]
      assert cli(args + [f"--quantize={kind}", "--quant-block", str(BLOCK)]) == 0
      out[family, kind] = dst
  return out


def _inputs(cfg):
  k = cfg.num_image_tokens
  ids = np.array([[1, 4] + [cfg.image_token_id] * k + list(range(5, 25))])
  images = np.random.default_rng(0).random((1, 3, cfg.image_size, cfg.image_size), np.float32)
  return ids, images


@functools.lru_cache(maxsize=None)
def _float_read(src, dtype):
  return read_any(src, dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_the_streamed_import_is_the_float_import_quantised(sources, family, kind, monkeypatch):
  """Both layouts, float32 and bfloat16: to_params quantising as it reads gives bit for
  bit quant_tree.quantize_tree of the float import at that dtype (chat's `quantize`),
  having quantised stacked kernels one layer at a time."""
  seen = []
  quantize_kernel = quant_tree.quantize_kernel

  def spy(module, kernel, cfg, *, layer=False):
    out = quantize_kernel(module, kernel, cfg, layer=layer)
    if out is not None:
      seen.append((module, kernel.ndim, layer))
    return out

  monkeypatch.setattr(quant_tree, "quantize_kernel", spy)
  # float32 files read at bfloat16 (rounded, then quantised), bfloat16 files at float32
  for layout, dtype in (("hf", "bfloat16"), ("original", "float32")):
    fcfg, fparams = _float_read(sources[family, layout], dtype)
    seen.clear()
    qcfg, qparams = read_any(sources[family, layout], dtype, quantize=kind, quant_block=BLOCK)
    assert qcfg.compute.quant == dataclasses.replace(fcfg.compute.quant, kind=kind, block=BLOCK)
    assert qcfg.replace(compute=fcfg.compute) == fcfg
    monkeypatch.setattr(quant_tree, "quantize_kernel", quantize_kernel)
    want = quant_tree.quantize_tree(fparams, qcfg)
    monkeypatch.setattr(quant_tree, "quantize_kernel", spy)
    assert_same_tree(qparams, want)
    assert modules_q(qparams) == targeted(fparams)
    shapes = {k: v.shape for k, v in traverse_util.flatten_dict(fparams, sep="/").items()}
    for module, ndim, layer in seen:  # a stack's kernels came one layer at a time
      stacked = module.startswith("llm/layers/") or "/blocks/" in module
      assert layer == stacked and ndim == len(shapes[f"{module}/kernel"]) - stacked, module
    assert {m for m, _, _ in seen} == targeted(fparams)


@pytest.mark.parametrize("kind", KINDS)
def test_a_quantised_checkpoint_loads_as_the_float_one_quantised(imported, family, kind):
  """`convert import --quantize` saved the quantised config and tree; dsvl_jax.load
  reads it with no argument, and its logits are those of the float checkpoint loaded
  with quantize= (the same tree)."""
  path = imported[family, kind]
  saved = params_io.read_config(path).compute.quant
  assert (saved.kind, saved.block, saved.targets) == (kind, BLOCK, TOWERS)
  model = load(str(path))
  want = load(str(imported[family, "none"]), quantize=kind, quant_block=BLOCK)
  assert model.config == want.config
  assert_same_tree(model.params, want.params)
  if (family, kind) == ("hybrid", "int4"):  # both towers' codes at work
    ids, images = _inputs(model.config)
    np.testing.assert_array_equal(
        np.asarray(model.logits(ids, images=images)), np.asarray(want.logits(ids, images=images))
    )
  with pytest.raises(ValueError, match="quantised already"):
    load(str(path), quantize="int4")


def test_dtypes_of_a_quantised_load_are_those_of_the_float_load_quantised(sources, imported):
  """Codes keep their integer dtype, scales float32 (as the quantised model's Dense
  creates them), the rest the load's dtype: an int8 checkpoint read at bfloat16 has the
  tree of the bfloat16 float load quantised, and equals it when imported at bfloat16."""
  family, kind = "hybrid", "int8"
  want = load(str(imported[family, "none"]), dtype="bfloat16", quantize=kind, quant_block=BLOCK)
  got = load(str(imported[family, kind]), dtype="bfloat16")
  dtypes = lambda t: {
      k: (v.shape, np.dtype(v.dtype)) for k, v in traverse_util.flatten_dict(t, sep="/").items()
  }
  assert dtypes(got.params) == dtypes(want.params)
  assert dtypes(got.params) == dtypes(abstract_params(got.config))
  assert {v.dtype for k, v in flat(got.params).items() if k.endswith("kernel_q/scale")} == {
      np.dtype(np.float32)
  }
  assert {v.dtype for k, v in flat(got.params).items() if "kernel_q" not in k} == {BF16}
  src = imported[family, "none"].parent / "int8_bf16"
  assert import_checkpoint(
      sources[family, "hf"], src, "bfloat16", False, quantize=kind, quant_block=BLOCK
  )
  assert_same_tree(load(str(src), dtype="bfloat16").params, want.params)


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 devices (conftest simulates 8)")
def test_quantised_leaves_are_placed_by_the_quantised_configs_rules(sources, imported):
  """On a mesh every leaf (codes and scales included) has the sharding the logical-axis
  rules give the quantised config's tree, whether read quantised, quantised after an
  orbax restore or as a PyTorch directory is read; values as on one device."""
  family, kind = "siglip", "int4"
  mesh = sharding.make_mesh((2, 2, 2))
  single = load(str(imported[family, kind]))
  cfg = single.config
  want = traverse_util.flatten_dict(
      sharding.logical_to_mesh(logical_axes(cfg), mesh, shapes=abstract_params(cfg)), sep="/"
  )
  sharded_codes = 0
  for path, kwargs in (
      (imported[family, kind], {}),
      (imported[family, "none"], dict(quantize=kind, quant_block=BLOCK)),
      (sources[family, "hf"], dict(quantize=kind, quant_block=BLOCK)),
  ):
    model = load(str(path), mesh=mesh, **kwargs)
    assert model.config == cfg
    leaves = traverse_util.flatten_dict(model.params, sep="/")
    assert leaves.keys() == want.keys()
    for key, leaf in leaves.items():
      assert leaf.sharding.is_equivalent_to(want[key], leaf.ndim), key
      sharded_codes += (
          key.endswith("/codes") and leaf.addressable_shards[0].data.shape != leaf.shape
      )
    assert_same_tree(model.params, single.params)
  assert sharded_codes > 0  # the rules cut some codes across devices
  ids, images = _inputs(cfg)
  ref = np.asarray(single.logits(ids, images=images))
  err = np.abs(np.asarray(model.logits(ids, images=images)) - ref).max()
  assert err <= 1e-5 * np.abs(ref).max()  # float32 sums split across devices: reordered


@pytest.mark.parametrize("kind", KINDS)
def test_export_writes_the_dequantised_model_which_quantises_back(imported, family, kind, tmp_path):
  path = imported[family, kind]
  stored = flat(load(str(path)).params)
  for layout in ("original",) if kind == "int4" else ("hf",):
    out = tmp_path / layout
    args = ["export", "--src", str(path), "--dst", str(out), "--layout", layout, "--quiet"]
    assert cli(args) == 0
    assert "quant" not in (out / "config.json").read_text()
    assert params_io.read_config(out).compute.quant.kind == "none"
    cfg, params = read_any(out)  # the export, read back as a float model
    assert cfg.compute.quant.kind == "none"
    got = flat(params)
    assert got.keys() == {
        k.replace("/kernel_q/codes", "/kernel") for k in stored if not k.endswith("q/scale")
    }
    for key, value in got.items():
      module = key[: -len("/kernel")]
      if f"{module}/kernel_q/codes" in stored:
        codes, scale = stored[f"{module}/kernel_q/codes"], stored[f"{module}/kernel_q/scale"]
        want = numpy_dequantize(codes, scale, kind)
        if kind == "nf4":  # a table lookup times the scale: one rounding, as here
          np.testing.assert_array_equal(value, want, err_msg=key)
        else:  # XLA divides by 127 (7) as a multiply by float32(1 / 127): one rounding more
          np.testing.assert_allclose(value, want, rtol=2.5e-7, atol=0, err_msg=key)
      else:
        np.testing.assert_array_equal(value, stored[key], err_msg=key)
    # The absmax of each block dequantises to +-scale exactly (code +-127, +-7 or the
    # NF4 level +-1), and every other value to within rounding of its level: quantising
    # again finds the same scale and the same codes (no value lands on a tie).
    _, again = read_any(out, quantize=kind, quant_block=BLOCK)
    assert_same_tree(again, load(str(path)).params)


def test_an_invalid_quantize_fails_in_one_line_writing_nothing(sources, tmp_path, capsys):
  src = sources["siglip", "hf"]
  for args, needle in (
      (["--quantize=int8", "--quant-block", "48"], "does not split into blocks of 48"),
      (["--quantize=int4", "--quant-block", "5"], "must be even"),
  ):
    dst = tmp_path / "out"
    assert cli(["import", "--src", str(src), "--dst", str(dst), "--quiet", *args]) == 1
    err = capsys.readouterr().err
    assert needle in err and err.strip().count("\n") == 0, err
    assert not dst.exists() and not list(tmp_path.glob(".out.partial-*"))
  with pytest.raises(ConversionError, match="no quantisation 'int3'"):
    import_checkpoint(src, tmp_path / "out", progress=False, quantize="int3")
  with pytest.raises(ValueError, match="quant.block"):
    load(str(src), quantize="nf4", quant_block=3)
  assert not (tmp_path / "out").exists()

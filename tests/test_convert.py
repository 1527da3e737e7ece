"""Checkpoint conversion: round trips through transformers, the original layout,
sharded and bfloat16 files, and every error class (named, destination untouched)."""

import functools
import json
import pathlib
import shutil
import subprocess
import sys

import hf_reference as ref
import jax
import numpy as np
import pytest
import torch
from conftest import tiny_config
from flax import traverse_util
from original_layout import hf_to_original
from safetensors.numpy import load_file, save_file

import dsvl_jax
from convert import state_dict_to_params
from convert.__main__ import main as cli
from dsvl_jax.checkpoint import params_io
from dsvl_jax.checkpoint.configs import from_json, from_original, to_original
from dsvl_jax.checkpoint.safetensors_io import INDEX_NAME
from dsvl_jax.config.files import load_config
from dsvl_jax.models import VLMConfig
from dsvl_jax.runtime import sharding

# max|ours - ref| / max|ref| of the logits; measured 7e-7 to 1.3e-6 (CPU, both families,
# single device and mesh), as in test_parity
REL_TOL = 5e-6


@functools.lru_cache(maxsize=None)
def _model(family):
  cfg = tiny_config(family)
  return cfg, ref.build(cfg, seed=3)


@pytest.fixture(scope="module", params=["siglip", "hybrid"])
def saved(request, tmp_path_factory):
  """A tiny transformers model saved with save_pretrained, plus its inputs/logits."""
  cfg, hf = _model(request.param)
  root = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(root / "hf")
  k = cfg.num_image_tokens
  ids = np.array(
      [
          [1, 7] + [cfg.image_token_id] * k + [8, 9, 10],
          [1, 12] + [cfg.image_token_id] * k + [11, 9, 10],
      ]
  )
  images = np.random.default_rng(0).random((2, 3, cfg.image_size, cfg.image_size), dtype=np.float32)
  with torch.no_grad():
    logits = hf(
        input_ids=torch.from_numpy(ids).long(), **ref.pixel_kwargs(cfg, images)
    ).logits.numpy()
  return cfg, hf, root, ids, images, logits


def _close(ours, theirs):
  ours = np.asarray(ours)
  err, scale = np.abs(ours - theirs).max(), np.abs(theirs).max()
  assert err <= REL_TOL * scale, f"max |diff| {err:.3g} > {REL_TOL} x scale {scale:.3g}"


def _flat(params):
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def test_round_trip_through_transformers_is_bit_exact(saved):
  cfg, hf, root, ids, images, logits = saved
  (root / "hf" / "tokenizer.json").write_text('{"stand-in": true}')
  assert cli(["import", "--src", str(root / "hf"), "--dst", str(root / "ours"), "--quiet"]) == 0
  assert (root / "ours" / "tokenizer.json").read_text() == '{"stand-in": true}'
  assert (
      cli(
          [
              "export",
              "--src",
              str(root / "ours"),
              "--dst",
              str(root / "hf2"),
              "--layout",
              "hf",
              "--quiet",
          ]
      )
      == 0
  )
  assert (root / "hf2" / "tokenizer.json").exists()
  again = ref.model_class(cfg).from_pretrained(root / "hf2").eval()
  with torch.no_grad():
    out = again(input_ids=torch.from_numpy(ids).long(), **ref.pixel_kwargs(cfg, images)).logits
  assert torch.equal(out, torch.from_numpy(logits))  # float32 weights: bit-exact
  for name in ("hf", "ours", "hf2"):
    _close(dsvl_jax.load(str(root / name)).logits(ids, images=images), logits)


def test_original_layout_imports_and_round_trips(saved, capsys):
  cfg, hf, root, ids, images, logits = saved
  orig = root / "orig"
  orig.mkdir()
  save_file(hf_to_original(ref.state_dict(hf), cfg.hybrid), str(orig / "model.safetensors"))
  (orig / "config.json").write_text(json.dumps(to_original(cfg)))
  params_io.write_config(orig, cfg)  # tiny sizes are not expressible by model_name
  assert cli(["import", "--src", str(orig), "--dst", str(root / "from_orig"), "--quiet"]) == 0
  out = capsys.readouterr().out
  assert "original layout" in out and "attn_pool.latent" in out  # skipped, and said so
  if cfg.hybrid:
    assert "vision_model.high_layer_norm.weight" in out
  model = dsvl_jax.load(str(root / "from_orig"))
  _close(model.logits(ids, images=images), logits)
  _close(dsvl_jax.load(str(orig)).logits(ids, images=images), logits)

  assert (
      cli(
          [
              "export",
              "--src",
              str(root / "from_orig"),
              "--dst",
              str(root / "orig2"),
              "--layout",
              "original",
              "--quiet",
          ]
      )
      == 0
  )
  assert (
      cli(["import", "--src", str(root / "orig2"), "--dst", str(root / "from_orig2"), "--quiet"])
      == 0
  )
  a, b = _flat(model.params), _flat(dsvl_jax.load(str(root / "from_orig2")).params)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


def test_siglip_attention_pool_head_is_skipped_and_reported(saved, tmp_path, capsys):
  """A transformers checkpoint saved with SigLIP's default vision_use_head=True carries
  the never-used attention-pool head (11 tensors): skipped and named, like the original
  layout's attn_pool, under both SigLIP prefixes; the logits are the head-less model's."""
  cfg, hf, root, ids, images, logits = saved
  config = ref.hf_config(cfg)
  config.vision_config.vision_use_head = True
  headed = ref.model_class(cfg)(config).eval().to(torch.float32)
  ref.randomize(headed, seed=7)
  result = headed.load_state_dict(hf.state_dict(), strict=False)  # all but the head
  head = sorted(result.missing_keys)
  assert len(head) == 11 and all(k.startswith("model.vision_model.head.") for k in head)
  assert not result.unexpected_keys
  with torch.no_grad():
    out = headed(input_ids=torch.from_numpy(ids).long(), **ref.pixel_kwargs(cfg, images))
  assert torch.equal(out.logits, torch.from_numpy(logits))  # DeepSeek-VL never runs it
  headed.save_pretrained(tmp_path / "headed")
  assert (
      cli(["import", "--src", str(tmp_path / "headed"), "--dst", str(tmp_path / "ours"), "--quiet"])
      == 0
  )
  out = capsys.readouterr().out
  assert "skipped 11 tensors" in out and all(k in out for k in head)
  _close(dsvl_jax.load(str(tmp_path / "ours")).logits(ids, images=images), logits)

  # transformers 4.x wrote SigLIP under model.vision_model.vision_model.
  state = ref.state_dict(headed)
  want, _ = state_dict_to_params(state, cfg)
  old = {
      k.replace("model.vision_model.", "model.vision_model.vision_model.", 1): v
      for k, v in state.items()
  }
  got, unused = state_dict_to_params(old, cfg)
  assert unused == sorted(
      k.replace("model.vision_model.", "model.vision_model.vision_model.") for k in head
  )
  a, b = _flat(want), _flat(got)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


def test_sharded_and_bfloat16_files(saved, tmp_path):
  cfg, hf, root, ids, images, logits = saved
  if not (root / "ours").exists():
    cli(["import", "--src", str(root / "hf"), "--dst", str(root / "ours"), "--quiet"])
  assert (
      cli(
          [
              "export",
              "--src",
              str(root / "ours"),
              "--dst",
              str(tmp_path / "sharded"),
              "--shard-size",
              "60KB",
              "--quiet",
          ]
      )
      == 0
  )
  files = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
  assert len(files) > 2 and (tmp_path / "sharded" / INDEX_NAME).exists()
  _close(dsvl_jax.load(str(tmp_path / "sharded")).logits(ids, images=images), logits)

  hf16 = ref.model_class(cfg)(ref.hf_config(cfg))
  hf16.load_state_dict(hf.state_dict())
  hf16.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  assert (
      cli(
          [
              "import",
              "--src",
              str(tmp_path / "bf16"),
              "--dst",
              str(tmp_path / "ours16"),
              "--dtype",
              "float32",
              "--quiet",
          ]
      )
      == 0
  )
  got = _flat(dsvl_jax.load(str(tmp_path / "ours16")).params)
  want = _flat(dsvl_jax.load(str(root / "ours")).params)
  for key in want:  # exactly the bf16-rounded float32 weights
    rounded = np.asarray(want[key]).astype(np.dtype("bfloat16")).astype(np.float32)
    np.testing.assert_array_equal(got[key], rounded, err_msg=str(key))
  # --dtype bfloat16 stores the float32 import rounded to nearest bf16, from either file
  bf16 = np.dtype("bfloat16")
  for src, dst in ((tmp_path / "bf16", tmp_path / "keep16"), (root / "hf", tmp_path / "cast16")):
    assert (
        cli(["import", "--src", str(src), "--dst", str(dst), "--dtype", "bfloat16", "--quiet"]) == 0
    )
    model16 = _flat(dsvl_jax.load(str(dst), dtype="bfloat16").params)
    as_float32 = _flat(dsvl_jax.load(str(dst)).params)  # only bf16 storage reads back rounded
    assert model16.keys() == want.keys()
    for key in want:
      rounded = np.asarray(want[key]).astype(bf16)
      assert model16[key].dtype == bf16, key
      np.testing.assert_array_equal(model16[key], rounded, err_msg=f"{dst.name} {key}")
      np.testing.assert_array_equal(
          as_float32[key], rounded.astype(np.float32), err_msg=f"{dst.name} {key}"
      )


@pytest.mark.skipif(
    len(jax.devices()) < 8,
    reason="needs 8 devices (conftest simulates 8 on CPU; a single-accelerator run has 1)",
)
def test_load_onto_a_mesh(saved):
  """With a mesh, parameters are placed sharded as they are read (or restored)."""
  cfg, hf, root, ids, images, logits = saved
  if not (root / "ours").exists():
    cli(["import", "--src", str(root / "hf"), "--dst", str(root / "ours"), "--quiet"])
  mesh = sharding.make_mesh((2, 2, 2))
  for name in ("hf", "ours"):
    model = dsvl_jax.load(str(root / name), mesh=mesh)
    q = model.params["llm"]["layers"]["q_proj"]["kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape[1] == q.shape[1] // 2
    _close(model.logits(ids, images=images), logits)


def test_real_original_configs_parse():
  """config.json of the released 7B / 1.3B (reference 1.1): towers chosen by name."""
  language_7b = {
      "max_position_embeddings": 16384,
      "model_type": "llama",
      "num_hidden_layers": 30,
      "torch_dtype": "float16",
      "vocab_size": 102400,
  }
  clip = ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
  config_7b = {
      "model_type": "multi_modality",
      "language_config": language_7b,
      "aligner_config": {
          "cls": "MlpProjector",
          "params": {
              "depth": 2,
              "input_dim": 1024,
              "n_embed": 4096,
              "projector_type": "low_high_hybrid_split_mlp_gelu",
          },
      },
      "vision_config": {
          "cls": "HybridVisionTower",
          "params": {
              "concat_type": "tuple",
              "freeze_high": True,
              "freeze_low": True,
              "high_res_cfg": {
                  "model_name": "sam_b_downsample",
                  "image_size": 1024,
                  "select_feature": "same",
                  "select_layer": -1,
                  "output_dim": 1024,
                  "pixel_mean": clip[0],
                  "pixel_std": clip[1],
                  "ckpt_path": "",
              },
              "low_res_cfg": {
                  "model_name": "siglip_large_patch16_384",
                  "image_size": 384,
                  "select_feature": "same",
                  "select_layer": -1,
                  "output_dim": 1024,
                  "pixel_mean": [0.5] * 3,
                  "pixel_std": [0.5] * 3,
              },
          },
      },
  }
  want = VLMConfig.from_dict(load_config("configs/deepseek_vl_7b.py").model)
  got = from_original(config_7b)
  assert got.replace(compute=want.compute) == want
  config_1b = {
      "language_config": {
          "hidden_size": 2048,
          "intermediate_size": 5632,
          "num_attention_heads": 16,
          "num_hidden_layers": 24,
          "num_key_value_heads": 16,
          "vocab_size": 102400,
          "max_position_embeddings": 16384,
      },
      "aligner_config": {
          "params": {"depth": 2, "input_dim": 1024, "n_embed": 2048, "projector_type": "mlp_gelu"}
      },
      "vision_config": {
          "cls": "CLIPVisionTower",
          "params": {
              "image_size": 384,
              "model_name": "siglip_large_patch16_384",
              "pixel_mean": [0.5] * 3,
              "pixel_std": [0.5] * 3,
              "select_feature": "same",
              "select_layer": -1,
          },
      },
  }
  want = VLMConfig.from_dict(load_config("configs/deepseek_vl_1_3b.py").model)
  assert from_original(config_1b).replace(compute=want.compute) == want


def test_converted_hf_config_gets_deepseeks_token_ids():
  """transformers' converter leaves Llama's bos 1 / eos 2 in text_config (reference 1.2);
  with DeepSeek's vocabulary they become 100000 / 100001, pad = eos."""
  text = {
      "model_type": "llama",
      "vocab_size": 102400,
      "hidden_size": 2048,
      "intermediate_size": 5632,
      "num_hidden_layers": 24,
      "num_attention_heads": 16,
      "num_key_value_heads": 16,
      "max_position_embeddings": 16384,
      "bos_token_id": 1,
      "eos_token_id": 2,
      "pad_token_id": None,
  }
  vision = {
      "model_type": "siglip_vision_model",
      "hidden_size": 1024,
      "intermediate_size": 4096,
      "num_hidden_layers": 24,
      "num_attention_heads": 16,
      "image_size": 384,
      "patch_size": 16,
      "layer_norm_eps": 1e-6,
      "hidden_act": "gelu",
  }
  config = {
      "model_type": "deepseek_vl",
      "image_token_id": 100015,
      "text_config": text,
      "vision_config": vision,
  }
  want = VLMConfig.from_dict(load_config("configs/deepseek_vl_1_3b.py").model)
  got = from_json(config, "hf")
  assert (got.bos_token_id, got.eos_token_id, got.pad_token_id) == (100000, 100001, 100001)
  assert got.replace(compute=want.compute) == want
  # a vocabulary without DeepSeek's ids keeps the file's own
  small = from_json(
      {**config, "text_config": {**text, "vocab_size": 512}, "image_token_id": 300}, "hf"
  )
  assert (small.bos_token_id, small.eos_token_id, small.pad_token_id) == (1, 2, 2)


def test_transformers_4_siglip_prefix_imports_the_same_params(saved, tmp_path):
  """transformers 4.x files (deepseek-community's) nest SigLIP one level deeper,
  'model.vision_model.vision_model.*'; 5.x writes 'model.vision_model.*'."""
  cfg, hf, root, ids, images, logits = saved
  new, old = "model.vision_model.", "model.vision_model.vision_model."
  tensors = load_file(str(root / "hf" / "model.safetensors"))
  renamed = {old + k[len(new) :] if k.startswith(new) else k: v for k, v in tensors.items()}
  assert sum(k.startswith(old) for k in renamed) > 10
  src = tmp_path / "hf4"
  src.mkdir()
  save_file(renamed, str(src / "model.safetensors"), metadata={"format": "pt"})
  shutil.copy(root / "hf" / "config.json", src / "config.json")
  assert cli(["import", "--src", str(src), "--dst", str(tmp_path / "ours"), "--quiet"]) == 0
  got = _flat(dsvl_jax.load(str(tmp_path / "ours")).params)
  want = _flat(dsvl_jax.load(str(root / "hf")).params)
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))


# --- errors ------------------------------------------------------------------------------


@pytest.fixture
def hf_dir(tmp_path):
  cfg, hf = _model("siglip")
  hf.save_pretrained(tmp_path / "src")
  return tmp_path / "src"


def _fails(capsys, src, dst, *needles):
  assert cli(["import", "--src", str(src), "--dst", str(dst), "--quiet"]) == 1
  err = capsys.readouterr().err
  for needle in needles:
    assert needle in err, err
  assert not dst.exists()
  assert not list(dst.parent.glob(f".{dst.name}.partial-*"))
  return err


def _edit(src, fn):
  path = src / "model.safetensors"
  tensors = load_file(str(path))
  fn(tensors)
  save_file(tensors, str(path), metadata={"format": "pt"})


def test_missing_key_is_named(hf_dir, tmp_path, capsys):
  _edit(hf_dir, lambda t: t.pop("model.language_model.layers.1.mlp.up_proj.weight"))
  _fails(
      capsys,
      hf_dir,
      tmp_path / "dst",
      "missing",
      "model.language_model.layers.1.mlp.up_proj.weight",
  )


def test_unexpected_key_is_named(hf_dir, tmp_path, capsys):
  _edit(hf_dir, lambda t: t.update({"model.mystery.weight": np.zeros(3, np.float32)}))
  _fails(capsys, hf_dir, tmp_path / "dst", "unexpected", "model.mystery.weight")


def test_known_unused_tensors_are_skipped_and_reported(hf_dir, tmp_path, capsys):
  key = "model.language_model.layers.0.self_attn.rotary_emb.inv_freq"
  _edit(hf_dir, lambda t: t.update({key: np.zeros(8, np.float32)}))
  assert cli(["import", "--src", str(hf_dir), "--dst", str(tmp_path / "dst"), "--quiet"]) == 0
  assert key in capsys.readouterr().out


def test_shape_mismatch_names_key_and_shapes(hf_dir, tmp_path, capsys):
  key = "model.aligner.linear2.weight"
  _edit(hf_dir, lambda t: t.update({key: np.zeros((64, 63), np.float32)}))
  _fails(capsys, hf_dir, tmp_path / "dst", key, "expected (64, 64)", "found (64, 63)")


def test_truncated_file_is_named(hf_dir, tmp_path, capsys):
  path = hf_dir / "model.safetensors"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  _fails(capsys, hf_dir, tmp_path / "dst", str(path))


def test_missing_shard_is_named(hf_dir, tmp_path, capsys):
  shutil.move(hf_dir / "model.safetensors", hf_dir / "model-00001-of-00002.safetensors")
  keys = load_file(str(hf_dir / "model-00001-of-00002.safetensors")).keys()
  weight_map = {k: "model-00001-of-00002.safetensors" for k in keys}
  weight_map["model.language_model.norm.weight"] = "model-00002-of-00002.safetensors"
  (hf_dir / INDEX_NAME).write_text(json.dumps({"weight_map": weight_map}))
  _fails(capsys, hf_dir, tmp_path / "dst", "model-00002-of-00002.safetensors")


def test_pickle_checkpoints_are_refused(tmp_path, capsys):
  src = tmp_path / "pickle"
  src.mkdir()
  (src / "pytorch_model.bin").write_bytes(b"not loaded")
  (src / "config.json").write_text("{}")
  err = _fails(capsys, src, tmp_path / "dst", "pytorch_model.bin", "refused", "safetensors")
  assert "arbitrary code" in err


def test_existing_destination_is_left_alone(hf_dir, tmp_path, capsys):
  dst = tmp_path / "dst"
  dst.mkdir()
  (dst / "keep.txt").write_text("mine")
  assert cli(["import", "--src", str(hf_dir), "--dst", str(dst), "--quiet"]) == 1
  assert "already exists" in capsys.readouterr().err
  assert [p.name for p in dst.iterdir()] == ["keep.txt"]


def test_cli_help_documents_layouts():
  out = subprocess.run(
      [sys.executable, "-m", "convert", "--help"],
      capture_output=True,
      text=True,
      check=True,
      cwd=pathlib.Path(__file__).parent.parent,
  ).stdout
  for needle in ("hf", "original", "model.safetensors.index.json", "pickle"):
    assert needle in out.lower()

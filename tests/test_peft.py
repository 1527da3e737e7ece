"""LoRA interchange with PEFT: an adapter we export loads with `peft.PeftModel` onto
transformers' DeepSeek-VL and gives our logits; an adapter PEFT makes imports and gives
PEFT's logits; the merged model equals the unmerged one."""

import dataclasses
import json

import hf_reference as ref
import jax
import numpy as np
import peft
import pytest
import torch
from conftest import tiny_config
from test_parity import _hf_logits, _images, _left_pad

from dsvl_jax.checkpoint import adapters as peft_io
from dsvl_jax.checkpoint.convert import state_dict_to_params
from dsvl_jax.checkpoint.mapping import ConversionError
from dsvl_jax.models import DeepseekVL, lora
from dsvl_jax.models.config import LoraConfig
from dsvl_jax.models.init import abstract_params

RANK, ALPHA = 4, 8.0
LLM_REGEX = r".*language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"


def _batch(cfg):
  """Two left-padded rows, one with an image."""
  rng = np.random.default_rng(7)
  k, img, bos = cfg.num_image_tokens, cfg.image_token_id, cfg.bos_token_id
  rows = [
      [bos] + list(rng.integers(3, 400, 6)),
      [bos] + [img] * k + list(rng.integers(3, 400, 5)),
  ]
  ids, mask = _left_pad(rows, cfg.pad_token_id)
  return ids, mask, _images(cfg, 1, seed=8)


def _ours(cfg, params, batch):
  ids, mask, images = batch
  out = DeepseekVL(cfg).apply({"params": params}, ids, images, attention_mask=mask)
  return np.asarray(out["logits"])


def _theirs(model, cfg, batch):
  ids, mask, images = batch
  return _hf_logits(model, ids, mask, **ref.pixel_kwargs(cfg, images))


def _close(ours, theirs, mask):
  """Within 1e-5 of the logits' scale at the real positions."""
  m = mask.astype(bool)
  scale, err = np.abs(theirs[m]).max(), np.abs(ours[m] - theirs[m]).max()
  print(f"max |diff| {err:.2e}, relative {err / scale:.2e}")  # pytest -s
  assert err <= 1e-5 * scale


def _with_lora(base_cfg):
  lora_cfg = LoraConfig(rank=RANK, alpha=ALPHA)
  return base_cfg.replace(compute=dataclasses.replace(base_cfg.compute, lora=lora_cfg))


@pytest.fixture(scope="module", params=["siglip", "hybrid"])
def base(request):
  """(base config, a random transformers model, its weights as our tree)."""
  cfg = tiny_config(request.param)
  hf = ref.build(cfg, seed=1)
  params, _ = state_dict_to_params(ref.state_dict(hf), cfg)
  return cfg, hf, params


def test_our_adapter_runs_in_peft_and_merges(base, tmp_path):
  base_cfg, hf, base_params = base
  cfg = _with_lora(base_cfg)
  rng = np.random.default_rng(0)
  shapes = lora.flatten(lora.split(abstract_params(cfg))[0])
  adapters = lora.unflatten(
      {k: rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in shapes.items()}
  )
  params = lora.merge(base_params, adapters)
  peft_io.save_peft(params, cfg, tmp_path / "adapter", base="tiny")

  batch = _batch(base_cfg)
  ours = _ours(cfg, params, batch)
  assert np.abs(ours - _ours(base_cfg, base_params, batch)).max() > 1e-2  # it adapts
  model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
  try:
    _close(ours, _theirs(model, base_cfg, batch), batch[1])
  finally:
    model.unload()  # the module-scoped transformers model without adapter layers again

  plain_cfg, merged = lora.merged(params, cfg)
  assert plain_cfg.compute.lora.rank == 0 and not lora.split(merged)[0]
  _close(_ours(plain_cfg, merged, batch), ours, batch[1])


@pytest.mark.parametrize("saved", [None, ["aligner"]], ids=["lora", "lora+aligner"])
def test_an_adapter_peft_made_imports(base, tmp_path, saved):
  """PEFT's own adapter, randomised in PEFT; with modules_to_save the aligner trained in
  full (its copy randomised too) comes along."""
  base_cfg, hf, base_params = base
  model = peft.get_peft_model(
      hf,
      peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=LLM_REGEX, modules_to_save=saved),
  ).eval()
  try:
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
      for name, p in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero (and A as we do)
          p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        if "modules_to_save" in name:  # the trained copy PEFT saves
          p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(str(tmp_path / "theirs"))
    batch = _batch(base_cfg)
    theirs = _theirs(model, base_cfg, batch)
  finally:
    model.unload()
  cfg, adapters = peft_io.from_peft(tmp_path / "theirs", base_cfg)
  assert cfg.compute.lora.rank == RANK and cfg.compute.lora.alpha == ALPHA
  assert ("aligner" in adapters) == bool(saved)
  _close(_ours(cfg, lora.merge(base_params, adapters), batch), theirs, batch[1])
  if saved:  # PEFT's aligner matters: without it the logits are the base aligner's
    plain = lora.merge(base_params, {k: v for k, v in adapters.items() if k != "aligner"})
    assert np.abs(_ours(cfg, plain, batch) - theirs).max() > 1e-4


def test_an_adapter_we_cannot_map_is_refused_by_name(base, tmp_path):
  base_cfg, hf, base_params = base
  model = peft.get_peft_model(hf, peft.LoraConfig(r=2, target_modules=["q_proj"]))
  try:
    model.save_pretrained(str(tmp_path / "siglip_too"))
  finally:
    model.unload()
  with pytest.raises(ConversionError, match="vision_model.*adapts no linear module"):
    peft_io.from_peft(tmp_path / "siglip_too", base_cfg)
  (tmp_path / "empty").mkdir()
  with pytest.raises(ConversionError, match="not a PEFT adapter folder"):
    peft_io.from_peft(tmp_path / "empty", base_cfg)
  cfg = _with_lora(base_cfg)
  shapes = lora.flatten(lora.split(abstract_params(cfg))[0])
  ones = lora.unflatten({k: np.ones(v.shape, np.float32) for k, v in shapes.items()})
  peft_io.save_peft(lora.merge(base_params, ones), cfg, tmp_path / "dora")
  config = json.loads((tmp_path / "dora" / peft_io.CONFIG_FILE).read_text())
  peft_io.from_peft(tmp_path / "dora", base_cfg)  # as written, it imports
  (tmp_path / "dora" / peft_io.CONFIG_FILE).write_text(json.dumps({**config, "use_dora": True}))
  with pytest.raises(ConversionError, match="use_dora=True is not supported"):
    peft_io.from_peft(tmp_path / "dora", base_cfg)


def test_a_lora_run_exports_imports_and_merges_through_the_cli(tmp_path, capsys):
  """Train LoRA on a base run, the aligner in full beside it, then `python -m convert`:
  export --adapter (the aligner as PEFT's modules_to_save) loads in PEFT on the
  exported base with our logits; import --adapter restores the run's parameters bit for
  bit; export --merge equals the unmerged model; a plain export refuses."""
  from train_fixtures import run_config

  import dsvl_jax
  from convert.__main__ import main as convert
  from dsvl_jax.train.trainer import Trainer

  base_wd, lora_wd = tmp_path / "base", tmp_path / "lora"
  Trainer(run_config(**{"train.steps": 2}), base_wd).run()
  fields = {
      "train.steps": 3,
      "train.init_from": str(base_wd),
      "train.trainable": ("llm", "aligner"),  # the LLM through its adapters
      "model.compute.lora.rank": RANK,
  }
  Trainer(run_config(**fields), lora_wd).run()
  run = dsvl_jax.load(str(lora_wd))
  batch = _batch(run.config)
  ours = _ours(run.config, run.params, batch)

  assert convert(["export", "--quiet", "--src", str(lora_wd), "--dst", str(tmp_path / "x")]) == 1
  assert not (tmp_path / "x").exists()
  assert convert(["export", "--quiet", "--src", str(base_wd), "--dst", str(tmp_path / "hf")]) == 0
  args = ["--quiet", "--src", str(lora_wd), "--dst", str(tmp_path / "peft")]
  assert convert(["export", "--adapter", *args]) == 0
  saved = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["modules_to_save"]
  assert saved == ["model.aligner"]
  hf = ref.model_class(run.config).from_pretrained(tmp_path / "hf").eval()
  base_logits = _theirs(hf, run.config, batch)
  model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "peft")).eval()
  _close(ours, _theirs(model, run.config, batch), batch[1])
  # without the trained aligner PEFT's answer is another one: modules_to_save carries it
  no_aligner = lora.merge(run.params, {"aligner": _final_base_aligner(base_wd)})
  assert np.abs(_ours(run.config, no_aligner, batch) - ours).max() > 1e-4
  assert np.abs(base_logits - ours).max() > 1e-4

  args = ["--src", str(tmp_path / "peft"), "--base", str(base_wd), "--dst", str(tmp_path / "in")]
  assert convert(["import", "--adapter", *args]) == 0
  back = dsvl_jax.load(str(tmp_path / "in"))
  lora_back, lora_run = back.config.compute.lora, run.config.compute.lora
  assert (lora_back.rank, lora_back.alpha) == (lora_run.rank, lora_run.alpha)
  assert lora.flatten(back.params).keys() == lora.flatten(run.params).keys()
  for path, leaf in lora.flatten(run.params).items():
    np.testing.assert_array_equal(np.asarray(lora.flatten(back.params)[path]), leaf, path)

  args = ["--quiet", "--src", str(lora_wd), "--dst", str(tmp_path / "merged")]
  assert convert(["export", "--merge", "--layout", "original", *args]) == 0
  merged = dsvl_jax.load(str(tmp_path / "merged"))
  assert merged.config.compute.lora.rank == 0
  _close(_ours(merged.config, merged.params, batch), ours, batch[1])


def _final_base_aligner(base_wd):
  import dsvl_jax

  return dsvl_jax.load(str(base_wd)).params["aligner"]


def test_chat_eval_and_serve_load_an_unmerged_peft_adapter(tmp_path):
  """`{chat,eval,serve}.adapter`: the checkpoint with a PEFT folder's adapters beside its
  kernels (logits equal to the merged tree's), and a bad folder is a ConfigError naming
  the field."""
  from dsvl_jax.checkpoint import params_io
  from dsvl_jax.config.files import load_config
  from dsvl_jax.config.schema import ConfigError
  from dsvl_jax.infer.load import load_model
  from dsvl_jax.models.init import init_params

  base_cfg = tiny_config("siglip")
  base_params = jax.tree.map(np.asarray, init_params(base_cfg, jax.random.key(4)))
  params_io.save(tmp_path / "base", base_params, base_cfg)
  cfg = _with_lora(base_cfg)
  rng = np.random.default_rng(5)
  shapes = lora.flatten(lora.split(abstract_params(cfg))[0])
  adapters = lora.unflatten(
      {k: rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in shapes.items()}
  )
  peft_io.save_peft(lora.merge(base_params, adapters), cfg, tmp_path / "peft")

  config = load_config("configs/tiny.py")
  batch = _batch(base_cfg)
  want = _ours(cfg, lora.merge(base_params, adapters), batch)
  for name in ("chat", "eval", "serve"):
    section = config[name]
    section.checkpoint, section.adapter = str(tmp_path / "base"), str(tmp_path / "peft")
    got_cfg, got = load_model(config, section, name)
    assert got_cfg.compute.lora.rank == RANK
    np.testing.assert_array_equal(_ours(got_cfg, got, batch), want)
    section.adapter = str(tmp_path)
    with pytest.raises(ConfigError, match=f"'{name}.adapter'.*not a PEFT adapter folder"):
      load_model(config, section, name)

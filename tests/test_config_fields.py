"""Every field of every config section is a key of every shipped config (issue 24).

ml_collections refuses a command-line override of a key that does not exist, so a field
left out of configs/*.py can only be changed by editing the file: `--config.data.strict=True`
ended in an AttributeError traceback. Sections are checked against their dataclasses,
recursively (nested dataclasses, and each entry of a name -> dataclass mapping such as
`data.sources`), for every config file and every arg it accepts.
"""

import dataclasses
import importlib.util
import subprocess
import sys
import tempfile
import typing

import pytest
from absl import flags
from ml_collections import config_flags

from dsvl_jax.config.files import REPO_ROOT
from dsvl_jax.data.config import DataConfig
from dsvl_jax.eval.eval_config import EvalConfig
from dsvl_jax.infer import chat_config
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.runtime.compile_cache import CompileCacheConfig
from dsvl_jax.runtime.distributed import DistributedConfig
from dsvl_jax.serve.serve_config import ServeConfig
from dsvl_jax.train.config import MeshConfig, OptimizerConfig, TrainConfig, optimizer_config

# section -> the dataclass its block is parsed into (trainer RunConfig.of, main.py, the modes)
SECTIONS = {
    "model": VLMConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "optimizer": OptimizerConfig,
    "mesh": MeshConfig,
    "serve": ServeConfig,
    "eval": EvalConfig,
    "distributed": DistributedConfig,
    "compile_cache": CompileCacheConfig,
    "chat": chat_config.ChatConfig,
}
# Read by main.py or reachable with --config.mode=... in every mode, so in every config.
EVERY_CONFIG = ("model", "chat", "serve", "eval", "distributed", "compile_cache")
TRAINING = ("data", "train", "optimizer", "mesh")
# Not sections: scalars, and the demo's per-stage overrides (partial by design).
OTHER_KEYS = {"mode", "seed", "demo"}


def _module(path):
  spec = importlib.util.spec_from_file_location(f"_fields_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _shipped():
  """(spec, module) for every configs/*.py and every arg in its ARGS."""
  out = []
  for path in sorted((REPO_ROOT / "configs").glob("*.py")):
    module = _module(path)
    for arg in module.ARGS:
      out.append((f"configs/{path.name}" + (f":{arg}" if arg else ""), module))
  return out


SHIPPED = _shipped()


def _config(spec, module):
  return module.get_config(spec.partition(":")[2] or None)


def _nested(hint):
  """The dataclass a field holds (also through `X | None`), else None."""
  if dataclasses.is_dataclass(hint):
    return hint
  subs = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
  return subs[0] if subs else None


def _mapping_entry(hint):
  """X for `tuple[tuple[str, X], ...]`: a field the config holds as a mapping name -> X."""
  args = typing.get_args(hint)
  if typing.get_origin(hint) is tuple and args and typing.get_origin(args[0]) is tuple:
    pair = typing.get_args(args[0])
    if len(pair) == 2 and pair[0] is str:
      return pair[1]
  return None


def problems(cls, block, path):
  """Dotted fields of `cls` that `block` lacks or holds with a type an override refuses."""
  out = []
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    name = f"{path}.{f.name}"
    if f.name not in block:
      out.append(f"{name}: missing")
      continue
    value, hint = block[f.name], hints[f.name]
    if (sub := _nested(hint)) is not None:
      if value is not None or type(None) not in typing.get_args(hint):  # sam=None: no tower
        out += problems(sub, value, name)
    elif (entry := _mapping_entry(hint)) is not None:
      if not hasattr(value, "keys"):
        out.append(f"{name}: expected a mapping name -> {entry.__name__}")
      elif dataclasses.is_dataclass(entry):
        out += [p for key in value.keys() for p in problems(entry, value[key], f"{name}.{key}")]
    elif f.default is not dataclasses.MISSING and isinstance(f.default, (bool, int, float, str)):
      # A float field holding 1 would refuse --config.x=0.5 (ml_collections is type-safe).
      if type(value) is not type(f.default):
        out.append(f"{name}: {type(value).__name__}, the field is {type(f.default).__name__}")
  return out


def test_every_config_file_lists_its_args():
  assert {spec.partition(":")[0] for spec, _ in SHIPPED} == {
      f"configs/{p.name}" for p in (REPO_ROOT / "configs").glob("*.py")
  }
  assert "configs/deepseek_vl_1_3b.py:stage3" in {spec for spec, _ in SHIPPED}


@pytest.mark.parametrize("spec,module", SHIPPED, ids=[s for s, _ in SHIPPED])
def test_every_dataclass_field_is_a_key(spec, module):
  config = _config(spec, module)
  unknown = set(config) - set(SECTIONS) - OTHER_KEYS
  assert not unknown, f"{spec}: sections without a schema in this test: {sorted(unknown)}"
  want = EVERY_CONFIG + (TRAINING if "data" in config or config.mode == "train" else ())
  assert not set(want) - set(config), f"{spec}: missing sections {set(want) - set(config)}"
  found = [
      p
      for name, cls in SECTIONS.items()
      if name in config
      for p in problems(cls, config[name], name)
  ]
  assert not found, f"{spec}:\n  " + "\n  ".join(found)


def test_data_fields_override_from_the_command_line(monkeypatch):
  """The issue's command line, parsed by ml_collections as main.py parses it."""
  argv = [
      "prog",
      f"--config={REPO_ROOT}/configs/deepseek_vl_1_3b.py:stage3",
      "--config.data.strict=True",
      "--config.data.shuffle=False",
      "--config.data.max_consecutive_skips=5",
      "--config.data.prefetch_batches=0",
      "--config.data.sources.text_sft.synthetic_size=7",
      '--config.train.init_groups={"siglip": "ckpt/siglip"}',
      "--config.optimizer.lr_scales.siglip=0.1",
      "--config.mesh.num_devices=4",
      "--config.model.compute.scan_unroll=2",
  ]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  values = flags.FlagValues()
  flag = config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  values(argv)
  data = DataConfig.from_dict(flag.value.data)
  assert (data.strict, data.shuffle, data.max_consecutive_skips, data.prefetch_batches) == (
      True,
      False,
      5,
      0,
  )
  assert dict(data.sources)["text_sft"].synthetic_size == 7
  assert dict(flag.value.train.init_groups) == {"siglip": "ckpt/siglip"}
  assert optimizer_config(flag.value.optimizer).lr_scales.siglip == 0.1
  assert VLMConfig.from_dict(flag.value.model).compute.scan_unroll == 2


def test_an_override_of_a_documented_field_reaches_the_config_check():
  """End to end: the override parses, and a bad value elsewhere is one line, exit 2."""
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "dsvl_jax.main",
          "--config=configs/deepseek_vl_1_3b.py:stage3",
          "--config.data.strict=True",
          "--config.mode=none",
      ],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert len(lines) == 1 and "config field 'mode'" in lines[0], out.stderr


def test_a_workdir_written_before_a_field_was_shipped_still_resumes(tmp_path):
  """A config.json without the data fields the configs gained (the run used their
  defaults) resumes under the current config; a changed pinned field is still refused."""
  import json  # pylint: disable=g-import-not-at-top

  from dsvl_jax.config.files import load_config  # pylint: disable=g-import-not-at-top
  from dsvl_jax.config.schema import ConfigError  # pylint: disable=g-import-not-at-top
  from dsvl_jax.train import workdir  # pylint: disable=g-import-not-at-top

  config = load_config("configs/tiny.py")
  old = workdir.config_dict(config)
  for key in ("shuffle", "append_eos", "strict", "prefetch_batches"):  # absent before
    del old["data"][key]
  for source in old["data"]["sources"].values():
    del source["paths"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir.prepare(tmp_path, config, resuming=True, write=False)
  config.data.shuffle = not config.data.shuffle
  with pytest.raises(ConfigError, match=r"data\.shuffle"):
    workdir.prepare(tmp_path, config, resuming=True, write=False)


@pytest.mark.parametrize(
    "args,says",
    [
        (
            ["--config=configs/tiny.py", "--config.data.strictt=True"],
            "names a field the config does not have: 'strictt' Did you mean \"strict\"",
        ),
        (["--config=configs/tiny.py", "--config.train.steps=1.5"], "--config.train.steps=1.5"),
        (["--config=configs/tiny.py:bogus"], "unknown family 'bogus'"),
        (["--config=configs/nope.py"], "No such file or directory: 'configs/nope.py'"),
        (
            [
                "--config=configs/tiny.py",
                f"--workdir={tempfile.mkdtemp()}",
                "--config.data.schedule=constant",
                "--config.data.multimodal_share=1.0",
                '--config.data.sources={"mine": {"type": "jsonl", "paths": ["absent.jsonl"], '
                '"modality": "multimodal"}}',
            ],
            "manifest not found: 'absent.jsonl'",
        ),
    ],
)
def test_a_command_line_mistake_is_one_line_and_exit_2(args, says):
  out = subprocess.run(
      [sys.executable, "-m", "dsvl_jax.main", *args],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 2, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and says in lines[-1], out.stderr[-2000:]
  assert "Traceback" not in out.stderr, out.stderr[-2000:]

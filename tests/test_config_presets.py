"""Model presets, typed choices and the shared config argument parser (issue 25, item 5).

The configs were rewritten over presets and dataclass defaults; every shipped config and
arg must still render to exactly what it rendered before (the fixture was saved at
0d309d5, before the change): the same keys, the same values, the same JSON types (an
int field that became a float would refuse `--config.x=3` overrides differently).
"""

import dataclasses
import importlib.util
import json
import pathlib
import subprocess
import sys
import typing

import pytest

from dsvl_jax.config import presets
from dsvl_jax.config.args import parse_arg
from dsvl_jax.config.files import REPO_ROOT, load_config
from dsvl_jax.config.schema import ConfigError, build_dataclass, choices
from dsvl_jax.infer.chat_config import ChatConfig, ImagePosition
from dsvl_jax.infer.chat_config import default_config as chat_default

FIXTURE = pathlib.Path(__file__).parent / "config_fixtures" / "rendered_configs.json"
RENDERED = json.loads(FIXTURE.read_text())


def differences(got, want, path=""):
  """Dotted keys where `got` and `want` (JSON data) differ, with both sides."""
  if isinstance(got, dict) and isinstance(want, dict):
    out = []
    for key in sorted(set(got) | set(want)):
      sub = f"{path}.{key}" if path else key
      if key not in want:
        out.append(f"{sub}: added ({got[key]!r})")
      elif key not in got:
        out.append(f"{sub}: missing (was {want[key]!r})")
      else:
        out += differences(got[key], want[key], sub)
    return out
  if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
    return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{path}[{i}]")]
  if type(got) is not type(want) or got != want:  # 1 == 1.0 == True, but not as config values
    return [f"{path}: {got!r} ({type(got).__name__}), was {want!r} ({type(want).__name__})"]
  return []


def test_the_differences_name_the_dotted_keys():
  got = {"a": {"b": 1, "c": [1, 2.0]}, "d": 0}
  want = {"a": {"b": 1.0, "c": [1, 3.0]}, "e": 0}
  assert differences(got, want) == [
      "a.b: 1 (int), was 1.0 (float)",
      "a.c[1]: 2.0 (float), was 3.0 (float)",
      "d: added (0)",
      "e: missing (was 0)",
  ]


@pytest.mark.parametrize("spec", sorted(RENDERED))
def test_every_config_renders_as_before(spec):
  got = json.loads(load_config(spec).to_json_best_effort())
  found = differences(got, RENDERED[spec])
  assert not found, f"{spec} renders differently:\n  " + "\n  ".join(found)


def test_the_fixture_covers_every_shipped_config_and_arg():
  specs = set()
  for path in sorted((REPO_ROOT / "configs").glob("*.py")):
    spec = importlib.util.spec_from_file_location(f"_presets_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    specs |= {f"configs/{path.name}" + (f":{a}" if a else "") for a in module.ARGS}
  assert specs == set(RENDERED)


@pytest.mark.parametrize("name", ["deepseek_vl_7b", "deepseek_vl_1_3b"])
def test_the_release_configs_override_only_what_differs(name):
  assert len((REPO_ROOT / "configs" / f"{name}.py").read_text().splitlines()) < 60


def test_presets_are_complete_models():
  """Each preset builds and validates as a VLMConfig, and the 7B differs from the 1.3B
  only where the releases do."""
  from dsvl_jax.models.config import VLMConfig  # pylint: disable=g-import-not-at-top

  cfgs = {name: VLMConfig.from_dict(presets.model(name)) for name in presets.PRESETS}
  assert not cfgs["1.3b"].hybrid and cfgs["7b"].hybrid and cfgs["demo"].hybrid
  assert cfgs["tiny_hybrid"].hybrid and not cfgs["tiny"].hybrid
  assert cfgs["7b"].siglip == cfgs["1.3b"].siglip and cfgs["7b"].compute == cfgs["1.3b"].compute
  # The 1.3B preset is also the dataclasses' default model, but for the compute dtype.
  assert cfgs["1.3b"].replace(compute=VLMConfig().compute) == VLMConfig()
  assert cfgs["7b"].sam.pixel_mean == presets.CLIP_MEAN


def test_a_preset_takes_overrides_section_by_section():
  m = presets.model("7b", compute=dict(remat_policy="full"), llm=dict(num_layers=2))
  assert (m.compute.remat_policy, m.compute.dtype, m.llm.num_layers, m.llm.hidden_size) == (
      "full",
      "bfloat16",
      2,
      4096,
  )
  assert presets.model("7b").compute.remat_policy == "none"  # presets are not mutated
  with pytest.raises(ValueError, match="unknown model preset '13b'"):
    presets.model("13b")


def test_config_files_stay_free_of_jax():
  code = (
      "import sys; from dsvl_jax.config.files import load_config; "
      "[load_config(s) for s in sys.argv[1:]]; print('jax' in sys.modules)"
  )
  out = subprocess.run(
      [sys.executable, "-c", code, *sorted(RENDERED)],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      check=True,
  )
  assert out.stdout.strip() == "False"


# --- the shared argument parser --------------------------------------------------------


def test_parse_arg():
  stages = {None: None, "stage1": 1, "stage2": 2}
  assert parse_arg(None, stages, "configs/x.py") is None
  assert parse_arg("", stages, "configs/x.py") is None
  assert parse_arg("stage2", stages, "configs/x.py") == 2
  with pytest.raises(
      ValueError,
      match=r"^configs/x\.py: unknown stage 'stage9'; use one of: " r"'stage1', 'stage2', none$",
  ):
    parse_arg("stage9", stages, "/repo/configs/x.py", what="stage")


@pytest.mark.parametrize(
    "spec,says",
    [
        ("configs/deepseek_vl_7b.py:stage4", "unknown stage 'stage4'"),
        ("configs/deepseek_vl_1_3b.py:chat", "unknown stage 'chat'"),
        ("configs/tiny.py:bogus", "unknown family 'bogus'"),
        ("configs/demo.py:fast", "unknown argument 'fast'"),
    ],
)
def test_every_config_file_refuses_an_unknown_arg(spec, says):
  with pytest.raises(ValueError, match=says):
    load_config(spec)


def test_tiny_takes_siglip_as_no_argument():
  assert load_config("configs/tiny.py:siglip").to_dict() == load_config("configs/tiny.py").to_dict()


# --- Literal choices, checked once -----------------------------------------------------


def _set(d, dotted, value):
  *parents, leaf = dotted.split(".")
  for p in parents:
    d = d[p]
  d[leaf] = value


@pytest.mark.parametrize(
    "section,field,allowed",
    [
        (
            "model",
            "compute.attention_impl",
            "('auto', 'xla', 'blocked', 'chunked', 'cudnn', 'splash')",
        ),
        ("model", "compute.remat_policy", "('none', 'full', 'dots', 'dots_no_batch')"),
        ("model", "compute.param_dtype", "('float32', 'bfloat16', 'float16')"),
        ("model", "aligner.type", "('mlp_gelu', 'low_high_hybrid_split_mlp_gelu')"),
        ("optimizer", "schedule", "('cosine', 'step', 'constant')"),
        ("train", "nonfinite", "('skip', 'stop')"),
        ("train", "trainable", "('llm', 'aligner', 'siglip', 'sam', 'sam_neck')"),
        ("data", "schedule", "('constant', 'warmup')"),
        ("data", "sources.shapes.modality", "('text', 'multimodal')"),
        (
            "data",
            "sources.shapes.type",
            "('jsonl', 'array_record', 'synthetic', 'llava', 'parquet', 'webdataset', "
            "'image_folder', 'mmc4')",
        ),
        ("chat", "image_position", "('first', 'last')"),
        ("chat", "dtype", "('float32', 'bfloat16')"),
        ("serve", "web_image_position", "('first', 'last')"),
        ("eval", "normalize", "('mean', 'sum')"),
        ("distributed", "mode", "('auto', 'initialize', 'none')"),
    ],
)
def test_a_bad_choice_is_one_line_naming_the_field_and_the_choices(section, field, allowed):
  # pylint: disable=g-import-not-at-top
  from dsvl_jax.data.config import DataConfig
  from dsvl_jax.eval.eval_config import EvalConfig
  from dsvl_jax.models.config import VLMConfig
  from dsvl_jax.runtime.distributed import distributed_config
  from dsvl_jax.serve.serve_config import ServeConfig
  from dsvl_jax.train import config as train

  parse = {
      "model": VLMConfig.from_dict,
      "optimizer": train.optimizer_config,
      "train": train.train_config,
      "data": DataConfig.from_dict,
      "chat": ChatConfig.from_dict,
      "serve": ServeConfig.from_dict,
      "eval": EvalConfig.from_dict,
      "distributed": distributed_config,
  }[section]
  block = load_config("configs/tiny.py:hybrid")[section].to_dict()
  value = ("bogus",) if field == "trainable" else "bogus"
  _set(block, field, value)
  with pytest.raises(ConfigError) as e:
    parse(block)
  assert str(e.value) == f"config field '{section}.{field}': 'bogus' not in {allowed}"


def test_a_choice_is_not_passed_by_an_equal_value_of_another_type():
  from dsvl_jax.data.config import DataConfig  # pylint: disable=g-import-not-at-top

  d = load_config("configs/tiny.py").data.to_dict()
  d["stage"] = 4
  with pytest.raises(ConfigError, match=r"'data\.stage': 4 not in \(1, 2, 3\)"):
    DataConfig.from_dict(d)
  with pytest.raises(ConfigError, match="expected an int"):  # not True == 1
    DataConfig.from_dict({**d, "stage": True})
  assert build_dataclass(ChatConfig, {"image_position": "last"}, "chat").image_position == "last"


def test_lists_of_choices_come_from_one_place():
  """Derived from the Literal types; the lists that modules outside the config layer
  still spell out themselves are compared here."""
  # pylint: disable=g-import-not-at-top
  from dsvl_jax.models import attention, layers
  from dsvl_jax.models.config import ATTENTION_IMPLS, REMAT_POLICIES, AttentionImpl
  from dsvl_jax.models.groups import GROUP_PATTERNS
  from dsvl_jax.train.config import GROUPS, LRScales, OptimizerConfig

  assert attention.IMPLS == ATTENTION_IMPLS == choices(AttentionImpl)
  assert tuple(f.name for f in dataclasses.fields(LRScales)) == GROUPS
  assert {g for g, _ in GROUP_PATTERNS} == set(GROUPS)
  remat = layers._REMAT_POLICIES  # pylint: disable=protected-access
  assert {"none", *remat} == set(REMAT_POLICIES)  # "none": no nn.remat
  assert typing.get_type_hints(OptimizerConfig)["lr_scales"] is LRScales
  assert choices(ImagePosition) == ("first", "last")


def test_chat_is_typed():
  assert ChatConfig.from_dict(chat_default()) == ChatConfig()
  with pytest.raises(ConfigError, match="'chat': unknown field"):
    ChatConfig.from_dict({"temprature": 0.0})
  with pytest.raises(ConfigError, match=r"chat\.top_p"):
    ChatConfig.from_dict({"top_p": 0.0})
  for spec in RENDERED:  # every shipped chat block is valid
    ChatConfig.from_dict(load_config(spec).chat)

"""The demo's machinery end to end, with every stage cut to a few steps.

Whether the demo learns to see is measured by `make run` (BUILD.md, "The demo"); this
checks that every piece runs: the tokenizer, each stage starting where the recipe says,
the held-out sets, eval.json, and that the final workdir chats and exports.
"""

import json

import numpy as np
import pytest
from absl import flags

from dsvl_jax.config.files import load_config
from dsvl_jax.data import synthetic
from dsvl_jax.recipes import demo


def small_demo():
  c = load_config("configs/demo.py")
  for name in c.demo.stages:
    c.demo[name].train.steps = 2
    c.demo[name].data.global_batch_size = 4
  c.train.log_every = 1
  c.demo.heldout_scenes = 4
  c.eval.batch_size = 4
  c.mesh.num_devices = 1
  return c


@pytest.mark.slow
def test_demo_runs_every_stage_and_the_final_workdir_chats_and_exports(tmp_path):
  flags.FLAGS.mark_as_parsed()
  c = small_demo()
  results = demo.run(c, str(tmp_path))
  saved = json.loads((tmp_path / "eval.json").read_text())
  assert saved == json.loads(json.dumps(results))
  for key in (
      "heldout_accuracy",
      "accuracy_by_type",
      "multiple_choice_accuracy",
      "chance",
      "blank_image_accuracy",
      "multiple_choice_chance",
  ):
    assert key in saved, key
  assert set(saved["accuracy_by_type"]) <= {"colour", "shape", "word"}
  # chance: 1/6 colour, 1/18 shape (colour and kind), 1/8 word, weighted by the items
  items = [json.loads(l) for l in (tmp_path / "heldout" / "heldout.jsonl").read_text().splitlines()]
  expected = np.mean([{"colour": 1 / 6, "shape": 1 / 18, "word": 1 / 8}[i["type"]] for i in items])
  assert saved["chance"] == pytest.approx(expected)
  # stage 1 starts from the text-pretrained LLM and the caption-pretrained towers
  config = json.loads((tmp_path / "stage1" / "config.json").read_text())
  assert config["train"]["init_from"] == str(tmp_path / "lm")
  assert config["train"]["init_groups"] == {
      "siglip": str(tmp_path / "vision"),
      "sam": str(tmp_path / "vision"),
  }
  # a rerun skips the finished stages and evaluates again
  again = demo.run(c, str(tmp_path))
  assert again["heldout_accuracy"] == results["heldout_accuracy"]

  # The final workdir chats (with its own tokenizer, no system prompt) ...
  from dsvl_jax.infer.chat import build_session

  c.chat.checkpoint = str(tmp_path / "stage3")
  c.chat.max_new_tokens = 4
  session = build_session(c)
  scene = synthetic.make_scene(np.random.default_rng(0))
  synthetic.draw(scene, 144).save(tmp_path / "scene.png")
  answer = session.reply("What colour is the shape at the top?", [str(tmp_path / "scene.png")])
  assert isinstance(answer, str)
  # ... and exports to the transformers layout, tokenizer included.
  from dsvl_jax.checkpoint.formats import export_checkpoint

  files = export_checkpoint(tmp_path / "stage3", tmp_path / "hf", layout="hf", progress=False)
  assert "tokenizer.model" in files and (tmp_path / "hf" / "model.safetensors").exists()


def test_the_tokenizer_keeps_the_template_and_answers_whole(tmp_path):
  from dsvl_jax.models import VLMConfig
  from dsvl_jax.processor import conversation
  from dsvl_jax.processor.tokenizer import Tokenizer

  c = load_config("configs/demo.py")
  demo.train_tokenizer(tmp_path / "t.model", c.model.image_token_id, 1, 300)
  cfg = VLMConfig.from_dict(c.model)
  tok = Tokenizer.from_sentencepiece(tmp_path / "t.model", cfg)
  msgs = [
      conversation.Message("user", "<image_placeholder>What colour is the shape at the top?"),
      conversation.Message("assistant", "Red."),
  ]
  enc = conversation.encode_conversation(msgs, tok, cfg, template=conversation.template_for(""))
  answer = enc.ids[enc.loss_mask]
  assert tok.decode(answer, skip_special_tokens=False).strip() == "Red.<｜end▁of▁sentence｜>"
  assert len(answer) == 3  # " Red", ".", EOS
  text = "User: What word is written in the image?"
  assert tok.decode(tok.encode(text, add_bos=False)) == text
  assert max(enc.ids) == cfg.image_token_id < cfg.llm.vocab_size

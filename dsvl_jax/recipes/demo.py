"""The demo that learns to see: `make run` (configs/demo.py).

1. tokenizer   a sentencepiece BPE model trained on the built-in text (the byte
               tokenizer would make every answer several tokens and every row 3-4x
               longer; a 640-piece vocabulary keeps words whole)
2. stages      lm -> stage1 -> stage2 -> stage3 (configs/demo.py), each a normal
               training run in WORKDIR/<stage> starting from the previous stage's
               workdir; a finished stage is skipped on a rerun
3. held-out    scenes from a seed never trained on, one question per type (colour,
               shape, word) whose answer is only in the image, written as a jsonl
               set with PNGs; plus the same set with every image a blank canvas
4. evaluation  greedy exact match and multiple choice (dsvl_jax/eval) on both sets,
               written to WORKDIR/eval.json with the chance rate
"""

from __future__ import annotations

import copy
import io
import json
import pathlib
import time
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

from dsvl_jax.checkpoint.params_io import latest_params_dir
from dsvl_jax.data import synthetic
from dsvl_jax.processor import conversation
from dsvl_jax.processor.tokenizer import EOS_TOKEN, IMAGE_TOKEN

DEFAULT_WORKDIR = "workdir/demo"


# ------------------------------------------------------------------------- tokenizer


def tokenizer_corpus(seed: int, records_per_kind: int) -> list[str]:
  """The text of built-in records (chats rendered without a system prompt, split at the
  EOS the tokenizer never sees as text)."""
  template = conversation.Template(system="")
  lines = []
  for i in range(records_per_kind):
    for kind in synthetic.KINDS:
      r = synthetic.sample(seed, i, 0, kind)  # image_size 0: scenes, no drawing
      if "text" in r:
        lines.append(r["text"].replace(IMAGE_TOKEN, " "))
      else:
        msgs = [
            conversation.Message(m["role"], m["content"].replace(IMAGE_TOKEN, ""))
            for m in r["messages"]
        ]
        lines += conversation.render(msgs, template=template).split(EOS_TOKEN)
  return [line for line in lines if line.strip()]


def train_tokenizer(path: pathlib.Path, vocab_size: int, seed: int, records: int) -> None:
  """A deterministic sentencepiece BPE model (ids: 0 unk, 1 <s>, 2 </s>, bytes, merges)."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(tokenizer_corpus(seed, records)),
      model_writer=model,
      vocab_size=vocab_size,
      model_type="bpe",
      character_coverage=1.0,
      byte_fallback=True,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      split_by_whitespace=True,
      allow_whitespace_only_pieces=True,
      add_dummy_prefix=False,
      num_threads=1,
      unk_id=0,
      bos_id=1,
      eos_id=2,
      pad_id=-1,
      minloglevel=2,
  )
  path.write_bytes(model.getvalue())


# ---------------------------------------------------------------------------- stages


def stage_config(
    config: ml_collections.ConfigDict, name: str, tokenizer: str, workdirs: dict[str, str]
) -> ml_collections.ConfigDict:
  """The base config with one stage's overrides, as a plain training config.

  A stage starts from the previous stage's workdir unless its `train.init_from` names
  another stage; `train.init_groups` maps parameter groups to stage names (workdirs:
  stage name -> its workdir, for the stages already run).
  """
  c = ml_collections.ConfigDict(
      {
          k: copy.deepcopy(config[k].to_dict() if hasattr(config[k], "to_dict") else config[k])
          for k in ("seed", "model", "data", "train", "optimizer", "mesh")
      }
  )
  c.mode = "train"
  overrides = config.demo[name]
  for part in ("train", "optimizer", "data"):
    for key, value in overrides.get(part, {}).items():
      c[part][key] = value.to_dict() if hasattr(value, "to_dict") else value
  for key, value in overrides.get("lora", {}).items():  # this stage's adapters
    c.model.compute.lora[key] = value
  c.data.tokenizer = tokenizer
  names = list(config.demo.stages)
  previous = names[names.index(name) - 1] if names.index(name) else ""
  source = overrides.get("train", {}).get("init_from", previous)
  c.train.init_from = workdirs[source] if source else ""
  c.train.init_groups = {
      g: workdirs[s] for g, s in overrides.get("train", {}).get("init_groups", {}).items()
  }
  return c


def param_counts(workdir: pathlib.Path, trainable) -> dict[str, int]:
  """{'trainable', 'frozen'}: parameters of a stage's checkpoint as the stage split them."""
  import dsvl_jax  # pylint: disable=g-import-not-at-top
  from dsvl_jax.train import freezing  # pylint: disable=g-import-not-at-top

  params = dsvl_jax.load(str(workdir)).params
  trained, frozen = freezing.partition(params, freezing.trainable_mask(params, trainable))
  return {"trainable": freezing.count(trained), "frozen": freezing.count(frozen)}


def finished(workdir: pathlib.Path, steps: int) -> bool:
  params = latest_params_dir(workdir)
  return params is not None and int(params.parent.name) >= steps


# -------------------------------------------------------------------------- held-out

QUESTION_TYPES = ("colour", "shape", "word")


def heldout_items(
    seed: int, scenes: int, image_size: int, folder: pathlib.Path, blank: bool = False
) -> list[dict[str, Any]]:
  """One question per type per scene (word only when a word is printed); images as PNGs.

  Options: the 6 colours; the 3 shapes in the asked shape's colour; the 8 words. The
  answers use the built-in chats' wording ("Red.", "A red circle.", "Cat.").
  """
  folder.mkdir(parents=True, exist_ok=True)
  items = []
  canvas = Image.new("RGB", (image_size, image_size), synthetic.BACKGROUND)
  for i in range(scenes):
    rng = np.random.default_rng([seed, i])
    scene = synthetic.make_scene(rng)
    name = "blank.png" if blank else f"scene_{i:04d}.png"
    if blank:
      if i == 0:
        canvas.save(folder / name)
    else:
      synthetic.draw(scene, image_size).save(folder / name)
    shape = scene.shapes[int(rng.integers(len(scene.shapes)))]
    questions = [
        (
            "colour",
            f"What colour is the shape at the {shape.place}?",
            [c.capitalize() + "." for c in synthetic.COLOURS],
            shape.colour.capitalize() + ".",
        ),
        (
            "shape",
            f"What shape is at the {shape.place}?",
            [f"A {shape.colour} {k}." for k in synthetic.SHAPES],
            f"A {shape.colour} {shape.kind}.",
        ),
    ]
    if scene.word:
      questions.append(
          (
              "word",
              "What word is written in the image?",
              [w.capitalize() + "." for w in synthetic.WORDS],
              scene.word.capitalize() + ".",
          )
      )
    for qtype, question, options, answer in questions:
      items.append(
          {
              "id": f"{i}-{qtype}",
              "question": question + IMAGE_TOKEN,
              "images": [name],
              "options": options,
              "answer": answer,
              "type": qtype,
          }
      )
  return items


def write_set(items: list[dict[str, Any]], path: pathlib.Path) -> None:
  path.write_text("".join(json.dumps(it) + "\n" for it in items))


# How many answers a question of each type has: a uniform guess at a generated answer
# (a shape answer names the colour too: "A red circle.").
ANSWER_SPACE = {
    "colour": len(synthetic.COLOURS),
    "shape": len(synthetic.COLOURS) * len(synthetic.SHAPES),
    "word": len(synthetic.WORDS),
}


def chance(items: list[dict[str, Any]], multiple_choice: bool = False) -> dict[str, float]:
  """Expected accuracy of a uniform guess, overall and per type: among the answer space
  (exact match) or among the item's options (multiple choice)."""

  def p(it):
    return 1 / (len(it["options"]) if multiple_choice else ANSWER_SPACE[it["type"]])

  out = {"overall": float(np.mean([p(it) for it in items]))}
  for t in QUESTION_TYPES:
    sel = [p(it) for it in items if it["type"] == t]
    if sel:
      out[t] = float(np.mean(sel))
  return out


# ------------------------------------------------------------------------------- run


def run(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict[str, Any]:
  from dsvl_jax.train.trainer import Trainer  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  root = pathlib.Path(workdir or DEFAULT_WORKDIR).absolute()
  root.mkdir(parents=True, exist_ok=True)
  demo = config.demo
  tok = root / "tokenizer.model"
  if not tok.exists():
    t0 = time.perf_counter()
    train_tokenizer(tok, config.model.image_token_id, demo.text_seed, demo.tokenizer_records)
    print(
        f"[demo] trained a {config.model.image_token_id}-piece sentencepiece tokenizer "
        f"on the built-in text ({time.perf_counter() - t0:.1f} s): {tok}",
        flush=True,
    )
  workdirs: dict[str, str] = {}
  timings = {}
  for name in demo.stages:
    stage = stage_config(config, name, str(tok), workdirs)
    wd = root / name
    if finished(wd, stage.train.steps):
      print(f"[demo] {name}: already trained in {wd}", flush=True)
    else:
      t0 = time.perf_counter()
      print(
          f"[demo] {name}: training {', '.join(stage.train.trainable)} for "
          f"{stage.train.steps} steps in {wd}",
          flush=True,
      )
      summary = Trainer(stage, wd).run()
      timings[name] = time.perf_counter() - t0
      print(
          f"[demo] {name}: loss {summary.get('loss', float('nan')):.3f} after "
          f"{summary['step']} steps, {timings[name]:.0f} s "
          f"({summary['compilations']} compilations, {summary['compile_seconds']:.0f} s)",
          flush=True,
      )
    workdirs[name] = str(wd)
  results = evaluate_heldout(config, root, root / demo.stages[-1], tok)
  results["seconds"] = {"total": time.perf_counter() - start, **timings}
  if demo.count_params:
    last = stage_config(config, demo.stages[-1], str(tok), workdirs)
    results["params"] = param_counts(root / demo.stages[-1], last.train.trainable)
  (root / demo.results).write_text(json.dumps(results, indent=2) + "\n")
  print(
      f"[demo] held-out exact match {results['heldout_accuracy']:.3f} (colour "
      f"{results['accuracy_by_type'].get('colour', 0):.3f}, shape "
      f"{results['accuracy_by_type'].get('shape', 0):.3f}, word "
      f"{results['accuracy_by_type'].get('word', 0):.3f}); multiple choice "
      f"{results['multiple_choice_accuracy']:.3f}; chance {results['chance']:.3f}; "
      f"blank images {results['blank_image_accuracy']:.3f} -> {root / demo.results}",
      flush=True,
  )
  return results


def evaluate_heldout(
    config: ml_collections.ConfigDict, root: pathlib.Path, final: pathlib.Path, tok: pathlib.Path
) -> dict[str, Any]:
  import dsvl_jax  # pylint: disable=g-import-not-at-top
  from dsvl_jax.eval.evaluator import Evaluator  # pylint: disable=g-import-not-at-top
  from dsvl_jax.processor.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top

  demo = config.demo
  model = dsvl_jax.load(str(final))
  size = model.config.image_size
  folder = root / "heldout"
  items = heldout_items(demo.heldout_seed, demo.heldout_scenes, size, folder)
  blank = heldout_items(demo.heldout_seed, demo.heldout_scenes, size, folder, blank=True)
  write_set(items, folder / "heldout.jsonl")
  write_set(blank, folder / "blank.jsonl")
  tokenizer = Tokenizer.from_sentencepiece(tok, model.config)
  evaluator = Evaluator(
      model.config,
      tokenizer,
      config.eval,
      sets={"heldout": str(folder / "heldout.jsonl"), "blank": str(folder / "blank.jsonl")},
  )
  t0 = time.perf_counter()
  res = evaluator(model.params)
  h, b = res["heldout"], res["blank"]
  ch, ch_mc = chance(items), chance(items, multiple_choice=True)
  return {
      "heldout_accuracy": h["exact_match"],
      "accuracy_by_type": h["exact_match_by_type"],
      "multiple_choice_accuracy": h["mc_accuracy"],
      "multiple_choice_by_type": h["mc_accuracy_by_type"],
      "chance": ch["overall"],
      "chance_by_type": {k: v for k, v in ch.items() if k != "overall"},
      "multiple_choice_chance": ch_mc["overall"],
      "blank_image_accuracy": b["exact_match"],
      "blank_image_by_type": b["exact_match_by_type"],
      "blank_image_multiple_choice_accuracy": b["mc_accuracy"],
      "num_items": h["num_items"],
      "num_items_by_type": h["num_items_by_type"],
      "eval_seconds": time.perf_counter() - t0,
      "checkpoint": str(final),
  }

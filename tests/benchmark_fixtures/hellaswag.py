"""A tiny HellaSwag release: rows of the Hugging Face dataset Rowan/hellaswag (the one
lm-evaluation-harness's hellaswag.yaml reads) as jsonl, one object a line with its ten
fields: ind, activity_label, ctx_a, ctx_b, ctx, endings (4), source_id, split, split_type
and label (a string, "0".."3"); github.com/rowanz/hellaswag data/hellaswag_{train,val}.jsonl
hold the same fields (label an int there).

`hellaswag_val.jsonl` (3 rows, the scored split):
  0  ActivityNet: ctx_b "then" (capitalised by the official query), endings that begin
     with ", " (continuation " , the man ..."); the first worked example of
     /work/official_rules_backup.md 5a (Rowan/hellaswag train row 0's context)
  1  WikiHow: "[header]", "[title]", "[step]" artifacts in the context (the second
     worked example) and in the endings, ctx_b "" (WikiHow rows keep the context in ctx_a)
  2  ActivityNet: ctx_b "the Woman" (str.capitalize lower-cases the rest: "The woman")
`hellaswag_train.jsonl` (2 rows): solved examples for few-shot prompts.
`build` returns the val file.
"""

from __future__ import annotations

import json
import pathlib


def _row(ind, activity, ctx_a, ctx_b, endings, label, split, source="activitynet~v_x"):
  return {
      "ind": ind,
      "activity_label": activity,
      "ctx_a": ctx_a,
      "ctx_b": ctx_b,
      "ctx": (ctx_a + " " + ctx_b).strip(),
      "endings": endings,
      "source_id": source,
      "split": split,
      "split_type": "indomain",
      "label": str(label),
  }


VAL = [
    _row(
        4,
        "Removing ice from car",
        "Then, the man writes over the snow covering the window of a car, and a woman "
        "wearing winter clothes smiles.",
        "then",
        [
            ", the man adds wax to the windshield and cuts it.",
            ", a person boards a ski lift.",
            ", the man puts on a christmas coat.",
            ", the man continues removing the snow on his car.",
        ],
        3,
        "val",
    ),
    _row(
        10,
        "Personal Care and Style",
        "[header] How to dye your hair [title] Buy the dye. [step] Choose a shade.",
        "",
        [
            "Pick a permanent dye for lasting colour. [title] Read the box.",
            "[substeps] Mix the dye  with the developer.",
            "Wash your hair [step] every day.",
            " Ask a friend to help you. ",
        ],
        1,
        "val",
        source="wikihow~17",
    ),
    _row(
        25,
        "Playing violin",
        "A woman holds a violin under her chin.",
        "the Woman",
        [
            "plays a slow song with a bow.",
            "eats the violin.",
            "throws the bow into a lake.",
            "paints the violin green.",
        ],
        0,
        "val",
    ),
]

TRAIN = [
    _row(
        0,
        "Washing dishes",
        "A man fills a sink with water.",
        "he",
        ["adds soap and washes the plates.", "drinks the sink.", "flies away.", "sings."],
        0,
        "train",
    ),
    _row(
        1,
        "Home and Garden",
        "[header] How to water a plant [title] Check the soil.",
        "",
        ["[step] Pour water slowly.", "Burn it.", "Eat the soil.", "Paint the pot [title]"],
        0,
        "train",
        source="wikihow~3",
    ),
]


def build(root: pathlib.Path) -> pathlib.Path:
  root.mkdir(parents=True, exist_ok=True)
  for name, rows in (("hellaswag_val.jsonl", VAL), ("hellaswag_train.jsonl", TRAIN)):
    (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return root / "hellaswag_val.jsonl"

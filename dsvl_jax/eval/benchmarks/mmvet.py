"""MM-Vet (Yu et al. 2023, "MM-Vet: Evaluating Large Multimodal Models for Integrated
Capabilities"): 218 open questions, each graded 0.0-1.0 by an LLM against its ground truth.

Release (github.com/yuweihao/MM-Vet, README "Download Dataset": releases/download/v1/
mm-vet.zip, unzipped; the official evaluator mm-vet_evaluator.py @acde843 reads
`<mmvet_path>/mm-vet.json`, its inference helper inference/utils.py @acde843 reads images
from `<mmvet_path>/images/<imagename>`):

  mm-vet/mm-vet.json   one JSON object keyed "v1_0", "v1_1", ... in question order
    {"v1_0": {"imagename": "v1_0.png",
              "capability": ["ocr", "math"],    rec, ocr, know, gen, spat, math
              "question": "What is x in the equation?",
              "answer": "-1<AND>-5"},           <AND> / <OR> join the gold elements
     ...}
  mm-vet/images/v1_0.png ...
  mm-vet/bard_set.json  (the Bard subset the evaluator's --use_sub_set reads; unused)

`load(path, image_dir=None)`: `path` is the mm-vet folder, the folder it was unzipped in
(holding mm-vet/), or mm-vet.json itself; the images are in `image_dir`, by default
images/ beside the JSON. An item's id is its key ("v1_0"), its answer the ground truth
as released, its category the capabilities joined by "," (as VLMEvalKit's MMVet.tsv
writes them), extra["capability"] the list.

Prompt (VLMEvalKit @e8e78f05, vlmeval/dataset/image_base.py `ImageBaseDataset.build_prompt`,
which MMVet inherits (image_vqa.py), and DeepSeek-VL's wrapper vlm/deepseek_vl.py adds no
custom prompt): the image, then the question as released, nothing appended. It is also
what MM-Vet's own inference scripts send (inference/utils.py: prompt = data[id]["question"]).
Length: the wrapper's max_new_tokens=512, greedy.

Grading (MM-Vet mm-vet_evaluator.py @acde843, `runs`; the file last changed at c7ff270):
nothing is scored without the judge (`parse` returns None). The judge gets GRADER_PROMPT
(the few-shot table), "\\n", then " | ".join([question, answer with " <AND> " / " <OR> "
spaced, the model's output as is, ""]); max_tokens=3. Its reply's score is the first
" "-separated token, stripped, read by float(); a score above 1.0 or below 0.0, or a
token float() refuses, is a failed try. The official loop, executed with scripted replies:
  call 1: the prompt at temperature 0.0;
  on a failed try: ask again with RETRY_SUFFIX appended, at the current temperature,
  THEN raise the temperature by 0.5 - so the calls run at 0.0, 0.0, 0.5, 1.0, 1.5, 2.0;
  after the 6th call (5 retries) the score is 0.0 without reading that last reply.
(VLMEvalKit's MMVet_auxeval grades differently - its own line-broken prompt, the whole
reply parsed, temperatures 0.0, 0.5, ..., no suffix - and is not followed here.) Like
float(), the rule takes "nan" as a score (nan is neither above 1.0 nor below 0.0); it is
kept, as the official total would be nan too.

Metrics (mm-vet_evaluator.py `export_result`, one run: the evaluator's default num_run=1):
  total              sum of scores / num_items x 100
  capability/<cap>   sum of scores of the items having <cap> / their count x 100
  integration/<caps> the same over the items whose capability set is exactly <caps>
                     (the evaluator's "cap-int" table; names here in CAPABILITIES order,
                     the evaluator's follow Python set order)
  num_items, unparsed (items without a judged score: 0 in the sums, kept in the counts,
  as a failed grading is 0.0 officially); the harness adds "judge" (its name) and "judged"
The evaluator rounds each to 1 decimal (Python round of a numpy float); these are left
unrounded (the report prints 1 decimal). An item is "correct" when its score is 1.0.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Sequence

from dsvl_jax.eval.benchmarks.base import (
    BenchItem,
    BenchmarkFormatError,
    check_answers,
    existing_image,
    image_loader,
)
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

NAME = "mmvet"
JSON_NAME = "mm-vet.json"
RELEASE_DIR = "mm-vet"
IMAGE_DIR_NAME = "images"
MAX_NEW_TOKENS = 512  # VLMEvalKit vlm/deepseek_vl.py @e8e78f05: max_new_tokens=512, greedy
SETUP = (
    "prompt: VLMEvalKit ImageBaseDataset.build_prompt @e8e78f05 (image + question as is); "
    "grader: MM-Vet mm-vet_evaluator.py @acde843 (prompt, retry rule, scores)"
)
JUDGE = "required"
# The paper's capability order (VLMEvalKit's MMVet_acc lists them so too).
CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")

# The grader's few-shot prompt: protocol data, reproduced exactly from MM-Vet
# mm-vet_evaluator.py @acde843e02dae30047bb456ee4a8ab28dee7e0ae, `prompt` (lines 15-26),
# including its final newline.
GRADER_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""  # noqa: E501
# Appended on every retry (mm-vet_evaluator.py @acde843, line 257).
RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "
GRADER_MAX_TOKENS = 3
TEMPERATURE_STEP = 0.5  # added after each retry's call
MAX_TRIES = 5  # the call that makes the tries exceed this is the last; its reply is not read

Ask = Callable[..., str]  # ask(prompt, max_tokens=, temperature=) -> reply (eval/judge.py)


def json_file(path: pathlib.Path) -> pathlib.Path:
  """mm-vet.json: `path` itself, in the folder `path`, or in `path`/mm-vet/."""
  if path.is_dir():
    for candidate in (path / JSON_NAME, path / RELEASE_DIR / JSON_NAME):
      if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"MM-Vet: no {JSON_NAME} in {path} or {path / RELEASE_DIR}")
  if not path.is_file():
    raise FileNotFoundError(f"MM-Vet: no {JSON_NAME} or mm-vet folder at {path}")
  return path


def check_entry(key: str, entry: Any, where: str) -> dict[str, Any]:
  """One question of mm-vet.json, its fields checked; `where` names the file."""
  where = f"{where}[{key!r}]"
  if not isinstance(entry, dict):
    raise BenchmarkFormatError(f"{where}: not a JSON object")
  for field in ("imagename", "question", "answer"):
    if not isinstance(entry.get(field), str):
      raise BenchmarkFormatError(f"{where}: {field!r} missing or not a string")
  caps = entry.get("capability")
  if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
    raise BenchmarkFormatError(f"{where}: 'capability' is not a non-empty list of strings")
  return entry


def load(path: str | pathlib.Path, image_dir: str | pathlib.Path | None = None) -> list[BenchItem]:
  """Every question of mm-vet.json in file order (the evaluator's order)."""
  file = json_file(pathlib.Path(path))
  try:
    data = json.loads(file.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise BenchmarkFormatError(f"{file}: not JSON ({e.msg})") from None
  if not isinstance(data, dict) or not data:
    raise BenchmarkFormatError(f"{file}: expected an object keyed by question id")
  images = pathlib.Path(image_dir) if image_dir is not None else file.parent / IMAGE_DIR_NAME
  if not images.is_dir():
    raise FileNotFoundError(f"MM-Vet: image folder {images} not found (pass image_dir)")
  items = []
  for key, entry in data.items():
    row = check_entry(key, entry, str(file))
    image = existing_image(images / row["imagename"], f"{file}[{key!r}]")
    items.append(
        BenchItem(
            id=key,
            question=row["question"],
            options=(),
            answer=row["answer"],
            load_images=image_loader(image),
            num_images=1,
            category=",".join(row["capability"]),
            extra={"capability": list(row["capability"]), "imagename": row["imagename"]},
        )
    )
  return items


def prompt(item: BenchItem) -> str:
  return f"{IMAGE_TOKEN}{item.question}"


def parse(item: BenchItem, output: str) -> None:
  """Nothing: an MM-Vet answer is scored only by the judge (`judge`)."""
  del item, output


def grader_prompt(item: BenchItem, output: str) -> str:
  """The judge's message for one answer (the evaluator's construction, module docstring)."""
  gold = item.answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
  return GRADER_PROMPT + "\n" + " | ".join([item.question, gold, output, ""])


def read_score(reply: Any) -> float | None:
  """The score in a judge reply: its first " "-separated token as float() reads it, if
  within [0, 1] (the evaluator's test: not above 1.0, not below 0.0); else None."""
  try:
    score = float(reply.split(" ")[0].strip())
  except (AttributeError, ValueError):
    return None
  return None if score > 1.0 or score < 0.0 else score


def judge(item: BenchItem, output: str, parsed: Any, ask: Ask) -> tuple[float, dict[str, Any]]:
  """The item's score from the judge by the evaluator's loop (module docstring), with a
  log of every call: its temperature, whether it carried RETRY_SUFFIX, and the reply."""
  del parsed
  text = grader_prompt(item, output)
  calls = []

  def call(retry: bool, temperature: float) -> str:
    message = text + RETRY_SUFFIX if retry else text
    reply = ask(message, max_tokens=GRADER_MAX_TOKENS, temperature=temperature)
    calls.append({"temperature": temperature, "retry": retry, "reply": reply})
    return reply

  temperature = 0.0
  reply = call(False, temperature)
  tries = 1
  gave_up = False
  while (score := read_score(reply)) is None:
    reply = call(True, temperature)
    tries += 1
    temperature += TEMPERATURE_STEP
    if tries > MAX_TRIES:
      score, gave_up = 0.0, True
      break
  return score, {"judged": True, "score": score, "gave_up": gave_up, "calls": calls}


def is_correct(item: BenchItem, parsed: Any) -> bool:
  """Full marks: a judged score of exactly 1.0 (MM-Vet itself reports only scores)."""
  del item
  return parsed is not None and float(parsed) == 1.0


def _percent(scores: Sequence[float]) -> float:
  """sum / count x 100, in the evaluator's order of operations; 0.0 for no items."""
  return float(sum(scores) / len(scores) * 100) if scores else 0.0


def _ordered(caps: set[str]) -> list[str]:
  """Capabilities in CAPABILITIES order, any others after, sorted."""
  known = [c for c in CAPABILITIES if c in caps]
  return known + sorted(caps.difference(CAPABILITIES))


def score(items: Sequence[BenchItem], parsed: Sequence[Any]) -> dict[str, float]:
  """The evaluator's scores, unrounded (module docstring); parsed[i] scores items[i]."""
  check_answers(items, parsed)
  scores = [0.0 if p is None else float(p) for p in parsed]
  caps = [set(it.extra["capability"]) for it in items]
  total = _percent(scores)
  out: dict[str, float] = {
      "total": total,
      "num_items": len(items),
      "unparsed": sum(p is None for p in parsed),
  }
  for cap in _ordered(set().union(*caps)):
    out[f"capability/{cap}"] = _percent([s for s, c in zip(scores, caps) if cap in c])
  for combo in dict.fromkeys(tuple(_ordered(c)) for c in caps):
    name = "_".join(combo)
    out[f"integration/{name}"] = _percent([s for s, c in zip(scores, caps) if c == set(combo)])
  return out

"""Multiple-choice rules shared by MMBench and SEED-Bench, as VLMEvalKit scores them:
the dataset prompt DeepSeek-VL is given, the `can_infer` answer matching, and the
LLM-judge fallback for answers it cannot match.

Sources (github.com/open-compass/VLMEvalKit):
  prompt    vlmeval/dataset/image_mcq.py, ImageMCQDataset.build_prompt @aca64dbb (same
            at HEAD e8e78f05); DeepSeek-VL's wrapper (vlmeval/vlm/deepseek_vl.py) has no
            prompt of its own at any commit, so the dataset's prompt is what it gets.
  matching  vlmeval/utils/matching_util.py, can_infer_option / can_infer_text /
            can_infer, version v1 as of aca64dbb3113ebf09683e379c65fb8b5107cba3f (the
            rule of the 2024 leaderboard numbers, DeepSeek-VL's among them; c3371551
            later demanded the letter among the last 4 tokens, a67ace50 added an
            "answer is X" regex: neither applies here).
  judge     vlmeval/dataset/utils/multiple_choice.py, extract_answer_from_item and its
            build_prompt / build_prompt_cn; vlmeval/smp/vlm.py build_option_str;
            vlmeval/smp/misc.py cn_string; all @aca64dbb (templates unchanged at HEAD).

Prompt (the user turn; each image's placeholder first, no separator, as DeepSeek-VL's
VLMEvalKit wrapper joins image and text):

  <image_placeholder>Hint: {hint}\\n          (only when the item has a hint)
  Question: {question}\\n
  Options:\\nA. {A}\\nB. {B}\\n...
  Please select the correct answer from the options above.

The template ends "above. \\n"; DeepSeek-VL's processor strips every message, so the
model never sees that tail and it is left off here. MMBench-CN gets the same English
frame around its Chinese texts.

Matching (`can_infer`, v1), on the output as a string:
  1. option letter: an output containing "Failed to obtain answer via API" matches no
     letter here; one containing a refusal (REFUSALS) is 'Z'. Otherwise each of
     .()[],:;!*#{} becomes a space and the text is split on whitespace: when exactly one
     of the item's option letters (upper case) is a whole token, wherever it stands, it
     is the answer ("Option B", "B, because ..."); no letter but a token "Z" -> 'Z'.
     ("A dog is on the left." is A: v1 reads the article as option A; its check for
     that case runs only with the environment variable VERBOSE set, so not by default.)
  2. option text (only when 1 found nothing): the lower-cased text of exactly one
     option is a substring of the lower-cased output ("I think it is green tree").
  Neither: unmatched. Without a judge VLMEvalKit then predicts 'Z' (`UNMATCHED`), which
  is never the answer: scored wrong, kept in the denominator, and counted as
  "unparsed" in the summaries. "The answer is D, not A." names two letters: 'Z'.

Judge fallback (`judge`, when the harness has an LLM judge): for an output that
`can_infer` cannot match, the judge gets VLMEvalKit's matching prompt (the Chinese one
when the question holds a CJK character), up to JUDGE_TRIES times; each reply is matched
with `can_infer` over the item's options (a reply "Z" = no option). After JUDGE_TRIES
unmatched replies the answer is a random pick among the option letters and 'Z', as
VLMEvalKit picks it; here the generator is seeded from the item id, so a rerun or a
resumed run picks the same letter.
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Sequence

from dsvl_jax.eval.benchmarks.base import LETTERS, BenchItem, option_lines
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

# ImageMCQDataset.build_prompt's closing sentence (image_mcq.py @aca64dbb), without the
# " \n" the processor strips.
INSTRUCTION = "Please select the correct answer from the options above."
MAX_NEW_TOKENS = 512  # vlmeval/vlm/deepseek_vl.py default_kwargs (greedy), every commit
UNMATCHED = "Z"  # VLMEvalKit's prediction for an answer no rule matched

# matching_util.py @aca64dbb: the judge API's failure text, and the refusals read as 'Z'.
API_FAILURE = "Failed to obtain answer via API"
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_BLANKED = str.maketrans({c: " " for c in ".()[],:;!*#{}"})  # become spaces before splitting

JUDGE_TRIES = 3  # extract_answer_from_item's retry
# The judge's request: VLMEvalKit's OpenAIWrapper defaults @aca64dbb (vlmeval/api/gpt.py;
# extract_answer_from_item passes nothing else). Its default MCQ judge was chatgpt-0125.
JUDGE_MAX_TOKENS = 2048
JUDGE_TEMPERATURE = 0.0

# The matching prompts, verbatim (protocol data): multiple_choice.py @aca64dbb,
# build_prompt and build_prompt_cn; the slots are question, option string, prediction.
JUDGE_TEMPLATE = (
    "You are an AI assistant who will help me to match "
    "an answer with several options of a single-choice question. "
    "You are provided with a question, several options, and an answer, "
    "and you need to find which option is most similar to the answer. "
    "If the meaning of all options are significantly different from the answer, output Z. "
    "Your should output a single uppercase character in A, B, C, D (if they are valid options), "
    "and Z. \n"
    "Example 1: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: a cute teddy bear\nYour output: A\n"
    "Example 2: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: Spider\nYour output: Z\n"
    "Example 3: \n"
    "Question: {}?\nOptions: {}\nAnswer: {}\nYour output: "
)
JUDGE_TEMPLATE_CN = (
    "你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。"
    "你会被提供：一个问题，多个选项，一个答案。你的任务是找到与答案意义最相近的选项。"
    "如果所有选项的意义都与答案显著不同，则输出 Z。"
    "你应该输出一个单个的大写字母，例如 A, B, C, D（如果它们是有效选项），或 Z。"
    "例 1:"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 一只可爱的泰迪熊\n输出: A\n"
    "例 2: \n"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 蜘蛛\n输出: Z\n"
    "例 3: \n"
    "问题: {}?\n选项: {}\n答案: {}\n输出: "
)
OPTION_STR_HEAD = "There are several options: \n"  # vlmeval/smp/vlm.py build_option_str
_CJK = re.compile("[\u4e00-\u9fff]")  # vlmeval/smp/misc.py cn_string


# ---- prompt -------------------------------------------------------------------------


def mcq_prompt(question: str, options: Sequence[str], hint: str = "", num_images: int = 1) -> str:
  """The user turn for a multiple-choice item (layout in the module docstring)."""
  hint_line = f"Hint: {hint}\n" if hint else ""
  return (
      IMAGE_TOKEN * num_images
      + hint_line
      + f"Question: {question}\n"
      + "Options:\n"
      + option_lines(options)
      + "\n"
      + INSTRUCTION
  )


def item_prompt(item: BenchItem) -> str:
  """A BenchItem's multiple-choice prompt (a benchmark module's `prompt`)."""
  return mcq_prompt(item.question, item.options, item.hint, item.num_images)


# ---- matching (can_infer v1) --------------------------------------------------------


def item_choices(options: Sequence[str]) -> dict[str, str]:
  """{letter: option text} in letter order (VLMEvalKit's build_choices)."""
  return {LETTERS[i]: str(o) for i, o in enumerate(options)}


def option_letter(answer: str, letters: Sequence[str]) -> str | None:
  """Rule 1 (can_infer_option v1): the one option letter standing as a token, 'Z' for a
  refusal or a lone "Z" token, else None."""
  if API_FAILURE in answer:
    return None
  if any(refusal in answer for refusal in REFUSALS):
    return UNMATCHED
  tokens = set(answer.translate(_BLANKED).split())
  named = [letter for letter in letters if letter in tokens]
  if len(named) == 1:
    return named[0]
  if not named and UNMATCHED in tokens:
    return UNMATCHED
  return None


def text_letter(answer: str, choices: dict[str, str]) -> str | None:
  """Rule 2 (can_infer_text v1): the letter of the one option whose lower-cased text is
  inside the lower-cased answer, else None."""
  said = answer.lower()
  hits = [letter for letter, text in choices.items() if text.lower() in said]
  return hits[0] if len(hits) == 1 else None


def can_infer(answer: Any, choices: dict[str, str]) -> str | None:
  """VLMEvalKit's can_infer (v1): an option letter, 'Z', or None when nothing matched."""
  answer = str(answer)
  return option_letter(answer, list(choices)) or text_letter(answer, choices)


def match(output: str, options: Sequence[str]) -> str:
  """The prediction without a judge: `can_infer`'s letter, or 'Z' when it found none."""
  return can_infer(output, item_choices(options)) or UNMATCHED


def item_answer(item: BenchItem, output: str) -> str:
  """A benchmark module's `parse`: an option letter, or 'Z' (wrong) when unmatched."""
  return match(output, item.options)


def unmatched(parsed: Any) -> bool:
  """An answer that names no option ('Z'; None from an older predictions file)."""
  return parsed is None or parsed == UNMATCHED


# ---- LLM-judge fallback -------------------------------------------------------------


def judge_prompt(question: str, options: Sequence[str], output: str) -> str:
  """VLMEvalKit's matching prompt for one answer: the Chinese template when the
  question holds a CJK ideograph (cn_string), the English one otherwise."""
  option_str = OPTION_STR_HEAD + "".join(f"{k}. {v}\n" for k, v in item_choices(options).items())
  template = JUDGE_TEMPLATE_CN if _CJK.search(question) else JUDGE_TEMPLATE
  return template.format(question, option_str, output)


def random_pick(item: BenchItem) -> str:
  """VLMEvalKit's last resort, a random letter among the options and 'Z'; seeded by the
  item id (random.Random hashes a str seed with SHA-512), so every run picks the same."""
  return random.Random(item.id).choice([*item_choices(item.options), UNMATCHED])


def judge(
    item: BenchItem, output: str, parsed: Any, ask: Callable[[str, int, float], str]
) -> tuple[Any, dict[str, Any]]:
  """The judge hook (module docstring): `parsed` unchanged and {} when `can_infer`
  matches the output; else the judged letter and {"judged": True, "replies": [...]},
  with "random_pick": True when no reply matched. JudgeError from `ask` propagates."""
  choices = item_choices(item.options)
  if can_infer(output, choices) is not None:
    return parsed, {}
  prompt = judge_prompt(item.question, item.options, output)
  replies: list[str] = []
  for _ in range(JUDGE_TRIES):
    reply = ask(prompt, JUDGE_MAX_TOKENS, JUDGE_TEMPERATURE)
    replies.append(reply)
    if API_FAILURE in reply:  # VLMEvalKit does not match such a reply; it spends a try
      continue
    letter = can_infer(reply, choices)
    if letter is not None:
      return letter, {"judged": True, "replies": replies}
  return random_pick(item), {"judged": True, "replies": replies, "random_pick": True}


# ---- CircularEval -------------------------------------------------------------------


def rotate(options: Sequence[str], answer: str, k: int) -> tuple[tuple[str, ...], str]:
  """Options shifted left by k (option k becomes A) and the answer letter that still
  names the same text: a CircularEval rotation."""
  n = len(options)
  rotated = tuple(options[(j + k) % n] for j in range(n))
  return rotated, LETTERS[(LETTERS.index(answer) - k) % n]

"""The "deepseek" template (reference 4.3), image expansion (4.2) and SFT masks (4.4)."""

import numpy as np
import pytest
from tokenizer_files import hf_tokenizer, real_config

from dsvl_jax.processor.conversation import (
    DEEPSEEK,
    Message,
    Template,
    encode_conversation,
    encode_prompt,
    render,
)

# Written out from reference 4.3 (not from our code).
SYS = (
    "You are a helpful language and vision assistant. You are able to understand the "
    "visual content that the user provides, and assist the user with a variety of tasks "
    "using natural language."
)
EOS = "<｜end▁of▁sentence｜>"
IMG = "<image_placeholder>"
K = 576

SINGLE = [Message("User", f"{IMG}Describe each stage of this image.")]
MULTI_TURN = [
    Message("User", f"{IMG}What is this?"),
    Message("Assistant", "A dog."),
    Message("User", "What colour?"),
]
MULTI_IMAGE = [
    Message(
        "User",
        f"{IMG}A dog wearing nothing, {IMG}a dog wearing a santa "
        f"hat, and {IMG}what's the dog wearing?",
    )
]
EXPECTED = {
    "single": f"{SYS}\n\nUser: {IMG}Describe each stage of this image.\n\nAssistant:",
    "multi_turn": (
        f"{SYS}\n\nUser: {IMG}What is this?\n\nAssistant: A dog.{EOS}"
        f"User: What colour?\n\nAssistant:"
    ),
    "multi_image": (
        f"{SYS}\n\nUser: {IMG}A dog wearing nothing, {IMG}a dog wearing a "
        f"santa hat, and {IMG}what's the dog wearing?\n\nAssistant:"
    ),
}
CASES = {"single": SINGLE, "multi_turn": MULTI_TURN, "multi_image": MULTI_IMAGE}

# transformers 5.24 ships no DeepSeek-VL chat template (DeepseekVLProcessor defaults to
# chat_template=None; the hub's copy is out of reach here), so prompt strings are checked
# against reference 4.3, which verified them identical to transformers' rendering, and
# token ids against transformers' processor fed the same strings.


@pytest.fixture(scope="module")
def hf_processor(vl_json):
  from transformers import DeepseekVLProcessor
  from transformers.models.deepseek_vl.image_processing_pil_deepseek_vl import (
      DeepseekVLImageProcessorPil,
  )

  return DeepseekVLProcessor(
      DeepseekVLImageProcessorPil(), hf_tokenizer(vl_json), num_image_tokens=K
  )


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_strings(case):
  assert render(CASES[case], add_generation_prompt=True) == EXPECTED[case]


def test_rendering_rules():
  # completed conversation ends with the answer's EOS (ORIG)
  done = [Message("user", "hi"), Message("assistant", "Hello.")]
  assert render(done) == f"{SYS}\n\nUser: hi\n\nAssistant: Hello.{EOS}"
  # per-message strip, and the whole prompt is stripped (no trailing "\n\n")
  assert render([Message("user", "  hi \n")]) == f"{SYS}\n\nUser: hi"
  # empty content renders "Role:" with no space and no separator
  assert render(
      [Message("user", "a"), Message("assistant", " "), Message("user", "b")],
      add_generation_prompt=True,
  ) == (f"{SYS}\n\nUser: a\n\nAssistant:User: b\n\nAssistant:")
  # separators alternate by message index, not role
  assert render([Message("user", "a"), Message("user", "b")], True) == (
      f"{SYS}\n\nUser: a\n\nUser: b{EOS}Assistant:"
  )
  # an empty system prompt emits nothing, not even the separator
  assert render(SINGLE, True, Template(system="")) == (
      f"User: {IMG}Describe each stage of this image.\n\nAssistant:"
  )
  assert DEEPSEEK.sep2 == EOS
  with pytest.raises(ValueError, match="role"):
    Message("system", "x")


def test_ids_match_transformers_processor(tok, hf_processor):
  from PIL import Image

  images = [Image.new("RGB", (64 + 16 * i, 48), (40 * i, 90, 200)) for i in range(3)]
  for case, messages in CASES.items():
    enc = encode_conversation(messages, tok, real_config(), add_generation_prompt=True)
    n = EXPECTED[case].count(IMG)
    hf = hf_processor(text=EXPECTED[case], images=images[:n] or None, return_tensors="np")
    np.testing.assert_array_equal(enc.ids, hf["input_ids"][0], err_msg=case)
    assert enc.num_images == n and (enc.ids == 100015).sum() == n * K
    assert not enc.loss_mask.any() or case == "multi_turn"


@pytest.mark.parametrize(
    "answer",
    [
        "A dog.",
        "42 is the answer.",
        "(a) red; (b) blue",
        "这是一只狗。",
        "- item\n- item 2",
        "`code` and **bold**",
        "'quoted' answer",
        "\u00e9t\u00e9 \U0001F642",
    ],
)
def test_segment_ids_equal_whole_string_ids(tok, answer):
  messages = [
      Message("user", f"{IMG}Q?"),
      Message("assistant", answer),
      Message("user", f"Again {IMG}"),
      Message("assistant", answer),
  ]
  enc = encode_conversation(messages, tok, real_config())
  whole = np.asarray(tok.encode(render(messages)))
  whole = np.repeat(whole, np.where(whole == 100015, K, 1))
  np.testing.assert_array_equal(enc.ids, whole)


def _runs(mask):
  """[start, stop) of each run of True."""
  edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
  return list(zip(edges[::2], edges[1::2]))


def test_sft_mask_two_turns_two_images(tok):
  messages = [
      Message("user", f"{IMG}What is in this picture?"),
      Message("assistant", "A brown dog on grass."),
      Message("user", f"And here? {IMG}"),
      Message("assistant", "The same dog, now wearing a santa hat."),
  ]
  enc = encode_conversation(messages, tok, real_config())
  ids, mask = enc.ids, enc.loss_mask
  assert enc.num_images == 2 and (ids == 100015).sum() == 2 * K
  assert ids[0] == 100000 and not mask[0]
  assert not mask[ids == 100015].any()
  runs = _runs(mask)
  assert [tok.decode(ids[a:b], skip_special_tokens=False) for a, b in runs] == [
      f" A brown dog on grass.{EOS}",
      f" The same dog, now wearing a santa hat.{EOS}",
  ]
  for a, b in runs:
    assert ids[b - 1] == 100001
    assert tok.decode(ids[a : a + 1]).startswith(" ")  # the leading space is supervised
    assert tok.decode(ids[:a], skip_special_tokens=False).endswith("\n\nAssistant:")
  # everything unsupervised is BOS, system prompt, user turns, images, "Assistant:"
  unsup = tok.decode(ids[~mask], skip_special_tokens=False)
  assert unsup == (
      f"<｜begin▁of▁sentence｜>{SYS}\n\nUser: {IMG * K}What is in this "
      f"picture?\n\nAssistant:User: And here? {IMG * K}\n\nAssistant:"
  )


def test_generation_prompt_masks_history_answers_only(tok):
  enc = encode_conversation(MULTI_TURN, tok, real_config(), add_generation_prompt=True)
  assert [tok.decode(enc.ids[a:b], skip_special_tokens=False) for a, b in _runs(enc.loss_mask)] == [
      f" A dog.{EOS}"
  ]
  assert tok.decode(enc.ids[-2:]) == "Assistant:"


def test_raw_prompt_mode(tok):
  enc = encode_prompt(f"{IMG}A photo of", tok, real_config())
  expected = [100000] + [100015] * K + tok.encode("A photo of", add_bos=False)
  np.testing.assert_array_equal(enc.ids, expected)
  assert enc.ids.dtype == np.int32 and enc.num_images == 1 and not enc.loss_mask.any()


def test_encode_errors(tok):
  with pytest.raises(ValueError, match="alternate"):
    encode_conversation([Message("assistant", "hi")], tok, real_config())
  with pytest.raises(ValueError, match="last message to be a user"):
    encode_conversation(
        [Message("user", "a"), Message("assistant", "b")],
        tok,
        real_config(),
        add_generation_prompt=True,
    )
  with pytest.raises(ValueError, match="image_token_id"):
    encode_conversation(SINGLE, tok, real_config().replace(image_token_id=100016))

"""Tokenizer: DeepSeek's real BPE file against transformers, image-id rules, sentencepiece."""

import pytest
from conftest import tiny_config
from tokenizer_files import hf_tokenizer, plain_tokenizer_json, real_config

from dsvl_jax.processor.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    IMAGE_TOKEN,
    Tokenizer,
    TokenizerError,
)

SYS = (
    "You are a helpful language and vision assistant. You are able to understand the "
    "visual content that the user provides, and assist the user with a variety of tasks "
    "using natural language."
)
TEXTS = [
    "Hello world",
    "  leading spaces, trailing spaces  ",
    "Describe each stage of this image.\n\nLine two\r\nwith CRLF\ttab",
    "你好，世界！这是一只戴着圣诞帽的狗。",
    "Mixed 中文 and English: 3.14159 × 2 = 6.28318; numbers 1234567890",
    "def f(x):\n    return x ** 2  # code 🙂 émoji ñ",
    # the multi-turn, multi-image rendered template (reference 4.3 table, extended)
    f"{SYS}\n\nUser: {IMAGE_TOKEN}What is this?\n\nAssistant: A dog.{EOS_TOKEN}"
    f"User: {IMAGE_TOKEN}And {IMAGE_TOKEN}these?\n\nAssistant:",
]


def test_special_ids_come_from_config(tok):
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.image_id) == (100000, 100001, 100001, 100015)
  # ... and they are the DeepSeek token strings in the file, not Llama's 1/2.
  assert tok.decode([100000], skip_special_tokens=False) == BOS_TOKEN
  assert tok.decode([100001], skip_special_tokens=False) == EOS_TOKEN
  assert tok.decode([100015], skip_special_tokens=False) == IMAGE_TOKEN


def test_bos_prepended_exactly_once(tok):
  ids = tok.encode("Hello world")
  assert ids[0] == 100000 and ids.count(100000) == 1
  assert tok.encode("Hello world", add_bos=False) == ids[1:]
  assert tok.encode("") == [100000]


def test_bos_not_doubled_when_file_post_processor_adds_it(tmp_path, vl_json):
  # transformers writes a BOS-adding TemplateProcessing into tokenizer.json on save.
  hf_tokenizer(vl_json).save_pretrained(tmp_path)
  import tokenizers

  raw = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  assert raw.encode("Hello", add_special_tokens=True).ids[0] == 100000  # premise
  tok = Tokenizer.from_pretrained_dir(tmp_path, real_config())
  ids = tok.encode("Hello world")
  assert ids.count(100000) == 1 and ids[0] == 100000
  assert ids == Tokenizer.from_file(vl_json, real_config()).encode("Hello world")


def test_eos_literal_is_one_token(tok):
  assert tok.encode(EOS_TOKEN, add_bos=False) == [100001]
  ids = tok.encode(f"A dog.{EOS_TOKEN}User: What colour?", add_bos=False)
  assert ids.count(100001) == 1
  assert ids == (
      tok.encode("A dog.", add_bos=False)
      + [100001]
      + tok.encode("User: What colour?", add_bos=False)
  )


def test_image_placeholder_is_atomic(tok):
  assert tok.encode(IMAGE_TOKEN, add_bos=False) == [100015]
  assert tok.encode(IMAGE_TOKEN * 3, add_bos=False) == [100015] * 3
  ids = tok.encode(f"x{IMAGE_TOKEN}y", add_bos=False)
  assert ids == tok.encode("x", add_bos=False) + [100015] + tok.encode("y", add_bos=False)
  # skip_special_tokens drops BOS, EOS and the placeholder
  assert tok.decode(tok.encode(f"x{IMAGE_TOKEN}y{EOS_TOKEN}")) == "xy"


@pytest.mark.parametrize("cls_name", ["PreTrainedTokenizerFast", "LlamaTokenizerFast"])
def test_matches_transformers(tok, vl_json, cls_name):
  hf = hf_tokenizer(vl_json, cls_name)
  assert hf.convert_tokens_to_ids(IMAGE_TOKEN) == 100015
  for text in TEXTS:
    expected = hf(text)["input_ids"]
    assert expected[0] == 100000, "transformers should add BOS here"
    assert tok.encode(text) == expected, text
    assert tok.decode(expected) == hf.decode(expected, skip_special_tokens=True)
    assert tok.decode(expected, skip_special_tokens=False) == hf.decode(expected)


def test_plain_llm_tokenizer_gives_wrong_image_id():
  # The 100002-entry LLM tokenizer would put the placeholder on 100002, not 100015.
  with pytest.raises(TokenizerError, match=r"id 100002.*image_token_id=100015"):
    Tokenizer.from_file(plain_tokenizer_json(), real_config())
  tok = Tokenizer.from_file(plain_tokenizer_json(), real_config(), remap_image_id=True)
  ids = tok.encode(f"a{IMAGE_TOKEN}b", add_bos=False)
  assert 100015 in ids and 100002 not in ids
  assert tok.decode(ids, skip_special_tokens=False) == f"a{IMAGE_TOKEN}b"
  assert tok.decode(ids) == "ab"


def test_config_ids_must_fit_the_file(vl_json):
  # tiny config: image id 500 is an ordinary BPE token of the real vocabulary
  with pytest.raises(TokenizerError, match="image_token_id=500"):
    Tokenizer.from_file(vl_json, tiny_config("siglip"))
  with pytest.raises(TokenizerError, match="already the token"):
    Tokenizer.from_file(vl_json, tiny_config("siglip"), remap_image_id=True)
  with pytest.raises(TokenizerError, match="bos_token_id=200000"):
    Tokenizer.from_file(vl_json, real_config().replace(bos_token_id=200000))


LINES = [
    "the quick brown fox jumps over the lazy dog",
    "a dog wearing a santa hat and a cat wearing nothing",
    "describe each stage of this image",
    "what is the dog wearing? it is a red hat.",
    "user assistant system image colour shape",
] * 4


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  import sentencepiece

  prefix = tmp_path_factory.mktemp("sp") / "sp"
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(LINES),
      model_prefix=str(prefix),
      vocab_size=60,
      model_type="bpe",
      character_coverage=1.0,
      hard_vocab_limit=False,
      minloglevel=2,
  )
  return prefix.with_suffix(".model")


def test_sentencepiece_round_trip(sp_model):
  cfg = tiny_config("siglip")  # bos 1, eos 2 (sentencepiece's control ids), image 500
  tok = Tokenizer.from_sentencepiece(sp_model, cfg)
  for text in ["the dog is wearing a red hat.", "describe this image"]:
    ids = tok.encode(text)
    assert ids[0] == 1 and ids.count(1) == 1 and 2 not in ids
    assert all(0 < i < 60 for i in ids[1:])
    assert tok.decode(ids) == text
  text = f"{IMAGE_TOKEN}what is the dog wearing?{EOS_TOKEN}"
  ids = tok.encode(text, add_bos=False)
  assert ids[0] == 500 and ids[-1] == 2 and ids.count(500) == 1
  assert tok.decode(ids, skip_special_tokens=False) == text
  assert tok.decode(ids) == "what is the dog wearing?"


def test_sentencepiece_rejects_ordinary_piece_as_special(sp_model):
  cfg = tiny_config("siglip").replace(image_token_id=10)
  with pytest.raises(TokenizerError, match="image_token_id=10 is the ordinary piece"):
    Tokenizer.from_sentencepiece(sp_model, cfg)


def test_from_pretrained_dir(tmp_path, sp_model, vl_json):
  with pytest.raises(FileNotFoundError, match="tokenizer.json or tokenizer.model"):
    Tokenizer.from_pretrained_dir(tmp_path, real_config())
  (tmp_path / "tokenizer.model").write_bytes(sp_model.read_bytes())
  sp = Tokenizer.from_pretrained_dir(tmp_path, tiny_config("siglip"))
  assert sp.decode(sp.encode("the lazy dog")) == "the lazy dog"
  (tmp_path / "tokenizer.json").write_bytes(vl_json.read_bytes())  # preferred over .model
  assert Tokenizer.from_pretrained_dir(tmp_path, real_config()).encode("hi") == Tokenizer.from_file(
      vl_json, real_config()
  ).encode("hi")

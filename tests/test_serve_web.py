"""The web chat page in a real browser (Debian's chromium, driven by Playwright): upload an
image, ask, read the streamed answer from the page, ask again; each answer is
Generator.generate's on the conversation so far. The screenshot stays in tmp_path."""

import shutil

import pytest
from serve_fixtures import drawn_image, running_server, serve_config

from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.generate import Generator
from dsvl_jax.infer.load import load_model
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.infer.streaming import cut_at_stop
from dsvl_jax.processor.conversation import Message, encode_conversation, template_for
from dsvl_jax.processor.image_processor import ImageProcessorConfig, load_image, process_batch
from dsvl_jax.processor.tokenizer import Tokenizer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (`make test` installs it "
    "with apt-get when it can: apt-get install chromium)",
)

# Words only (no byte fallback): whatever the random model says renders as plain text.
LINES = [
    "the dog is wearing a red hat",
    "a cat sits on the mat near the door",
    "what colour is the sky today",
    "describe this image in one sentence",
    "the image shows two shapes and a word",
] * 4
# The page's answer is watched for changes as it streams (a MutationObserver).
WATCH = """() => {
  window.__seen = [];
  const box = document.querySelector('#chatbot');
  new MutationObserver(() => {
    const bots = box.querySelectorAll('.message.bot');
    if (bots.length) window.__seen.push(bots[bots.length - 1].innerText);
  }).observe(box, {subtree: true, childList: true, characterData: true});
}"""


def _norm(text: str) -> str:
  return " ".join(text.split())


def test_upload_ask_and_read_the_streamed_answer(tmp_path):
  import sentencepiece
  from playwright.sync_api import sync_playwright

  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(LINES),
      model_prefix=str(tmp_path / "sp"),
      vocab_size=50,
      model_type="bpe",
      character_coverage=1.0,
      hard_vocab_limit=False,
      minloglevel=2,
  )
  image_path = tmp_path / "shapes.png"
  drawn_image(5, size=(96, 64)).save(image_path)
  config = serve_config(
      api_key_env="",
      tokenizer=str(tmp_path / "sp.model"),
      temperature=0.0,
      system_prompt="",
      default_max_tokens=60,
  )
  # The model's vocabulary is the tokenizer's pieces plus the image id after them, so
  # that every token it says is a word piece.
  n = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "sp.model")).get_piece_size()
  config.model.llm.vocab_size = n + 1
  config.model.image_token_id = n

  # What the page must show: the engine's prompt for [image, question], greedy.
  cfg, params = load_model(config, config.serve, "serve")
  tok = Tokenizer.from_sentencepiece(tmp_path / "sp.model", cfg)
  pixels = process_batch([load_image(image_path)], ImageProcessorConfig.for_model(cfg))
  gen = Generator(cfg, params, prompt_bucket=16)

  def answer(turns):
    enc = encode_conversation(
        turns, tok, cfg, add_generation_prompt=True, template=template_for("")
    )
    out = gen.generate(
        enc.ids[None],
        images=pixels,
        sampling=SamplingConfig(
            temperature=0.0, repetition_penalty=1.1, max_new_tokens=60, stop_strings=STOP_STRINGS
        ),
        decode=tok.decode,
    )
    return cut_at_stop(tok.decode(out.tokens[0]), STOP_STRINGS).strip()

  question, follow_up = "what is in this image", "and the colour"
  want = answer([Message("user", "<image_placeholder>" + question)])
  assert len(want.split()) >= 3, "the check needs an answer of several words"
  # the second turn's prompt holds the whole conversation, the first image included
  want2 = answer(
      [
          Message("user", "<image_placeholder>" + question),
          Message("assistant", want),
          Message("user", follow_up),
      ]
  )

  with running_server(config, web=True) as (url, service), sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(url + "/", timeout=60_000)
    page.locator("#chat-input textarea").wait_for(timeout=60_000)
    page.evaluate(WATCH)
    page.locator("#chat-input input[type=file]").set_input_files(str(image_path))
    page.locator("#chat-input img").first.wait_for(timeout=30_000)  # the upload's preview
    box = page.locator("#chat-input textarea")
    box.fill(question)
    box.press("Enter")
    bot = page.locator("#chatbot .message.bot").last
    try:
      page.wait_for_function(
          "want => { const b = document.querySelectorAll('#chatbot .message.bot');"
          " return b.length && b[b.length - 1].innerText.replace(/\\s+/g, ' ').trim() == want; }",
          arg=_norm(want),
          timeout=120_000,
      )
    except Exception:
      page.screenshot(path=str(tmp_path / "web_failed.png"), full_page=True)
      raise AssertionError(
          f"the page shows {bot.inner_text()!r}, not {want!r}; "
          f"screenshot {tmp_path / 'web_failed.png'}"
      ) from None
    seen = [_norm(s) for s in page.evaluate("window.__seen")]
    shown = _norm(bot.inner_text())
    box.fill(follow_up)
    box.press("Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('#chatbot .message.bot').length == n", arg=2, timeout=60_000
    )
    page.wait_for_function(
        "want => { const b = document.querySelectorAll('#chatbot .message.bot');"
        " return b[1].innerText.replace(/\\s+/g, ' ').trim() == want; }",
        arg=_norm(want2),
        timeout=120_000,
    )
    page.screenshot(path=str(tmp_path / "web_chat.png"), full_page=True)
    user = " ".join(page.locator("#chatbot .message.user").all_inner_texts())
    has_image = page.locator("#chatbot .message.user img").count()
    browser.close()
    stats = service.engine.status()
  assert shown == _norm(want)
  assert question in user
  assert has_image >= 1  # the uploaded image is in the user's turn
  # streamed: the answer grew through partial states before the final one
  final = _norm(want)
  partial = [s for s in seen if s and s != final and s != "Loading content"]
  assert partial and all(final.startswith(s) for s in partial), partial
  assert stats["completed"] == 2 and stats["prefills"] == 2
  assert (tmp_path / "web_chat.png").stat().st_size > 10_000
  print(f"screenshot: {tmp_path / 'web_chat.png'}")

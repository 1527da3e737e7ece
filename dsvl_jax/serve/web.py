"""`--config.mode=web`: a gradio chat page at / beside the API at /v1, one engine for both.

Like the official demo: image upload, multi-turn chat (the whole conversation, its
images included, is the prompt of every turn, as the chat CLI builds it), streamed
answers, and sampling controls. A turn's images go before its text (the CLI's order).
With serve.adapters, a menu picks the checkpoint or one of its adapters.
"""

from __future__ import annotations

from dsvl_jax.infer.chat_config import STOP_STRINGS
from dsvl_jax.infer.engine import Delta, EngineError, Failed, QueueSink
from dsvl_jax.infer.sampling import SamplingConfig
from dsvl_jax.processor.conversation import IMAGE_TOKEN, Message
from dsvl_jax.serve.protocol import RequestError
from dsvl_jax.serve.service import ChatService


def _parts(content) -> tuple[list[str], list[str]]:
  """A gradio message's content -> (texts, file paths). gradio gives a string, a file
  ({"path": ...} or {"file": {"path": ...}}), typed parts, or a list of these."""
  texts, files = [], []
  items = content if isinstance(content, (list, tuple)) else [content]
  for item in items:
    if isinstance(item, str):
      texts.append(item)
    elif isinstance(item, dict):
      if item.get("type") == "text":
        texts.append(item.get("text", ""))
      elif isinstance(item.get("file"), dict):
        files.append(item["file"]["path"])
      elif item.get("path"):
        files.append(item["path"])
    elif hasattr(item, "path"):  # a FileData-like object
      files.append(item.path)
  return texts, files


def conversation(
    history: list[dict], message: dict, image_position: str = "first"
) -> tuple[list[Message], list[str]]:
  """gradio's history (one entry per text or file) and the new message -> alternating
  turns with their images first (or last), and the image paths in order."""
  turns: list[tuple[str, list[str], list[str]]] = []  # (role, texts, files)
  files = [f if isinstance(f, dict) else {"path": f} for f in message.get("files", [])]
  for entry in list(history) + [{"role": "user", "content": files + [message.get("text", "")]}]:
    role = entry["role"]
    texts, files = _parts(entry["content"])
    if turns and turns[-1][0] == role:  # gradio splits one turn into several entries
      turns[-1][1].extend(texts)
      turns[-1][2].extend(files)
    else:
      turns.append((role, texts, files))
  messages, paths = [], []
  for role, texts, files in turns:
    if role == "assistant":
      messages.append(Message("assistant", "\n".join(t for t in texts if t)))
      continue
    paths += files
    text = "\n".join(t for t in texts if t)
    marks = IMAGE_TOKEN * len(files)
    messages.append(Message("user", text + marks if image_position == "last" else marks + text))
  return messages, paths


def build_page(service: ChatService, title: str, image_position: str = "first"):
  import gradio as gr  # pylint: disable=g-import-not-at-top

  d = service.defaults

  def respond(message, history, temperature, top_p, max_tokens, seed, model):
    try:
      if model not in service.models:
        raise RequestError(f"model {model!r} is not served here")
      messages, paths = conversation(history, message, image_position)
      if len(paths) > service.limits.max_images:
        raise RequestError(
            f"too many images: at most {service.limits.max_images} per "
            f"conversation (serve.max_images)"
        )
      prompt = service.build_prompt(messages, [service.resolver.open_upload(p) for p in paths])
      sampling = SamplingConfig(
          temperature=float(temperature),
          top_p=float(top_p),
          repetition_penalty=d.repetition_penalty,
          max_new_tokens=int(max_tokens),
          stop_strings=STOP_STRINGS,
          seed=int(seed),
      )
      sink = QueueSink()
      handle = service.engine.submit(prompt, sampling, sink, service.models[model])
    except (RequestError, EngineError, OSError, ValueError) as e:
      raise gr.Error(str(e)) from e
    text = ""
    try:
      for event in sink.events():
        if isinstance(event, Delta):
          text += event.text
          yield text
        elif isinstance(event, Failed):
          raise gr.Error(event.message)
    finally:  # the page's stop button, or a closed tab
      handle.cancel()

  return gr.ChatInterface(
      respond,
      multimodal=True,
      title=title,
      textbox=gr.MultimodalTextbox(
          file_types=["image"],
          file_count="multiple",
          placeholder="Ask about an image (attach it with the clip)",
          elem_id="chat-input",
      ),
      chatbot=gr.Chatbot(elem_id="chatbot", height=520),
      additional_inputs=[
          gr.Slider(0.0, 2.0, value=d.temperature, step=0.05, label="temperature"),
          gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="top_p"),
          gr.Slider(
              1,
              service.limits.max_tokens,
              value=service.limits.default_max_tokens,
              step=1,
              label="max new tokens",
          ),
          gr.Number(value=0, precision=0, label="seed"),
          # the checkpoint or one of serve.adapters
          gr.Dropdown(list(service.models), value=service.model_name, label="model"),
      ],
      additional_inputs_accordion=gr.Accordion("Sampling", open=False),
  )


def mount_page(app, service: ChatService, title: str, image_position: str = "first"):
  """The page at / of the API's FastAPI app (its /v1 routes stay first)."""
  import gradio as gr  # pylint: disable=g-import-not-at-top

  return gr.mount_gradio_app(app, build_page(service, title, image_position), path="/")

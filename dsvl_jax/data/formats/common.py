"""What the format readers share: the error that names a skip reason, LLaVA's image
marker and roles, chats and captions of any format in our schema, and shard-path
expansion (sources.LineIndex indexes text lines)."""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

from dsvl_jax.data.sources import RecordError
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

LLAVA_IMAGE = "<image>"  # LLaVA's image marker in conversation text
LLAVA_ROLES = {"human": "user", "gpt": "assistant"}  # ShareGPT "from" -> our roles
ROLES = ("user", "assistant")  # the roles a chat record trains (sources.py)


class FormatError(RecordError):
  """A record of a public format that cannot become a sample; `reason` is the skip
  counter's key ("malformed", "missing_member", "missing_image", ...)."""

  def __init__(self, reason: str, detail: str):
    super().__init__(detail)
    self.reason = reason


def llava_messages(turns: Any, num_images: int, where: str = "") -> list[dict[str, str]]:
  """LLaVA / ShareGPT turns [{"from": "human" | "gpt", "value": str}] -> our messages,
  each "<image>" marker becoming the image placeholder (in order). A record whose
  markers do not number its images is malformed (FormatError)."""
  if not isinstance(turns, list) or not turns:
    raise FormatError("malformed", f"{where}'conversations' must be a non-empty list")
  out, markers = [], 0
  for i, turn in enumerate(turns):
    if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
      raise FormatError("malformed", f"{where}turn {i} needs a string 'value'")
    role = LLAVA_ROLES.get(turn.get("from"))
    if role is None:
      raise FormatError(
          "malformed", f"{where}turn {i}: 'from' must be one of {sorted(LLAVA_ROLES)}"
      )
    markers += turn["value"].count(LLAVA_IMAGE)
    out.append({"role": role, "content": turn["value"].replace(LLAVA_IMAGE, IMAGE_TOKEN)})
  if markers != num_images:
    raise FormatError(
        "malformed", f"{where}{markers} {LLAVA_IMAGE} marker(s) but {num_images} image(s)"
    )
  return out


def expand_paths(paths: Sequence[str], suffixes: Sequence[str]) -> list[pathlib.Path]:
  """Files as given, and a folder's files with one of `suffixes` (sorted by name)."""
  out: list[pathlib.Path] = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      found = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(tuple(suffixes)))
      if not found:
        raise FileNotFoundError(f"no {'/'.join(suffixes)} files in {p}")
      out += found
    elif p.is_file():
      out.append(p)
    else:
      raise FileNotFoundError(f"not found: {str(p)!r}")
  return out


def chat_messages(
    turns: Any, num_images: int, where: str = ""
) -> tuple[list[dict[str, str]], list[int] | None]:
  """A chat's turns -> (our messages, image order): LLaVA {"from", "value"} turns or
  {"role", "content"} turns (content a string or a list of text/image parts).

  The order is None when the k-th placeholder is the k-th image, else the image index of
  each placeholder (parts that carry an "index"). Raises FormatError("malformed").
  """
  if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
    raise FormatError("malformed", f"{where}messages must be a non-empty list of objects")
  if "from" in turns[0]:
    return llava_messages(turns, num_images, where), None
  out, indices = [], []
  for i, turn in enumerate(turns):
    role, content = turn.get("role"), turn.get("content")
    if role not in ROLES:
      raise FormatError("malformed", f"{where}turn {i}: role {role!r} is not one of {ROLES}")
    if isinstance(content, str):
      text = content.replace(LLAVA_IMAGE, IMAGE_TOKEN) if num_images else content
      indices += [None] * text.count(IMAGE_TOKEN)
    elif isinstance(content, list):
      pieces = []
      for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
          pieces.append(part["text"])
        elif kind == "image":
          pieces.append(IMAGE_TOKEN)
          indices.append(part.get("index"))
        else:
          raise FormatError("malformed", f"{where}turn {i}: a content part {part!r}")
      text = "".join(pieces)
    else:
      raise FormatError("malformed", f"{where}turn {i}: content must be a string or parts")
    out.append({"role": role, "content": text})
  if len(indices) != num_images:
    raise FormatError(
        "malformed", f"{where}{len(indices)} image marker(s) but {num_images} image(s)"
    )
  if all(k is None for k in indices):
    return out, None
  if sorted(k for k in indices if k is not None) != list(range(num_images)):
    raise FormatError(
        "malformed", f"{where}image parts index {indices}, not each of {num_images} image(s) once"
    )
  return out, [int(k) for k in indices]


def caption_text(text: str, num_images: int) -> str:
  """A caption or document with images: LLaVA markers become our placeholder, and a text
  without one gets one per image in front (the images precede their caption). A text
  without images is left as it is ("<image>" may be a document's own text)."""
  if not num_images:
    return text
  text = text.replace(LLAVA_IMAGE, IMAGE_TOKEN)
  return text if IMAGE_TOKEN in text else IMAGE_TOKEN * num_images + text


class OpenFiles:
  """The shards a reader reads, up to `limit` open at once in this process, the least
  recently used closed first (a shuffled run visits them all). A forked or spawned
  worker opens its own, and a pickled copy holds none. opener(path) opens one (it must
  pickle: a class or a functools.partial, not a lambda)."""

  def __init__(self, paths: Sequence[str], opener: Any, limit: int = 16):
    self.paths, self._opener, self._limit = list(paths), opener, limit
    self._files: dict[int, Any] = {}  # most recently used last
    self._pid: int | None = None

  def get(self, i: int) -> Any:
    if self._pid != os.getpid():
      self._files, self._pid = {}, os.getpid()
    f = self._files.pop(i, None)
    if f is None:
      if len(self._files) >= self._limit:
        self._files.pop(next(iter(self._files))).close()
      f = self._opener(self.paths[i])
    self._files[i] = f
    return f

  def __getstate__(self):
    return {**self.__dict__, "_files": {}, "_pid": None}

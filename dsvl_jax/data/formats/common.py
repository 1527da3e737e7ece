"""What the format readers share: the error that names a skip reason, LLaVA's image
marker and roles, and shard-path expansion (sources.LineIndex indexes text lines)."""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

from dsvl_jax.data.sources import RecordError
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

LLAVA_IMAGE = "<image>"  # LLaVA's image marker in conversation text
LLAVA_ROLES = {"human": "user", "gpt": "assistant"}  # ShareGPT "from" -> our roles


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

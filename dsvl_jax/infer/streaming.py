"""Streaming text from a growing list of generated tokens.

The answer is the decoded tokens cut at the first stop string and stripped. While
tokens arrive, only text that cannot change is released: an incomplete UTF-8 sequence
at the end (decoded as U+FFFD), an ending that may still grow into a stop string, and
trailing whitespace (stripped if nothing follows) are held back. So the released deltas
joined are exactly the final answer (the chat CLI prints them, the server sends them).
"""

from __future__ import annotations

from typing import Callable, Sequence


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
  """Text up to the first stop string (the reference strips stop words afterwards)."""
  cut = len(text)
  for stop in stop_strings:
    pos = text.find(stop)
    if pos >= 0:
      cut = min(cut, pos)
  return text[:cut]


class TextStream:
  """push(token) -> newly released text; finish() -> the rest; `text` is the answer."""

  def __init__(
      self,
      decode: Callable[[list[int]], str],
      stop_strings: Sequence[str] = (),
      on_text: Callable[[str], None] | None = None,
  ):
    self.decode, self.stop_strings, self.on_text = decode, tuple(stop_strings), on_text
    self.tokens: list[int] = []
    self.sent = ""
    self.final: str | None = None
    self.stopped = False  # a stop string has appeared

  def _full(self) -> str:
    text = self.decode(self.tokens)
    cut = cut_at_stop(text, self.stop_strings)
    self.stopped = len(cut) < len(text)
    return cut

  def push(self, token: int) -> str:
    self.tokens.append(int(token))
    text = self._full().lstrip()
    if text.endswith("\ufffd"):
      return ""
    hold = max(
        (k for s in self.stop_strings for k in range(1, len(s)) if text.endswith(s[:k])), default=0
    )
    return self._release(text[: len(text) - hold].rstrip())

  def finish(self) -> str:
    self.final = self._full().strip()
    return self._release(self.final)

  @property
  def text(self) -> str:
    """The answer: final after finish(), else what has been released."""
    return self.sent if self.final is None else self.final

  def _release(self, visible: str) -> str:
    if len(visible) <= len(self.sent) or not visible.startswith(self.sent):
      return ""
    delta = visible[len(self.sent) :]
    self.sent = visible
    if self.on_text is not None:
      self.on_text(delta)
    return delta

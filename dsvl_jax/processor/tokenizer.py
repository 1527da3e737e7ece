"""Text <-> token ids for DeepSeek-VL (reference 4.1).

`Tokenizer` wraps a HF `tokenizer.json` (the `tokenizers` library, DeepSeek's
byte-level BPE), a sentencepiece model, or the built-in byte tokenizer (one id per UTF-8
byte; for the tiny models trained on the built-in dataset, where no files exist). Special ids always
come from the model config (`VLMConfig.bos_token_id` etc.), never from the tokenizer
files: converted transformers configs carry Llama's defaults (bos 1, eos 2).

BOS: `encode(text)` tokenises with the file's post-processor switched off and prepends
the config's BOS itself, so BOS appears exactly once whether or not the tokenizer.json
has a BOS-adding `TemplateProcessing` (files saved by transformers do; DeepSeek's
original file does not).

The image token `<image_placeholder>` (reference 4.1) must be a single atomic token
whose id is `cfg.image_token_id` (100015 for the release). The released VL tokenizer
holds ids 0..100014 (BOS 100000, EOS 100001, 13 further added tokens 100002..100014), so
adding the placeholder as a special token gives 100015, which is what ORIG's
`VLChatProcessor` does. A plain DeepSeek-LLM tokenizer (100002 entries) would give
100002 instead. The loader therefore checks the resulting id against the config and
raises when they differ. `remap_image_id=True` is the explicit escape hatch for such
files: the tokenizer keeps its local id and `encode`/`decode` translate it to and from
`cfg.image_token_id` (allowed only when the config id is not a token of the file, so the
mapping is one to one). Text containing the release's missing added tokens then
tokenises differently from the release, so use the checkpoint's own files for real work.
"""

from __future__ import annotations

import functools
import pathlib
import re
from typing import Protocol, Sequence

IMAGE_TOKEN = "<image_placeholder>"
BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"


class TokenizerError(ValueError):
  """The tokenizer files disagree with the model config."""


class SpecialIds(Protocol):
  """What the tokenizer needs from a config (`VLMConfig` satisfies it)."""

  bos_token_id: int
  eos_token_id: int
  pad_token_id: int
  image_token_id: int


class _HFBackend:
  """A `tokenizers.Tokenizer` from tokenizer.json, plus the image token."""

  def __init__(self, path: pathlib.Path, cfg: SpecialIds, image_token: str, remap_image_id: bool):
    import tokenizers  # local import: only this backend needs it

    self.tok = tokenizers.Tokenizer.from_file(str(path))
    size = self.tok.get_vocab_size(with_added_tokens=True)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
      i = getattr(cfg, name)
      if self.tok.id_to_token(i) is None:
        raise TokenizerError(
            f"{path}: config {name}={i} is not a token of this file ({size} entries)"
        )
    local = self.tok.token_to_id(image_token)
    if local is None:
      # ORIG VLChatProcessor: add the placeholder as a special token when missing.
      self.tok.add_special_tokens([image_token])
      local = self.tok.token_to_id(image_token)
    target = cfg.image_token_id
    self.to_cfg: dict[int, int] = {}
    self.to_local: dict[int, int] = {}
    if local != target:
      if not remap_image_id:
        raise TokenizerError(
            f"{path}: {image_token!r} has id {local} in this tokenizer ({size} entries "
            f"before adding it) but the model config expects image_token_id={target}. "
            f"The released DeepSeek-VL tokenizer.json has ids up to {target - 1}, so the "
            f"placeholder lands on {target}; a plain DeepSeek-LLM tokenizer gives 100002. "
            f"Use the checkpoint's own tokenizer files, or pass remap_image_id=True to "
            f"translate {local} <-> {target} in encode/decode."
        )
      if self.tok.id_to_token(target) is not None:
        raise TokenizerError(
            f"{path}: cannot remap {image_token!r} from id {local} to {target}: id "
            f"{target} is already the token {self.tok.id_to_token(target)!r}"
        )
      self.to_cfg, self.to_local = {local: target}, {target: local}
    self.vocab_size = max(self.tok.get_vocab_size(with_added_tokens=True), target + 1)

  @functools.cached_property
  def max_token_bytes(self) -> int:  # on first use: only the server's length bound asks
    return max(len(t.encode("utf-8")) for t in self.tok.get_vocab(with_added_tokens=True))

  def encode(self, text: str) -> list[int]:
    # add_special_tokens=False: any BOS/EOS template in the file stays out; BOS is ours.
    ids = self.tok.encode(text, add_special_tokens=False).ids
    return [self.to_cfg.get(i, i) for i in ids] if self.to_cfg else ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
    ids = [self.to_local.get(i, i) for i in ids] if self.to_local else list(ids)
    return self.tok.decode(ids, skip_special_tokens=skip_special_tokens)


class _LiteralBackend:
  """Shared by the sentencepiece and byte backends: the literal BOS/EOS/image strings are
  split out and map to the config ids; the text between them goes to `_encode_text`."""

  def _set_literals(
      self, cfg: SpecialIds, image_token: str, bos_token: str, eos_token: str
  ) -> None:
    self.literals = {
        bos_token: cfg.bos_token_id,
        eos_token: cfg.eos_token_id,
        image_token: cfg.image_token_id,
    }
    self.names = {i: s for s, i in self.literals.items()}
    self.split = re.compile("(" + "|".join(map(re.escape, self.literals)) + ")")

  def encode(self, text: str) -> list[int]:
    ids: list[int] = []
    for part in self.split.split(text):
      if part in self.literals:
        ids.append(self.literals[part])
      elif part:
        ids.extend(self._encode_text(part))
    return ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
    out, run = [], []
    for i in ids:
      if i in self.names:
        out.append(self._decode_run(run))
        run = []
        if not skip_special_tokens:
          out.append(self.names[i])
      elif self._is_text_id(i):
        run.append(int(i))
    out.append(self._decode_run(run))
    return "".join(out)


class _SentencePieceBackend(_LiteralBackend):
  """A sentencepiece model; special strings are split out before sentencepiece runs.

  The literal BOS/EOS/image strings map to the config ids, so the DeepSeek template
  (whose second separator is the literal EOS string) works with any small vocabulary.
  """

  def __init__(
      self, path: pathlib.Path, cfg: SpecialIds, image_token: str, bos_token: str, eos_token: str
  ):
    import sentencepiece  # local import: only this backend needs it

    self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    n = self.sp.get_piece_size()
    self._set_literals(cfg, image_token, bos_token, eos_token)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "image_token_id"):
      i = getattr(cfg, name)
      # A config id inside the vocabulary must not be an ordinary piece, or decoding
      # could not tell the two apart.
      if i < n and not (self.sp.is_control(i) or self.sp.is_unknown(i) or self.sp.is_unused(i)):
        raise TokenizerError(
            f"{path}: config {name}={i} is the ordinary piece "
            f"{self.sp.id_to_piece(i)!r} of this sentencepiece model"
        )
    self.vocab_size = max(n, *(i + 1 for i in self.names))
    self.size = n

  @functools.cached_property
  def max_token_bytes(self) -> int:  # on first use: only the server's length bound asks
    pieces = (self.sp.id_to_piece(i) for i in range(self.size))
    return max(len(s.encode("utf-8")) for s in [*self.literals, *pieces])

  def _encode_text(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def _is_text_id(self, i: int) -> bool:
    return 0 <= i < self.size

  def _decode_run(self, run: list[int]) -> str:
    return self.sp.decode(run)


class _ByteBackend(_LiteralBackend):
  """UTF-8 bytes as ids offset..offset+255; the literal special strings map to config ids."""

  def __init__(self, cfg: SpecialIds, image_token: str, offset: int):
    self.offset = offset
    self._set_literals(cfg, image_token, BOS_TOKEN, EOS_TOKEN)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "image_token_id"):
      i = getattr(cfg, name)
      if offset <= i < offset + 256:
        raise TokenizerError(
            f"config {name}={i} falls inside the byte ids "
            f"{offset}..{offset + 255}; choose another offset"
        )
    self.vocab_size = max(offset + 256, *(i + 1 for i in self.names))
    self.max_token_bytes = max(len(s.encode("utf-8")) for s in self.literals)  # bytes: 1

  def _encode_text(self, text: str) -> list[int]:
    return [b + self.offset for b in text.encode("utf-8")]

  def _is_text_id(self, i: int) -> bool:
    return self.offset <= i < self.offset + 256

  def _decode_run(self, run: list[int]) -> str:
    return bytes(i - self.offset for i in run).decode("utf-8", "replace")


class Tokenizer:
  """encode/decode with config-defined special ids. Build with the class methods."""

  def __init__(self, backend, cfg: SpecialIds, image_token: str = IMAGE_TOKEN):
    self._backend = backend
    self.bos_id = cfg.bos_token_id
    self.eos_id = cfg.eos_token_id
    self.pad_id = cfg.pad_token_id
    self.image_id = cfg.image_token_id
    self.image_token = image_token

  @property
  def vocab_size(self) -> int:
    """One past the largest id encode can return (embedding tables may be larger)."""
    return self._backend.vocab_size

  @property
  def max_token_bytes(self) -> int:
    """The most UTF-8 bytes of text one token stands for (its spelling's length, which
    is at least what it covers: byte-level and metaspace spellings take more bytes than
    the text, byte fallback `<0x41>` six for one). So a text of n bytes has at least
    ceil(n / max_token_bytes) tokens, a bound found without tokenising it (it assumes
    no normaliser deletes text, true of DeepSeek's byte-level BPE)."""
    return self._backend.max_token_bytes

  @classmethod
  def from_file(
      cls,
      path: str | pathlib.Path,
      cfg: SpecialIds,
      *,
      image_token: str = IMAGE_TOKEN,
      remap_image_id: bool = False,
  ) -> "Tokenizer":
    """Loads a HF `tokenizer.json`; see the module docstring for the image id rules."""
    return cls(_HFBackend(pathlib.Path(path), cfg, image_token, remap_image_id), cfg, image_token)

  @classmethod
  def from_sentencepiece(
      cls, model_path: str | pathlib.Path, cfg: SpecialIds, *, image_token: str = IMAGE_TOKEN
  ) -> "Tokenizer":
    """Loads a sentencepiece `.model`; the literal special strings (DeepSeek's BOS and
    EOS spellings, `image_token`) map to config ids."""
    backend = _SentencePieceBackend(
        pathlib.Path(model_path), cfg, image_token, BOS_TOKEN, EOS_TOKEN
    )
    return cls(backend, cfg, image_token)

  @classmethod
  def builtin_bytes(
      cls, cfg: SpecialIds, *, offset: int = 3, image_token: str = IMAGE_TOKEN
  ) -> "Tokenizer":
    """The file-free byte tokenizer (ids offset..offset+255 plus the config's specials)."""
    return cls(_ByteBackend(cfg, image_token, offset), cfg, image_token)

  @classmethod
  def from_pretrained_dir(cls, path: str | pathlib.Path, cfg: SpecialIds, **kwargs) -> "Tokenizer":
    """A checkpoint directory's tokenizer.json, else its tokenizer.model."""
    path = pathlib.Path(path)
    if (path / "tokenizer.json").is_file():
      return cls.from_file(path / "tokenizer.json", cfg, **kwargs)
    if (path / "tokenizer.model").is_file():
      kwargs.pop("remap_image_id", None)  # sentencepiece ids come from the config anyway
      return cls.from_sentencepiece(path / "tokenizer.model", cfg, **kwargs)
    raise FileNotFoundError(f"{path}: no tokenizer.json or tokenizer.model")

  def encode(self, text: str, add_bos: bool = True) -> list[int]:
    """Token ids of `text`; BOS (config id) first when add_bos, as ORIG's encode does.

    `<image_placeholder>` stays one id here; conversation.py expands it per image.
    """
    ids = self._backend.encode(text)
    return [self.bos_id] + ids if add_bos else ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    """Text of `ids`; special tokens (BOS, EOS/pad, image) dropped when asked."""
    return self._backend.decode([int(i) for i in ids], skip_special_tokens)


def make_tokenizer(spec: str, layout: SpecialIds) -> Tokenizer:
  """'builtin:bytes', a tokenizer.json / .model file, or a checkpoint directory."""
  if spec == "builtin:bytes":
    return Tokenizer.builtin_bytes(layout)
  if spec.endswith(".model"):
    return Tokenizer.from_sentencepiece(spec, layout)
  if spec.endswith(".json"):
    return Tokenizer.from_file(spec, layout)
  return Tokenizer.from_pretrained_dir(spec, layout)


def special_token_mismatch(tok: Tokenizer, ids: SpecialIds) -> tuple[str, list[int], int] | None:
  """(text, its ids, the config id) for the first of the template's EOS and the image
  placeholder that does not encode to its single config id; None when both do (the chat
  template and the image blocks rely on both)."""
  for text, want in ((EOS_TOKEN, ids.eos_token_id), (tok.image_token, ids.image_token_id)):
    got = tok.encode(text, add_bos=False)
    if got != [want]:
      return text, got, want
  return None

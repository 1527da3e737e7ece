"""What the model will train on, shown before any accelerator time is spent.

  python -m dsvl_jax.data.inspect --config=configs/X.py[:arg] [--config.data.…=…]
      [--samples=3] [--rows=8] [--out=inspect.png]

1. For each configured source, its first `--samples` records (in file order) rendered as
   the encoder (`encoding.SampleEncoder`, the config's stage, template and tokenizer) turns
   them into tokens, decoded back to text: special tokens spelt out, each image's block of
   tokens shown as `<image k: 640x480 -> 384x288 in 384x384>` (the file's size, the size
   after the resize, the padded square the towers get), the tokens that carry loss
   wrapped in [[ ]]. Records the encoder skips on the way are listed with their reason.
2. The first batch of each modality of the real pipeline (`pipeline.TrainDataset`, the
   config's data section, shuffled and packed as in training), drawn to `--out`: per row,
   its images as uint8 pixels as the model gets them (small ones enlarged by whole
   pixels, larger than 384 shrunk), and the row's decoded text below (truncated), the
   same marks. Rows are a function of their global row index only, so the tool builds
   global rows 0..`--rows`-1 as host 0 of a layout that holds just those, not the whole
   global batch.

The config loads as for `dsvl_jax.main` (same --config flag, overrides, one-line errors);
`data.strict` is ignored here, so that bad records are shown instead of raised.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dsvl_jax.config.files import loaded_or_exit
from dsvl_jax.config.schema import ConfigError, check
from dsvl_jax.data.config import DataConfig
from dsvl_jax.data.encoding import SampleEncoder, Skipped, TrainSample
from dsvl_jax.data.mixing import MULTIMODAL, TEXT
from dsvl_jax.data.sources import RecordError, Source, open_image, parse_record
from dsvl_jax.processor.image_processor import target_size
from dsvl_jax.processor.layout import TokenLayout
from dsvl_jax.processor.tokenizer import BOS_TOKEN, EOS_TOKEN, Tokenizer, make_tokenizer

LOSS_OPEN, LOSS_CLOSE = "[[", "]]"
LEGEND = (
    f"{LOSS_OPEN}...{LOSS_CLOSE}: tokens that carry loss; <image k: WxH -> resized in SxS>: "
    "the k-th image's block of image tokens (file size -> size after the resize, padded square)"
)

# The picture (pixels): each image cell is the model's S x S input, enlarged by a whole
# factor to at least MIN_CELL or shrunk to MAX_CELL; TEXT_LINES lines of text per row.
MIN_CELL, MAX_CELL = 96, 384
PAD, FONT_SIZE, LINE_H, TEXT_LINES, TITLE_H, MIN_WIDTH = 8, 12, 16, 6, 24, 800
BACKGROUND, INK, TITLE_INK = (255, 255, 255), (20, 20, 20), (30, 60, 160)


# ------------------------------------------------------------------------ rendering


def render_tokens(
    ids: Sequence[int],
    mask: Sequence[bool],
    layout: TokenLayout,
    tokenizer: Tokenizer,
    image_notes: Sequence[str] = (),
) -> str:
  """Token ids decoded back to text: runs of image tokens as `<image k[: note]>` (one per
  `num_image_tokens`), supervised tokens wrapped in [[ ]] (special tokens spelt out)."""
  ids, mask = np.asarray(ids), np.asarray(mask, bool)
  image_id, n = layout.image_token_id, max(layout.num_image_tokens, 1)
  out, k, t = [], 0, 0
  while t < len(ids):
    if ids[t] == image_id:  # one image's block; a second image may follow directly
      end = min(t + n, len(ids))
      note = image_notes[k] if k < len(image_notes) else ""
      text = f"<image {k + 1}{': ' + note if note else ''}>"
      out.append(_marked(text, bool(mask[t:end].any())))
      k, t = k + 1, end
      continue
    end = t
    while end < len(ids) and ids[end] != image_id and mask[end] == mask[t]:
      end += 1
    out.append(_marked(tokenizer.decode(ids[t:end], skip_special_tokens=False), bool(mask[t])))
    t = end
  return "".join(out)


def _marked(text: str, supervised: bool) -> str:
  return f"{LOSS_OPEN}{text}{LOSS_CLOSE}" if supervised else text


def image_note(ref: Any, layout: TokenLayout) -> str:
  """`WxH -> wxh in SxS`: an image's size, its size after the resize, the padded square."""
  try:
    w, h = open_image(ref).size
  except OSError as e:
    return f"unreadable ({e})"
  s = layout.image.image_size
  rw, rh = target_size(w, h, layout.image)
  return f"{w}x{h} -> {rw}x{rh} in {s}x{s}"


def render_source(
    name: str, source: Source, encoder: SampleEncoder, samples: int, max_records: int | None = None
) -> list[str]:
  """The lines for one source: its first `samples` encodable records in file order, and
  the records skipped on the way (at most `max_records` records are read)."""
  layout, tok = encoder.layout, encoder.tokenizer
  limit = min(len(source), samples * 10 + 10 if max_records is None else max_records)
  lines, shown, i = [], 0, 0
  while shown < samples and i < limit:
    result = encoder((name, i))
    if isinstance(result, Skipped):
      lines.append(f"{result.name}: skipped: {result.reason}: {result.detail}")
    else:
      try:
        images = parse_record(source[i], source.base_dir).images
      except RecordError:  # cannot happen for a record the encoder accepted
        images = ()
      notes = [image_note(ref, layout) for ref in images]
      lines += _sample_lines(result, notes, layout, tok)
      shown += 1
    i += 1
  if shown < samples:
    lines.append(f"({shown} sample(s) from the first {i} of {len(source)} records)")
  return lines


def _sample_lines(
    sample: TrainSample, notes: list[str], layout: TokenLayout, tok: Tokenizer
) -> list[str]:
  head = (
      f"{sample.name}: {len(sample.ids)} tokens, {int(sample.loss_mask.sum())} supervised, "
      f"{len(sample.images)} image(s)"
  )
  text = render_tokens(sample.ids, sample.loss_mask, layout, tok, notes)
  return [head, *(f"  {line}" if line else "" for line in text.split("\n")), ""]


def report(cfg: DataConfig, layout: TokenLayout, tokenizer: Tokenizer, samples: int = 3) -> str:
  """Part 1 of the module docstring, as text."""
  from dsvl_jax.data.pipeline import open_source

  cfg = dataclasses.replace(cfg, strict=False)
  lines = [LEGEND, ""]
  for name, src in cfg.sources:
    source = open_source(src, layout.image.image_size)
    encoder = SampleEncoder(cfg, layout, {name: source}, src.modality, tokenizer)
    lines.append(
        f"== source {name!r}: {src.type}, {src.modality}, {len(source)} records, "
        f"stage {cfg.stage} loss masks"
    )
    lines += render_source(name, source, encoder, samples)
  return "\n".join(lines)


# -------------------------------------------------------------------------- batches


def rows_layout(global_batch_size: int, rows: int) -> tuple[int, int]:
  """(rows per host, hosts): the fewest rows per host, at least `rows`, that divide the
  global batch, so host 0 builds global rows 0.. of the real batch and little more."""
  per = next(d for d in range(1, global_batch_size + 1) if global_batch_size % d == 0 and d >= rows)
  return per, global_batch_size // per


def first_batches(
    cfg: DataConfig, layout: TokenLayout, rows: int = 8, max_steps: int = 500
) -> list[dict[str, Any]]:
  """The first batch of each modality the config has, in step order (global rows 0..)."""
  from dsvl_jax.data.pipeline import TrainDataset

  per, hosts = rows_layout(cfg.global_batch_size, rows)
  cfg = dataclasses.replace(cfg, strict=False, process_index=0, process_count=hosts)
  wanted = {m for m in (TEXT, MULTIMODAL) if cfg.sources_of(m)}
  it = iter(TrainDataset(cfg, layout, 0, hosts))
  out: list[dict[str, Any]] = []
  try:
    for _ in range(max_steps):
      batch = next(it)
      if batch["modality"] in wanted:
        wanted.discard(batch["modality"])
        out.append(batch)
      if not wanted:
        break
  finally:
    it.close()
  return out


def row_samples(batch: dict[str, Any], r: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """Row r's samples as (ids, loss mask), rebuilt from its next-token pairs."""
  out = []
  segs = batch["segment_ids"][r]
  for s in [s for s in np.unique(segs) if s > 0]:
    at = np.flatnonzero(segs == s)
    ids = np.append(batch["inputs"][r][at], batch["targets"][r][at[-1]])
    mask = np.append(False, batch["weights"][r][at] > 0)
    out.append((ids, mask))
  return out


def cell_size(image_size: int) -> int:
  """The side of one image in the picture (see the module's constants)."""
  if image_size < MIN_CELL:
    return image_size * math.ceil(MIN_CELL / image_size)
  return min(image_size, MAX_CELL)


def picture_size(batches: Sequence[dict[str, Any]], image_size: int, rows: int) -> tuple[int, int]:
  """(width, height) of `draw` for these batches."""
  cell = cell_size(image_size)
  slots = max([b["images"].shape[1] for b in batches] + [0])
  width = max(MIN_WIDTH, PAD + slots * (cell + PAD))
  height = PAD
  for b in batches:
    n = min(rows, len(b["inputs"]))
    band = TEXT_LINES * LINE_H + 2 * PAD + (cell + PAD if b["images"].shape[1] else 0)
    height += TITLE_H + n * band
  return width, height


def draw(
    batches: Sequence[dict[str, Any]], layout: TokenLayout, tokenizer: Tokenizer, rows: int = 8
) -> Image.Image:
  """Part 2 of the module docstring: each batch's first `rows` rows, images and text."""
  s = layout.image.image_size
  cell = cell_size(s)
  width, height = picture_size(batches, s, rows)
  canvas = Image.new("RGB", (width, height), BACKGROUND)
  pen = ImageDraw.Draw(canvas)
  font = ImageFont.load_default(size=FONT_SIZE)
  y = PAD
  for b in batches:
    n = min(rows, len(b["inputs"]))
    title = (
        f"step {b['step']} ({b['modality']}): global rows 0-{n - 1}; "
        f"{LOSS_OPEN}...{LOSS_CLOSE} = loss"
    )
    pen.text((PAD, y), title, fill=TITLE_INK, font=font)
    y += TITLE_H
    for r in range(n):
      if b["images"].shape[1]:
        for k in range(int(b["num_images"][r])):
          pixels = np.round(b["images"][r, k] * 255).astype(np.uint8).transpose(1, 2, 0)
          img = Image.fromarray(pixels)
          if cell != s:
            resample = Image.NEAREST if cell > s else Image.BICUBIC
            img = img.resize((cell, cell), resample)
          canvas.paste(img, (PAD + k * (cell + PAD), y))
        y += cell + PAD
      samples = row_samples(b, r)
      text = " | ".join(render_tokens(ids, m, layout, tokenizer) for ids, m in samples)
      text = text.replace(BOS_TOKEN, "<bos>").replace(EOS_TOKEN, "<eos>")
      text = f"row {r} ({len(samples)} sample(s), {int(b['num_images'][r])} image(s)): {text}"
      for k, line in enumerate(_wrap(text, font, width - 2 * PAD, TEXT_LINES)):
        pen.text((PAD, y + k * LINE_H), line, fill=INK, font=font)
      y += TEXT_LINES * LINE_H + 2 * PAD
  return canvas


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int, max_lines: int) -> list[str]:
  """Greedy wrap by characters (no word breaks needed: tokens are shown as they are),
  the last line ending in … when text is left over."""
  text = " ".join(text.split())  # newlines of chats: one flowing paragraph
  lines, at = [], 0
  while at < len(text) and len(lines) < max_lines:
    lo, hi = at + 1, len(text)  # the longest prefix that fits: binary search
    while lo < hi:
      mid = (lo + hi + 1) // 2
      if font.getlength(text[at:mid]) <= width:
        lo = mid
      else:
        hi = mid - 1
    lines.append(text[at:lo])
    at = lo
  if at < len(text) and lines:
    last = lines[-1]
    while last and font.getlength(last + "…") > width:
      last = last[:-1]
    lines[-1] = last + "…"
  return lines


# ---------------------------------------------------------------------- the command


def run(
    config, samples: int = 3, out: str = "inspect.png", rows: int = 8
) -> tuple[str, list[dict[str, Any]]]:
  """Prints the samples report and writes the picture of a config (a ConfigDict); returns
  the report and the batches drawn."""
  from dsvl_jax.models.config import VLMConfig

  data = config.data.to_dict()
  if not data.get("tokenizer"):  # "" = train.init_from's files, as the trainer reads it
    init_from = (config.get("train") or {}).get("init_from", "")
    check(bool(init_from), "data.tokenizer", "'' means train.init_from's, but that is '' too")
    data["tokenizer"] = init_from
  cfg = DataConfig.from_dict(data)
  layout = TokenLayout.of(VLMConfig.from_dict(config.model))
  tokenizer = make_tokenizer(cfg.tokenizer, layout)
  text = report(cfg, layout, tokenizer, samples)
  print(text, flush=True)
  batches = first_batches(cfg, layout, rows)
  draw(batches, layout, tokenizer, rows).save(out)
  steps = ", ".join(f"step {b['step']} ({b['modality']})" for b in batches)
  print(f"wrote {out}: the first {rows} rows of {steps}")
  return text, batches


def _main(argv):
  from absl import app, flags

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/tiny.py")
  loaded_or_exit(config, "data")  # a config file that failed to load: one line, exit 2
  try:
    if config.get("data") is None or config.get("model") is None:
      raise ConfigError("the config has no 'data' or 'model' section to inspect")
    run(config, _SAMPLES.value, _OUT.value, _ROWS.value)
  except (ConfigError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  from absl import app, flags

  # main.py's --config (file, overrides) and its one-line handling of flag mistakes.
  from dsvl_jax.main import parse_flags

  _SAMPLES = flags.DEFINE_integer("samples", 3, "Samples rendered per source.", lower_bound=0)
  _ROWS = flags.DEFINE_integer("rows", 8, "Rows of each first batch drawn.", lower_bound=1)
  _OUT = flags.DEFINE_string("out", "inspect.png", "Where the picture is written (PNG).")
  app.run(_main, flags_parser=parse_flags)

"""Any source the pipeline reads -> our record schema on disk (jsonl or ArrayRecord).

  python -m dsvl_jax.data.convert_dataset --format=FORMAT [--image_folder=DIR]
      [--messages_column=C] [--text_column=C] [--images_column=C] [--min_similarity=X]
      [--modality=all|multimodal|text] [--shards N] [--strict]
      SRC [SRC ...] DST.jsonl|DST.array_record

FORMAT: llava, parquet, webdataset, mmc4, image_folder (BUILD.md "Training on your data"),
or jsonl / array_record (our own schema, e.g. ArrayRecord back to a jsonl to read it). SRC
are what the source's `paths` would be; the options are its SourceConfig fields. Records
come from the very reader training uses (`pipeline.open_source`), so a converted file
trains exactly as the original source would.

DST.jsonl: one record per line. Images stored as bytes (parquet, webdataset; PIL images of
in-memory sources) are written to the folder `<DST stem>_images/` beside DST, named by the
record's line (0-based) and position (`00000012_1.jpg`), extension from the format PIL
detects, bytes exactly as given (PIL images: lossless PNG). Images given as paths stay
where they are: a path inside DST's folder is written relative to DST (the jsonl still
works when that folder moves as a whole), any other stays absolute.

DST.array_record: one frame per record (`sources.frame_record`, image bytes inside, as
`to_array_record`, a jsonl-only front to this, has always written them: one record a
group (`group_size:1`, each addressable for global shuffling), shards OUT-0000k-of-0000N).

--modality: what a source of that modality reads (`SourceConfig.modality`): `multimodal`
or `text` (records of the other kind that a reader returns anyway are reported as left
out, not as bad). `all` (the default): every record once. Files of llava, parquet and
webdataset hold both kinds, so they are read as a text source, then as a multimodal one
(text-only records first); image_folder has images only, and mmc4's text source is the
same documents without their images, so those are read as multimodal (use
--modality=text for mmc4's plain-text view); jsonl and array_record are read once.

A record that cannot convert (malformed, a missing image file, image bytes PIL does not
recognise, a reader's own reasons) is counted by reason and left out, or stops the
conversion with --strict; outputs are written under a temporary name and appear only
when complete (an images folder keeps the files written before a stop). Image contents
are not decoded (headers only): the training pipeline catches and counts a corrupt image
as it does for any source. The summary line reports the counts; exit status 2 for bad
arguments, 1 when --strict stopped.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import json
import logging
import os
import pathlib
import sys
from typing import Any, Iterator, Sequence

from PIL import Image

from dsvl_jax.data.config import FORMATS, SourceConfig
from dsvl_jax.data.formats.common import FormatError
from dsvl_jax.data.mixing import MULTIMODAL, TEXT
from dsvl_jax.data.skip_log import SkipLog
from dsvl_jax.data.sources import Record, RecordError, Source, frame_record, parse_record
from dsvl_jax.processor.image_processor import IMAGE_FORMATS
from dsvl_jax.processor.tokenizer import IMAGE_TOKEN

ALL = "all"
MODALITIES = (ALL, MULTIMODAL, TEXT)
INPUT_TYPES = (*FORMATS, "jsonl", "array_record")
SUFFIXES = (".jsonl", ".array_record")
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
PARTIAL = ".partial"  # outputs are renamed from <name>.partial when complete
# Formats whose files hold image and text-only records, a text source reading the latter:
# `--modality=all` reads these twice. image_folder has images only, and mmc4's text source
# reads the same documents without their images, so `all` reads those as multimodal.
MIXED_FORMATS = ("llava", "parquet", "webdataset")


def images_dir(output: str | os.PathLike) -> pathlib.Path:
  """Where a jsonl output's byte images go: `<DST stem>_images/` beside it."""
  out = pathlib.Path(output)
  return out.with_name(f"{out.stem}_images")


def open_passes(
    src: SourceConfig, modality: str = ALL, image_size: int = 384
) -> list[tuple[Source, str | None]]:
  """The sources to read, in order, and the modality each pass keeps (None: every record).

  A format reader reads its source's modality (`src.modality` is replaced by `modality`);
  `all` reads the formats of MIXED_FORMATS as a text source, then as a multimodal one,
  and the others as a multimodal source. jsonl, array_record and synthetic sources hold
  both kinds and are read once."""
  from dsvl_jax.data.pipeline import open_source  # grain: only when a config is converted

  if modality not in MODALITIES:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
  if src.type not in FORMATS:
    return [(open_source(src, image_size), None if modality == ALL else modality)]
  if modality != ALL:
    return [(open_source(dataclasses.replace(src, modality=modality), image_size), modality)]
  if src.type not in MIXED_FORMATS:
    return [(open_source(dataclasses.replace(src, modality=MULTIMODAL), image_size), None)]
  return [
      (open_source(dataclasses.replace(src, modality=m), image_size), m) for m in (TEXT, MULTIMODAL)
  ]


@dataclasses.dataclass
class _Image:
  """One image of a record, ready to write: `path` (kept as a reference) or `data`."""

  path: str | None
  data: bytes | None
  ext: str = ""


def _check_placeholders(record: Record) -> None:
  texts = [record.text] if record.text is not None else [m["content"] for m in record.messages]
  n = sum(t.count(IMAGE_TOKEN) for t in texts)
  if n != len(record.images):
    raise FormatError("malformed", f"{n} image placeholder(s) but {len(record.images)} image(s)")


def _image(ref: Any, k: int, read_paths: bool) -> _Image:
  """Checks one image reference (a file that exists, bytes PIL recognises) without
  decoding it; reads a file's bytes when the output embeds them."""
  if isinstance(ref, str):
    if not read_paths:
      if not os.path.isfile(ref):
        raise FormatError("missing_image", f"image {k}: no file {ref!r}")
      return _Image(ref, None)
    try:
      return _Image(None, pathlib.Path(ref).read_bytes())
    except OSError as e:
      raise FormatError("missing_image", f"image {k}: {ref!r}: {e.strerror or e}") from e
  if isinstance(ref, Image.Image):
    buf = io.BytesIO()
    ref.save(buf, "PNG")  # lossless: the pipeline decodes the same pixels
    return _Image(None, buf.getvalue(), "png")
  try:
    with Image.open(io.BytesIO(ref), formats=list(IMAGE_FORMATS)) as img:
      fmt = img.format
  except Exception as e:  # pylint: disable=broad-exception-caught  # any decoder failure
    raise FormatError(
        "bad_image", f"image {k}: {len(ref)} bytes that are no {'/'.join(IMAGE_FORMATS)} file"
    ) from e
  return _Image(None, ref, EXTENSIONS.get(fmt, str(fmt).lower()))


def _header(record: Record) -> dict[str, Any]:
  d: dict[str, Any] = {"kind": record.kind} if record.kind else {}
  if record.text is not None:
    d["text"] = record.text
  else:
    d["messages"] = [dict(m) for m in record.messages]
  return d


class _JsonlWriter:

  def __init__(self, output: pathlib.Path):
    self.output, self.images = output, images_dir(output)
    self.base = pathlib.Path(os.path.abspath(output)).parent
    self.partial = output.with_name(output.name + PARTIAL)
    self.file = open(self.partial, "w", encoding="utf-8")

  def write(self, index: int, record: Record, images: list[_Image]) -> None:
    refs = []
    for k, im in enumerate(images):
      if im.path is not None:
        path = pathlib.Path(os.path.abspath(im.path))
        refs.append(
            path.relative_to(self.base).as_posix() if path.is_relative_to(self.base) else str(path)
        )
        continue
      self.images.mkdir(parents=True, exist_ok=True)
      name = f"{index:08d}_{k}.{im.ext}"
      (self.images / name).write_bytes(im.data)
      refs.append(f"{self.images.name}/{name}")
    d = _header(record)
    if refs:
      d["images"] = refs
    self.file.write(json.dumps(d, ensure_ascii=False) + "\n")

  def close(self, complete: bool) -> None:
    self.file.close()
    if complete:
      os.replace(self.partial, self.output)
    else:
      self.partial.unlink(missing_ok=True)


WRITER_OPTIONS = "group_size:1"  # every record addressable on its own (global shuffling)


def shard_paths(output: str | os.PathLike, shards: int) -> list[pathlib.Path]:
  """OUT.array_record, or OUT-0000k-of-0000N.array_record for N > 1 shards."""
  out = pathlib.Path(output)
  if shards == 1:
    return [out]
  stem, suffix = out.name.removesuffix(".array_record"), ".array_record"
  return [out.with_name(f"{stem}-{i:05d}-of-{shards:05d}{suffix}") for i in range(shards)]


class _ArrayRecordWriter:

  def __init__(self, output: pathlib.Path, shards: int):
    from array_record.python.array_record_module import ArrayRecordWriter

    self.paths = shard_paths(output, shards)
    self.partials = [p.with_name(p.name + PARTIAL) for p in self.paths]
    self.writers = [ArrayRecordWriter(str(p), WRITER_OPTIONS) for p in self.partials]

  def write(self, index: int, record: Record, images: list[_Image]) -> None:
    payload = frame_record(_header(record), [im.data for im in images])
    self.writers[index % len(self.writers)].write(payload)

  def close(self, complete: bool) -> None:
    for w in self.writers:
      w.close()
    for partial, path in zip(self.partials, self.paths):
      if complete:
        os.replace(partial, path)
      else:
        partial.unlink(missing_ok=True)


def _records(
    passes: Sequence[tuple[Source, str | None]],
    counts: collections.Counter,
    strict: bool,
    read_paths: bool,
) -> Iterator[tuple[Record, list[_Image]]]:
  """The convertible records of every pass, counting the rest.

  With several passes (`all`), a record that an earlier pass converted or counted as bad
  is passed over when a later one meets it again (by `describe`, which names a record by
  file and place): a parquet reader returns every row to both passes, a webdataset one
  calls a text-only key "missing_member" in a multimodal source."""
  log = SkipLog()
  done: set[str] | None = set() if len(passes) > 1 else None
  for p, (source, keep) in enumerate(passes):
    remember = done is not None and p < len(passes) - 1
    for i in range(len(source)):
      where = source.describe(i)
      if done and where in done:
        continue
      try:
        record = parse_record(source[i], source.base_dir)
        if keep is not None and bool(record.images) != (keep == MULTIMODAL):
          if done is None:  # with a pass per modality, the other pass writes it
            counts["other_modality"] += 1
          continue
        _check_placeholders(record)
        images = [_image(ref, k, read_paths) for k, ref in enumerate(record.images)]
      except RecordError as e:
        reason = getattr(e, "reason", "malformed")
        msg = f"record {i}" + (f" ({where})" if where else "") + f": {reason}: {e}"
        if strict:
          raise RecordError(msg + " (--strict)") from e
        log.warn(reason, msg)
        counts["skipped"] += 1
        counts[f"skipped/{reason}"] += 1
        if remember and where:
          done.add(where)
        continue
      if remember and where:
        done.add(where)
      yield record, images


def convert(
    src: SourceConfig | Source,
    output: str | os.PathLike,
    *,
    modality: str = ALL,
    shards: int = 1,
    strict: bool = False,
    image_size: int = 384,
) -> dict[str, int]:
  """Writes `output` (.jsonl or .array_record) from a configured source, or from an open
  `Source` (e.g. an InMemorySource). Returns counts: written, images, written/<modality>,
  skipped, skipped/<reason>, other_modality. image_size: a synthetic source's drawings."""
  if isinstance(src, SourceConfig):
    passes = open_passes(src, modality, image_size)
  elif modality in MODALITIES:
    passes = [(src, None if modality == ALL else modality)]
  else:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
  return convert_passes(passes, output, shards=shards, strict=strict)


def convert_passes(
    passes: Sequence[tuple[Source, str | None]],
    output: str | os.PathLike,
    *,
    shards: int = 1,
    strict: bool = False,
) -> dict[str, int]:
  """`convert` of opened sources (`open_passes`)."""
  out = pathlib.Path(output)
  if out.suffix not in SUFFIXES:
    raise ValueError(f"the output must end in {' or '.join(SUFFIXES)}, got {out.name!r}")
  if shards < 1 or (shards > 1 and out.suffix != ".array_record"):
    raise ValueError(f"shards must be >= 1 (and 1 for a jsonl output), got {shards}")
  out.parent.mkdir(parents=True, exist_ok=True)
  embed = out.suffix == ".array_record"
  writer = _ArrayRecordWriter(out, shards) if embed else _JsonlWriter(out)
  counts: collections.Counter = collections.Counter(written=0, skipped=0)
  complete = False
  try:
    for record, images in _records(passes, counts, strict, read_paths=embed):
      writer.write(counts["written"], record, images)
      counts["written"] += 1
      counts["images"] += len(images)
      counts[f"written/{MULTIMODAL if images else TEXT}"] += 1
    complete = True
  finally:
    writer.close(complete)
  return dict(counts)


def summary(counts: dict[str, int], output: str | os.PathLike, shards: int = 1) -> str:
  """The one-line report of a conversion."""
  out = pathlib.Path(output)
  where = (
      ", ".join(map(str, shard_paths(out, shards)))
      if out.suffix == ".array_record"
      else str(out) + (f" and {images_dir(out)}/" if images_dir(out).is_dir() else "")
  )
  line = (
      f"wrote {counts['written']} records ({counts.get(f'written/{MULTIMODAL}', 0)} "
      f"multimodal, {counts.get(f'written/{TEXT}', 0)} text; {counts.get('images', 0)} image(s)) "
      f"to {where}; skipped {counts['skipped']}"
  )
  reasons = sorted((k.split("/", 1)[1], v) for k, v in counts.items() if k.startswith("skipped/"))
  if reasons:
    line += " (" + ", ".join(f"{r} {n}" for r, n in reasons) + ")"
  if counts.get("other_modality"):
    line += f"; left out {counts['other_modality']} of the other modality"
  return line


class _Parser(argparse.ArgumentParser):
  """argparse, with a usage mistake as one line (and exit status 2)."""

  def error(self, message: str):
    self.exit(2, f"error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
  from dsvl_jax.config.schema import ConfigError

  parser = _Parser(
      prog="python -m dsvl_jax.data.convert_dataset",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--format", required=True, choices=INPUT_TYPES, help="the source's type")
  d = SourceConfig()
  parser.add_argument("--image_folder", default=d.image_folder, help="llava, mmc4: image root")
  parser.add_argument("--messages_column", default=d.messages_column, help="parquet")
  parser.add_argument("--text_column", default=d.text_column, help="parquet")
  parser.add_argument("--images_column", default=d.images_column, help="parquet")
  parser.add_argument("--min_similarity", type=float, default=d.min_similarity, help="mmc4")
  parser.add_argument("--modality", choices=MODALITIES, default=ALL, help="records to keep")
  parser.add_argument("--shards", type=int, default=1, help="ArrayRecord output files")
  parser.add_argument("--strict", action="store_true", help="stop at the first bad record")
  parser.add_argument("paths", nargs="+", metavar="SRC... DST", help="source paths, then output")
  args = parser.parse_args(argv)
  if len(args.paths) < 2:
    parser.error("give the source path(s) and then the output path")
  *inputs, output = args.paths
  if pathlib.Path(output).suffix not in SUFFIXES:
    parser.error(f"the output must end in {' or '.join(SUFFIXES)}, got {output!r}")
  if args.shards < 1 or (args.shards > 1 and not output.endswith(".array_record")):
    parser.error(f"--shards must be >= 1 (and 1 for a jsonl output), got {args.shards}")
  if any(os.path.abspath(p) == os.path.abspath(output) for p in inputs):
    parser.error(f"the output {output!r} is also a source")
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  try:
    src = SourceConfig(
        type=args.format,
        paths=tuple(inputs),
        image_folder=args.image_folder,
        messages_column=args.messages_column,
        text_column=args.text_column,
        images_column=args.images_column,
        min_similarity=args.min_similarity,
    ).validate("source")
    passes = open_passes(src, args.modality)
  except ModuleNotFoundError as e:
    parser.error(f"no reader for --format={args.format} ({e})")
  except (ConfigError, FileNotFoundError, ValueError) as e:
    parser.error(str(e))
  try:
    counts = convert_passes(passes, output, shards=args.shards, strict=args.strict)
  except RecordError as e:  # --strict
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(summary(counts, output, args.shards))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""jsonl manifest (images on disk) -> ArrayRecord files (images inside), for large data.

  python -m dsvl_jax.data.to_array_record MANIFEST.jsonl OUT.array_record [--shards N]
      [--strict]

Each record becomes one payload (`sources.frame_record`): its JSON without the image
paths, then the image files' bytes exactly as on disk (no re-encoding: nothing is lost,
the pipeline decodes them as it would the files). `group_size:1` keeps every record
individually addressable, which global shuffling needs. With --shards N > 1 the output is
OUT-00000-of-0000N.array_record etc., records dealt round-robin.

A record that does not parse or whose image file is missing is counted, logged and left
out (or stops the conversion with --strict); the summary line reports the counts.
Image *contents* are not decoded here: a corrupt file is caught, counted and skipped by
the training pipeline like any other bad image.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from typing import Sequence

from dsvl_jax.data.sources import JsonlSource, RecordError, frame_record, parse_record

WRITER_OPTIONS = "group_size:1"


def shard_paths(output: str | pathlib.Path, shards: int) -> list[pathlib.Path]:
  out = pathlib.Path(output)
  if shards == 1:
    return [out]
  stem, suffix = out.name.removesuffix(".array_record"), ".array_record"
  return [out.with_name(f"{stem}-{i:05d}-of-{shards:05d}{suffix}") for i in range(shards)]


def convert(
    manifest: str | pathlib.Path, output: str | pathlib.Path, shards: int = 1, strict: bool = False
) -> dict[str, int]:
  """Writes the ArrayRecord file(s); returns {"written": n, "skipped": m}."""
  from array_record.python.array_record_module import ArrayRecordWriter

  if shards < 1:
    raise ValueError(f"shards must be >= 1, got {shards}")
  src = JsonlSource(manifest)
  paths = shard_paths(output, shards)
  for p in paths:
    p.parent.mkdir(parents=True, exist_ok=True)
  writers = [ArrayRecordWriter(str(p), WRITER_OPTIONS) for p in paths]
  counts = {"written": 0, "skipped": 0}
  try:
    for i in range(len(src)):
      raw = src[i]
      try:
        record = parse_record(raw, src.base_dir)
        images = []
        for ref in record.images:
          try:
            images.append(pathlib.Path(ref).read_bytes())
          except OSError as e:
            raise RecordError(f"image file {ref!r}: {e.strerror or e}") from e
      except RecordError as e:
        msg = f"{src.describe(i)}: {e}"
        if strict:
          raise RecordError(msg + " (--strict)") from e
        logging.warning("skipped %s", msg)
        counts["skipped"] += 1
        continue
      header = {"kind": record.kind}
      if record.text is not None:
        header["text"] = record.text
      else:
        header["messages"] = list(record.messages)
      writers[counts["written"] % shards].write(frame_record(header, images))
      counts["written"] += 1
  finally:
    for w in writers:
      w.close()
  return counts


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m dsvl_jax.data.to_array_record",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("manifest", help="jsonl manifest (image paths relative to it)")
  parser.add_argument("output", help="output .array_record path")
  parser.add_argument("--shards", type=int, default=1, help="number of output files")
  parser.add_argument("--strict", action="store_true", help="fail on the first bad record")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  counts = convert(args.manifest, args.output, args.shards, args.strict)
  files = ", ".join(str(p) for p in shard_paths(args.output, args.shards))
  print(f"wrote {counts['written']} records to {files}; skipped {counts['skipped']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""jsonl manifest (images on disk) -> ArrayRecord files (images inside), for large data.

  python -m dsvl_jax.data.to_array_record MANIFEST.jsonl OUT.array_record [--shards N]
      [--strict]

Each record becomes one payload (`sources.frame_record`): its JSON without the image
paths, then the image files' bytes exactly as on disk (no re-encoding: nothing is lost,
the pipeline decodes them as it would the files). `group_size:1` keeps every record
individually addressable, which global shuffling needs. With --shards N > 1 the output is
OUT-00000-of-0000N.array_record etc., records dealt round-robin.

A record that does not parse or whose image file is missing is counted, logged and left
out (or stops the conversion with --strict); the summary line reports the counts. This is
`convert_dataset` for a jsonl manifest (`--format=jsonl`, which also counts by reason).
Image *contents* are not decoded here: a corrupt file is caught, counted and skipped by
the training pipeline like any other bad image.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys
from typing import Sequence

from dsvl_jax.data.config import SourceConfig
from dsvl_jax.data.convert_dataset import convert as convert_source
from dsvl_jax.data.convert_dataset import shard_paths


def convert(
    manifest: str | pathlib.Path, output: str | pathlib.Path, shards: int = 1, strict: bool = False
) -> dict[str, int]:
  """Writes the ArrayRecord file(s); returns {"written": n, "skipped": m} (by reason:
  `convert_dataset.convert`, which this is for a jsonl manifest)."""
  if shards < 1:
    raise ValueError(f"shards must be >= 1, got {shards}")
  source = SourceConfig(type="jsonl", paths=(str(manifest),))
  counts = convert_source(source, output, shards=shards, strict=strict)
  return {"written": counts["written"], "skipped": counts["skipped"]}


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

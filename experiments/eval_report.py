"""Summary JSONs of benchmark runs -> one markdown table laid out like the paper's
Table 5 (benchmarks as columns, models as rows), the published numbers beside ours.

  python experiments/eval_report.py --run "ours 7B chat=out/eval-7b" \
      --run "ours 1.3B chat=out/eval-1.3b" [--out report.md]

A run is "label=WORKDIR" of `--config.mode=eval`; each WORKDIR/<set>.summary.json is
matched to a column by its benchmark ("benchmark" field) and, for POPE and MMBench,
its headline metric. Published: the DeepSeek-VL paper (arXiv 2403.05525), chat models.
"""

from __future__ import annotations

import argparse
import json
import pathlib

# column -> (benchmark, metric in the summary, scale to the paper's unit)
COLUMNS = {
    "MMB": ("mmbench", "circular_accuracy", 100.0),
    "SEED": ("seedbench", "accuracy", 100.0),
    "POPE": ("pope", "f1", 100.0),
    "MMMU": ("mmmu", "accuracy", 100.0),
    "OCRBench": ("ocrbench", "score", 1.0),
    "ScienceQA-IMG": ("scienceqa", "accuracy", 100.0),
}
PUBLISHED = {  # paper section 4 (Table 5): chat models
    "DeepSeek-VL-7B-chat (paper)": {
        "MMB": 73.2,
        "SEED": 70.4,
        "POPE": 88.1,
        "MMMU": 36.6,
        "OCRBench": 456,
    },
    "DeepSeek-VL-1.3B-chat (paper)": {
        "MMB": 64.6,
        "SEED": 66.7,
        "POPE": 87.6,
        "MMMU": 32.2,
        "OCRBench": 409,
    },
}


def read_run(workdir: pathlib.Path) -> dict[str, float]:
  """{column: value} of the summaries in a workdir (the first of each benchmark)."""
  out: dict[str, float] = {}
  for path in sorted(workdir.glob("*.summary.json")):
    summary = json.loads(path.read_text())
    for column, (bench, metric, scale) in COLUMNS.items():
      if summary.get("benchmark") == bench and metric in summary and column not in out:
        out[column] = summary[metric] * scale
  return out


def table(rows: dict[str, dict[str, float]]) -> str:
  columns = [c for c in COLUMNS if any(c in r for r in rows.values())]
  lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
  for label, values in rows.items():
    cells = [
        ("-" if c not in values else f"{values[c]:.0f}" if c == "OCRBench" else f"{values[c]:.1f}")
        for c in columns
    ]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--run", action="append", default=[], help="label=WORKDIR (repeatable)")
  ap.add_argument("--out", default="", help="also write the table to this file")
  ap.add_argument("--no-published", action="store_true", help="omit the paper's rows")
  args = ap.parse_args()
  rows = {} if args.no_published else dict(PUBLISHED)
  for spec in args.run:
    label, sep, workdir = spec.partition("=")
    if not sep:
      ap.error(f"--run {spec!r}: expected label=WORKDIR")
    rows[label] = read_run(pathlib.Path(workdir))
  text = table(rows)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()

"""Summary JSONs of benchmark runs -> one markdown table laid out like the paper's
Table 5 (benchmarks as columns, models as rows), the published numbers beside ours.

  python experiments/eval_report.py --run "ours 7B chat=out/eval-7b" \
      --run "ours 1.3B chat=out/eval-1.3b" [--out report.md]

A run is "label=WORKDIR" of `--config.mode=eval`; each WORKDIR/<set>.summary.json is
matched to a column by its benchmark ("benchmark" field) and, for MMBench, its language
(MMB or MMB-CN). Published: the DeepSeek-VL paper (arXiv 2403.05525), chat models.
"""

from __future__ import annotations

import argparse
import json
import pathlib

# column -> (benchmark, metric in the summary, scale to the paper's unit, language or
# None): Table 5's columns in its order (MMB and MMB-CN: MMBench dev, English and
# Chinese), then ScienceQA-IMG, which the paper does not report.
COLUMNS = {
    "MMMU": ("mmmu", "accuracy", 100.0, None),
    "CMMMU": ("cmmmu", "accuracy", 100.0, None),
    "MMB": ("mmbench", "circular_accuracy", 100.0, "en"),
    "MMB-CN": ("mmbench", "circular_accuracy", 100.0, "zh"),
    "SEED": ("seedbench", "accuracy", 100.0, None),
    "OCRBench": ("ocrbench", "score", 1.0, None),
    "POPE": ("pope", "f1", 100.0, None),
    "MathVista": ("mathvista", "accuracy", 100.0, None),
    "MM-Vet": ("mmvet", "total", 1.0, None),
    "ScienceQA-IMG": ("scienceqa", "accuracy", 100.0, None),
}
# The paper's Table 5 (chat models), as ../shared/paper.md transcribes it.
PUBLISHED = {
    "DeepSeek-VL-7B-chat (paper)": dict(
        zip(COLUMNS, (36.6, 37.9, 73.2, 72.8, 70.4, 456, 88.1, 36.1, 41.5))
    ),
    "DeepSeek-VL-1.3B-chat (paper)": dict(
        zip(COLUMNS, (32.2, 27.4, 64.6, 61.3, 66.7, 409, 87.6, 31.1, 34.8))
    ),
}


def read_run(workdir: pathlib.Path) -> dict[str, float]:
  """{column: value} of the summaries in a workdir; two summaries for one column (two
  MMBench-EN runs, say) are refused rather than one picked by name."""
  out: dict[str, float] = {}
  source: dict[str, str] = {}
  for path in sorted(workdir.glob("*.summary.json")):
    summary = json.loads(path.read_text())
    for column, (bench, metric, scale, language) in COLUMNS.items():
      if summary.get("benchmark") != bench or metric not in summary:
        continue
      if language is not None and summary.get("language", "en") != language:
        continue
      if column in out:
        raise SystemExit(f"{workdir}: {source[column]} and {path.name} are both {column}; keep one")
      out[column], source[column] = summary[metric] * scale, path.name
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
    if not (sep and label and pathlib.Path(workdir).is_dir()):
      ap.error(f"--run {spec!r}: expected label=WORKDIR, an existing folder")
    rows[label] = read_run(pathlib.Path(workdir))
  text = table(rows)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()

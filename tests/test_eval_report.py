"""The Table 5 report (experiments/eval_report.py): every column of the paper's Table 5
in its order, MMBench and MMBench-CN each in its own (an audit found MMBench-CN's
summary taken for MMBench's by file name), the paper's rows beside ours."""

import json
import pathlib
import subprocess
import sys

import pytest

from dsvl_jax.eval.benchmarks import mmbench
from dsvl_jax.eval.benchmarks.base import BenchItem

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE5 = ["MMMU", "CMMMU", "MMB", "MMB-CN", "SEED", "OCRBench", "POPE", "MathVista", "MM-Vet"]


def _item(i, question):
  return BenchItem(id=str(i), question=question, options=("x", "y"), answer="A", group=str(i))


def test_mmbench_summaries_say_their_language():
  english = [_item(i, "What colour is the boat?") for i in range(3)]
  chinese = [_item(i, "图中的船是什么颜色？") for i in range(3)]
  assert mmbench.score(english, ["A"] * 3)["language"] == "en"
  assert mmbench.score(chinese, ["A", None, "B"])["language"] == "zh"


def _summary(folder, name, **fields):
  (folder / f"{name}.summary.json").write_text(json.dumps(fields))


def _report(*args):
  out = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "eval_report.py"), *args],
      capture_output=True,
      text=True,
      check=False,
  )
  return out.returncode, out.stdout, out.stderr


def test_the_report_has_every_table5_column_and_the_papers_rows(tmp_path):
  run = tmp_path / "ours"
  run.mkdir()
  # sorted by name, mmbench_cn comes first: it must not become the MMB column
  _summary(run, "mmbench_cn", benchmark="mmbench", language="zh", circular_accuracy=1 / 3)
  _summary(run, "mmbench_en", benchmark="mmbench", language="en", circular_accuracy=4 / 7)
  _summary(run, "pope_random", benchmark="pope", f1=0.5)
  code, out, err = _report("--run", f"ours={run}")
  assert code == 0, err
  header, _, *rows = out.strip().splitlines()
  columns = header.strip("| ").split(" | ")[1:]
  assert columns == TABLE5  # ScienceQA-IMG only when a run has it
  cells = {row.split(" | ")[0].lstrip("| "): row.strip("| ").split(" | ")[1:] for row in rows}
  ours = dict(zip(columns, cells["ours"]))
  assert ours["MMB"] == "57.1" and ours["MMB-CN"] == "33.3" and ours["POPE"] == "50.0"
  assert ours["CMMMU"] == "-"
  paper_7b = dict(zip(columns, cells["DeepSeek-VL-7B-chat (paper)"]))
  paper_13b = dict(zip(columns, cells["DeepSeek-VL-1.3B-chat (paper)"]))
  assert [paper_7b[c] for c in TABLE5] == "36.6 37.9 73.2 72.8 70.4 456 88.1 36.1 41.5".split()
  assert [paper_13b[c] for c in TABLE5] == "32.2 27.4 64.6 61.3 66.7 409 87.6 31.1 34.8".split()


def test_two_summaries_for_one_column_are_refused(tmp_path):
  _summary(tmp_path, "a", benchmark="mmbench", language="en", circular_accuracy=0.5)
  _summary(tmp_path, "b", benchmark="mmbench", circular_accuracy=0.6)  # older: no language
  code, _, err = _report("--run", f"ours={tmp_path}")
  assert code != 0 and "a.summary.json and b.summary.json are both MMB" in err


@pytest.mark.parametrize("bad", ["ours", "=x", "ours=/nonexistent/run"])
def test_a_run_without_a_folder_is_a_usage_error(bad):
  code, _, err = _report("--run", bad)
  assert code == 2 and "label=WORKDIR" in err


def test_each_columns_metric_is_what_its_benchmark_reports(tmp_path):
  """Summaries made by the benchmark modules themselves (scores of answers planted on
  the release-layout fixtures) fill every column they belong to: the report reads the
  metric keys the modules write, not names of its own."""
  import importlib

  from benchmark_fixtures import NAMES
  from benchmark_fixtures import mmvet as mmvet_fixture

  sys.path.insert(0, str(ROOT / "experiments"))
  import eval_report  # pylint: disable=g-import-not-at-top

  run = tmp_path / "ours"
  run.mkdir()
  built = {n: importlib.import_module(f"benchmark_fixtures.{n}").build(tmp_path / n) for n in NAMES}
  built["mmvet"] = mmvet_fixture.build(tmp_path / "mmvet")
  expected = {}
  for column, (bench, metric, scale, _) in eval_report.COLUMNS.items():
    if bench not in built or column == "MMB-CN":
      continue
    module = importlib.import_module(f"dsvl_jax.eval.benchmarks.{bench}")
    items = module.load(built[bench])
    parsed = [module.parse(it, "yes") for it in items]  # what the rule makes of "yes"
    if bench == "mmvet":
      parsed = [0.5] * len(items)  # a judged score
    summary = {"benchmark": bench, **module.score(items, parsed)}
    (run / f"{bench}.summary.json").write_text(json.dumps(summary))
    expected[column] = summary[metric] * scale
  assert set(expected) == set(TABLE5) - {"MMB-CN"} | {"ScienceQA-IMG"}
  code, out, err = _report("--run", f"ours={run}", "--no-published")
  assert code == 0, err
  header, _, row = out.strip().splitlines()
  cells = dict(zip(header.strip("| ").split(" | ")[1:], row.strip("| ").split(" | ")[1:]))
  for column, value in expected.items():
    assert cells[column] == (f"{value:.0f}" if column == "OCRBench" else f"{value:.1f}"), column
  assert cells["MM-Vet"] == "50.0"

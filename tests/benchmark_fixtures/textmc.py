"""The `textmc` fixture: a tiny MMLU CSV release (mmlu.py's rows, the layout of hendrycks/test
data.tar) with 3 test questions, abstract_algebra's first two and world_religions' first,
each subject with its 5 dev rows. `build` returns the data folder."""

from __future__ import annotations

import pathlib

from benchmark_fixtures import mmlu


def build(root: pathlib.Path) -> pathlib.Path:
  subjects = {
      name: {**splits, "test": splits["test"][:n]}
      for (name, splits), n in zip(mmlu.SUBJECTS.items(), (2, 1))
  }
  return mmlu.write(root, subjects)

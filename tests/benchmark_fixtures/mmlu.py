"""A tiny MMLU release in the layout of hendrycks/test's data.tar (README.md, evaluate.py
@4450500): `<root>/data/{dev,val,test}/<subject>_<split>.csv`, no header row, six
columns per row: question, A, B, C, D, answer letter.

Two subjects, 5 dev rows (the few-shot pool), 2 val rows and 3 test rows each. Cells that
pandas' `read_csv` (which the official evaluate.py uses) would rewrite: abstract_algebra's
option columns are numbers ("0.5" in column D's test file makes pandas print 6 as "6.0")
and an option "None" (pandas >= 2 reads it as NaN, printed "nan"); world_religions has a
question with commas and a quoted word (CSV quoting) and a question with a line break.
`build` returns the data folder (what `mmlu.load` and `textmc.load` take).
"""

from __future__ import annotations

import csv
import pathlib
from typing import Mapping, Sequence

Row = tuple[str, str, str, str, str, str]

SUBJECTS: dict[str, dict[str, list[Row]]] = {
    "abstract_algebra": {
        "dev": [
            ("Find the order of the element 2 in the additive group Z_5.", "1", "2", "4", "5", "D"),
            ("How many elements does the group Z_2 x Z_3 have?", "2", "3", "5", "6", "D"),
            ("What is the characteristic of the ring Z_7?", "0", "1", "7", "14", "C"),
            (
                "Statement 1 | Every cyclic group is abelian. Statement 2 | Every abelian "
                "group is cyclic.",
                "True, True",
                "False, False",
                "True, False",
                "False, True",
                "C",
            ),
            ("How many generators does the group Z_4 have?", "1", "2", "3", "4", "B"),
        ],
        "val": [
            ("What is the order of the group Z_8?", "2", "4", "8", "16", "C"),
            ("How many elements of Z_6 are units?", "1", "2", "3", "6", "B"),
        ],
        "test": [
            ("What is the order of the symmetric group S_3?", "3", "6", "9", "12", "B"),
            (
                "Find the degree of the field extension Q(sqrt(2)) over Q.",
                "0",
                "1",
                "2",
                "0.5",
                "C",
            ),
            ("Which of the following rings has a zero divisor?", "Z_5", "Z_6", "Z_7", "None", "B"),
        ],
    },
    "world_religions": {
        "dev": [
            ("In which city is the Kaaba located?", "Medina", "Mecca", "Jerusalem", "Cairo", "B"),
            (
                "Which religion has the Guru Granth Sahib as scripture?",
                "Sikhism",
                "Jainism",
                "Hinduism",
                "Buddhism",
                "A",
            ),
            ("How many noble truths does Buddhism teach?", "Two", "Three", "Four", "Five", "C"),
            ("What is the Jewish day of rest called?", "Diwali", "Shabbat", "Ramadan", "Lent", "B"),
            ("Which of these is a Hindu festival?", "Hanukkah", "Easter", "Eid", "Holi", "D"),
        ],
        "val": [
            ("Where was the Buddha born?", "Lumbini", "Rome", "Athens", "Kyoto", "A"),
            ("Which book opens the Hebrew Bible?", "Exodus", "Genesis", "Psalms", "Job", "B"),
        ],
        "test": [
            (
                'What does the word "Torah", most often, mean?',
                "Song",
                "Teaching",
                "King",
                "Law, or " "judgement",
                "B",
            ),
            (
                "Which religion, founded in Persia,\nteaches of Ahura Mazda?",
                "Zoroastrianism",
                "Shinto",
                "Taoism",
                "Bahai",
                "A",
            ),
            ("In Islam, how many pillars of faith are there?", "Three", "Four", "Five", "Six", "C"),
        ],
    },
}


def write(root: pathlib.Path, subjects: Mapping[str, Mapping[str, Sequence[Row]]]) -> pathlib.Path:
  """`subjects` (name -> split -> rows) as root/data/<split>/<name>_<split>.csv."""
  data = root / "data"
  for name, splits in subjects.items():
    for split, rows in splits.items():
      (data / split).mkdir(parents=True, exist_ok=True)
      with open(data / split / f"{name}_{split}.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
  return data


def build(root: pathlib.Path) -> pathlib.Path:
  return write(root, SUBJECTS)

"""pyproject.toml: installs every module, and reads the pins the requirement files set."""

import pathlib
import tomllib

import setuptools
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _lines(name: str) -> list[str]:
  """The lines setuptools' `file =` reads as requirements (blank and # lines dropped)."""
  lines = (ROOT / name).read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]


def test_every_module_folder_is_a_package():
  """find_packages skips a folder without __init__.py: its modules would not install."""
  include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
      "find"
  ]["include"]
  found = set(setuptools.find_packages(str(ROOT), include=include))
  folders = {
      str(p.parent.relative_to(ROOT)).replace("/", ".")
      for top in ("dsvl_jax", "convert")
      for p in (ROOT / top).rglob("*.py")
  }
  assert found == folders
  assert {"dsvl_jax", "dsvl_jax.data", "dsvl_jax.models", "convert"} <= found


def test_dependencies_are_the_requirement_files():
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())
  dynamic = project["tool"]["setuptools"]["dynamic"]
  assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
  for line in _lines("requirements.txt"):  # no pip options, no inline comments
    Requirement(line)
  extras = project["project"]["optional-dependencies"]
  test = [l for l in _lines("requirements-test.txt") if not l.startswith("-r ")]
  assert extras["test"] == test
  assert extras["serve"] == _lines("requirements-serve.txt")
  assert "-r requirements-serve.txt" in _lines("requirements-test.txt")

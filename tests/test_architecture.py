"""The shape of the house, read from the source (ast): which package may import which.

Every `import` and `from ... import` of dsvl_jax and convert counts, those inside
functions too (a deferred import is still a dependency). The rules (BUILD.md, "Layout"):
  - no cycle between modules, and none between packages;
  - models/ imports only configuration and sharding (and itself);
  - processor/ (text and images -> model inputs) imports nothing of data/, train/,
    infer/, serve/, eval/;
  - infer/, serve/, eval/ import nothing of the training pipeline (data/, train/);
  - the library never imports the conversion CLI (convert/ depends on dsvl_jax);
  - the top of dsvl_jax/ holds only __init__.py, __main__.py and main.py.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = "dsvl_jax"


def module_names(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
  out = {}
  for top in (LIBRARY, "convert"):
    for path in sorted((root / top).rglob("*.py")):
      parts = path.relative_to(root).with_suffix("").parts
      if parts[-1] == "__init__":
        parts = parts[:-1]
      out[".".join(parts)] = path
  return out


def imports(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
  """module -> the project modules it imports (a `from pkg import name` of a submodule
  counts as that submodule; of anything else, as pkg)."""
  modules = module_names(root)
  graph = {}
  for name, path in modules.items():
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package
          up = package.split(".")[: len(package.split(".")) - node.level + 1]
          base = ".".join(up + ([base] if base else []))
        targets = [
            f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
        ]
      else:
        continue
      for t in targets:
        while t and t not in modules:  # `import a.b.c` of a function's module: a.b
          t = t.rpartition(".")[0]
        if t and t != name:
          found.add(t)
    graph[name] = found
  return graph


def package_of(module: str) -> str:
  parts = module.split(".")
  return ".".join(parts[:2]) if parts[0] == LIBRARY and len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one node (Tarjan)."""
  index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def package_graph(graph):
  out = {}
  for a, targets in graph.items():
    out.setdefault(package_of(a), set()).update(
        package_of(b) for b in targets if package_of(b) != package_of(a)
    )
  return out


def violations(graph: dict[str, set[str]]) -> list[str]:
  """Each broken rule, as a line naming the import."""
  allowed_for_models = ("dsvl_jax.models", "dsvl_jax.config", "dsvl_jax.runtime.sharding")
  training = ("dsvl_jax.data", "dsvl_jax.train")
  rules = [  # (importer prefix, forbidden target prefixes, the rule)
      (
          "dsvl_jax.processor",
          ("dsvl_jax.data", "dsvl_jax.train", "dsvl_jax.infer", "dsvl_jax.serve", "dsvl_jax.eval"),
          "input processing imports no pipeline, training, inference or front end",
      ),
      ("dsvl_jax.infer", training, "inference imports nothing of training"),
      ("dsvl_jax.serve", training, "serving imports nothing of training"),
      ("dsvl_jax.eval", training, "evaluation imports nothing of training"),
      ("dsvl_jax", ("convert",), "the library does not import the conversion CLI"),
  ]
  out = []
  for a, targets in sorted(graph.items()):
    for b in sorted(targets):
      if _under(a, "dsvl_jax.models") and not _under(b, *allowed_for_models):
        out.append(f"{a} imports {b}: models import only configuration and sharding")
      for importer, forbidden, rule in rules:
        if _under(a, importer) and _under(b, *forbidden):
          out.append(f"{a} imports {b}: {rule}")
  out += [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
  out += [f"package cycle: {' <-> '.join(c)}" for c in cycles(package_graph(graph))]
  return out


def _under(module: str, *prefixes: str) -> bool:
  return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_tree_keeps_every_rule():
  assert violations(imports()) == []


def test_the_top_of_the_library_holds_only_the_entry_points():
  top = sorted(
      p.name
      for p in (ROOT / LIBRARY).iterdir()
      if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())
  )
  loose = [
      n for n in top if n.endswith(".py") and n not in ("__init__.py", "__main__.py", "main.py")
  ]
  assert loose == [], f"modules loose at the top of dsvl_jax/: {loose}"


@pytest.mark.parametrize(
    "module,target,says",
    [
        ("dsvl_jax.models.llm", "dsvl_jax.data.pipeline", "models import only"),
        ("dsvl_jax.processor.tokenizer", "dsvl_jax.train.trainer", "input processing"),
        ("dsvl_jax.serve.app", "dsvl_jax.data.encoding", "serving imports nothing"),
        ("dsvl_jax.eval.harness", "dsvl_jax.train.step", "evaluation imports nothing"),
        ("dsvl_jax.checkpoint.loading", "convert", "conversion CLI"),
        ("dsvl_jax.runtime.perf", "dsvl_jax.train.flops", "package cycle"),
        ("dsvl_jax.processor.image_processor", "dsvl_jax.processor.batching", "import cycle"),
    ],
)
def test_a_broken_rule_is_named(module, target, says):
  """The checker itself: one planted import breaks exactly the rule it should."""
  graph = imports()
  assert violations(graph) == []
  graph[module] = graph[module] | {target}
  if target == "dsvl_jax.processor.batching":  # and back: a two-module cycle
    graph[target] = graph[target] | {module}
  if target == "dsvl_jax.train.flops":  # train already imports runtime
    assert "dsvl_jax.runtime" in package_graph(graph)["dsvl_jax.train"]
  found = violations(graph)
  assert any(says in line for line in found), found


def test_the_public_surface_resolves_and_stays_light():
  """Every public name is the object its module defines; importing the package alone
  starts no JAX (config files import it)."""
  import importlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  import dsvl_jax  # pylint: disable=g-import-not-at-top

  for name, where in dsvl_jax._PUBLIC.items():
    module, attr = where.split(":")
    assert getattr(dsvl_jax, name) is getattr(importlib.import_module(module), attr), name
  assert set(dsvl_jax.__all__) == {"load", *dsvl_jax._PUBLIC}
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    _ = dsvl_jax.nope
  out = subprocess.run(
      [sys.executable, "-c", "import sys, dsvl_jax; print('jax' in sys.modules)"],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=True,
  )
  assert out.stdout.strip() == "False"

"""The package's import graph (docs/design.md, "Who imports whom"): no cycles, and evaluation
and the sampler never import the trainer or a command."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "infonoise_jax"
COMMANDS = {"main.py", "sample.py", "evaluate.py", "diagnose.py"}


def _node(path: pathlib.Path) -> str:
  """A top-level module ('train.py') or a whole subpackage ('evaluation/')."""
  head = path.relative_to(PACKAGE).parts[0]
  return head if head.endswith(".py") else head + "/"


def _target(dotted: str) -> str | None:
  parts = dotted.split(".")
  if parts[0] != "infonoise_jax" or len(parts) < 2:
    return None
  if (PACKAGE / parts[1]).is_dir():
    return parts[1] + "/"
  return parts[1] + ".py" if (PACKAGE / f"{parts[1]}.py").exists() else None


def import_graph() -> dict[str, set[str]]:
  edges: dict[str, set[str]] = {}
  for path in PACKAGE.rglob("*.py"):
    src = _node(path)
    for n in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(n, ast.Import):
        names = [a.name for a in n.names]
      elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
        names = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
      for dst in filter(None, map(_target, names)):
        if dst != src:
          edges.setdefault(src, set()).add(dst)
  return edges


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for nxt in edges.get(todo.pop(), ()):
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def test_the_import_graph_has_no_cycles():
  edges = import_graph()
  assert len(edges) > 10  # the walk found the package
  cycles = sorted(node for node in edges if node in _reachable(edges, node))
  assert not cycles, f"modules on an import cycle: {cycles}"


def test_evaluation_and_the_sampler_do_not_reach_the_trainer_or_a_command():
  edges = import_graph()
  for node in ("evaluation/", "model_sampler.py", "restore.py", "checkpointing.py", "steps.py"):
    reached = _reachable(edges, node)
    assert not reached & ({"train.py", "multirun.py"} | COMMANDS), (node, sorted(reached))

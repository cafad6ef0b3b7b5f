"""Measure the architecture targets of issue 19 on hoprank/ (stdlib ``ast`` only).

Usage: ``python scripts/arch_metrics.py [--root hoprank] [--verbose]``

Prints five numbers, one per line, then (with ``--verbose``) what makes each of them:

- ``getattr probes``: ``getattr(`` calls in hoprank/rankers, evals, server and agents;
- ``bad arrows``: imports between subpackages that go sideways or upward in the layer order below;
- ``package cycles``: strongly connected groups of two or more subpackages in the import graph;
- ``long functions``: functions whose body spans more than 60 lines;
- ``many parameters``: functions taking 10 or more parameters (``self``/``cls``, ``*args`` and
  ``**kwargs`` count, as in the issue's figures).

Every import counts, the lazy ones inside functions and those under ``TYPE_CHECKING`` too:
a lazy import is still a dependency, it only hides it from the import-time cycle check.

Layer order (a unit may import only from a lower floor; docs/architecture.md describes it):

====  =====================================================================
floor units
====  =====================================================================
0     errors, types, _version
1     _sync, _fsio (atomic writes, JSONL reading)
2     runs (ranked lists: TREC run files, fusion)
3     llm, prompts
4     tools
5     rankers
6     agents, train (LoRA distillation; neither imports the other)
7     evals
8     adapters
9     server
10    cli
11    the package root (hoprank/__init__.py) and __main__
====  =====================================================================

A unit is a subpackage (``hoprank/llm``) or a top-level module (``hoprank/types.py``).
Within one floor no unit may import another (that is a sideways arrow).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

FLOORS: dict[str, int] = {
    "errors": 0,
    "types": 0,
    "_version": 0,
    "_sync": 1,
    "_fsio": 1,
    "runs": 2,
    "llm": 3,
    "prompts": 3,
    "tools": 4,
    "rankers": 5,
    "agents": 6,
    "train": 6,
    "evals": 7,
    "adapters": 8,
    "server": 9,
    "cli": 10,
    "__init__": 11,
    "__main__": 11,
}
PROBE_PACKAGES = ("rankers", "evals", "server", "agents")
LONG_FUNCTION_LINES = 60
MANY_PARAMETERS = 10


def _files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _unit(root: Path, path: Path) -> str:
    """The layer unit a file belongs to: its subpackage, or its module name at the top."""
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _module_name(root: Path, path: Path) -> list[str]:
    rel = path.relative_to(root).with_suffix("")
    parts = [root.name, *rel.parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported_units(root: Path, path: Path, tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, unit) for every import of a hoprank module in ``tree``."""
    pkg = root.name
    here = _module_name(root, path)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
            else:
                base = []
            mod = [*base, *(node.module.split(".") if node.module else [])]
            # ``from hoprank import x``: x may be a submodule or a name of the root
            targets = [[pkg, alias.name] for alias in node.names] if mod == [pkg] else [mod]
        for target in targets:
            if not target or target[0] != pkg:
                continue
            if len(target) == 1:
                yield node.lineno, "__init__"
                continue
            sub = root / target[1]
            if sub.is_dir() or (root / f"{target[1]}.py").exists():
                yield node.lineno, target[1]
            else:
                yield node.lineno, "__init__"  # a name defined in hoprank/__init__.py


def _function_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    if a.vararg:
        names.append(a.vararg.arg)
    if a.kwarg:
        names.append(a.kwarg.arg)
    return len(names)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more nodes (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def measure(root: Path) -> dict[str, list[str]]:
    """Every finding, by target name; the count of a target is the length of its list."""
    probes: list[str] = []
    arrows: list[str] = []
    long_fns: list[str] = []
    many_params: list[str] = []
    edges: dict[str, set[str]] = {}
    for path in _files(root):
        rel = path.relative_to(root.parent)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        unit = _unit(root, path)
        for line, target in _imported_units(root, path, tree):
            if target == unit:
                continue
            edges.setdefault(unit, set()).add(target)
            src_floor, dst_floor = FLOORS.get(unit, 99), FLOORS.get(target, 99)
            if dst_floor >= src_floor:
                kind = "sideways" if dst_floor == src_floor else "upward"
                arrows.append(f"{rel}:{line} {unit} -> {target} ({kind})")
        for node in ast.walk(tree):
            if (
                unit in PROBE_PACKAGES
                and isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
            ):
                probes.append(f"{rel}:{node.lineno}")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                span = (node.end_lineno or node.lineno) - node.lineno + 1
                if span > LONG_FUNCTION_LINES:
                    long_fns.append(f"{rel}:{node.lineno} {node.name} ({span} lines)")
                n = _function_params(node)
                if n >= MANY_PARAMETERS:
                    many_params.append(f"{rel}:{node.lineno} {node.name} ({n} parameters)")
    cycles = [" <-> ".join(c) for c in _cycles(edges)]
    return {
        "getattr probes": probes,
        "bad arrows": arrows,
        "package cycles": cycles,
        "long functions": long_fns,
        "many parameters": many_params,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent / "hoprank"))
    parser.add_argument("--verbose", "-v", action="store_true", help="list what makes each number")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    unknown = sorted({_unit(root, p) for p in _files(root)} - set(FLOORS))
    if unknown:
        print(f"units without a floor (add them to FLOORS): {', '.join(unknown)}", file=sys.stderr)
        return 2
    results = measure(root)
    for name, items in results.items():
        print(f"{name}: {len(items)}")
    if args.verbose:
        for name, items in results.items():
            if items:
                print(f"\n## {name}")
                for item in items:
                    print(f"  {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

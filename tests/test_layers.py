"""The package's shape: imports point down the layers of shared/DESIGN.md, no two files import
each other (directly or round a circle), and the folders are the product's chapters.

The imports are read from the source (AST, every import statement, also those inside functions
and under TYPE_CHECKING), so an import hidden in a function to dodge a circle fails too.
`python tests/test_layers.py` prints every finding.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "modeconn"

# A unit is a top-level module or a subpackage. A file may import its own unit and units of a
# lower rank, never one of the same rank or above (siblings stay independent).
RANK = {
    "_messages": 0,
    "_version": 0,
    "models": 1,
    "data": 1,
    "curves": 2,
    "io": 3,
    "engine": 4,
    "training": 5,
    "path": 6,
    "plane": 6,
    "landscape": 7,
    "align": 7,
    "ensembles": 7,
    "trajectory": 8,
    "curvature": 8,
    "similarity": 8,
    "volumes": 8,  # simplexes and complexes: trained by `fit`, scored against ensembles and FGE
    "lmc": 8,  # linear mode connectivity: spawning, stability (Frankle et al. 2020)
    "plotting": 9,
    "apps": 10,
    "__init__": 11,  # modeconn/__init__: re-exports the API
}
MAX_TOP_LEVEL_FILES = 8


def module_name(path: Path) -> str:
    parts = ("modeconn", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The modeconn modules a file imports (for `from a.b import c`, a.b.c when it is a
    module, else a.b)."""
    found: set[str] = set()
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "modeconn")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "modeconn":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    found.discard(me)
    return {m for m in found if m in known or m.startswith("modeconn.conf")}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m in imported(p, known) if m in known} for name, p in known.items()}


def upward_imports() -> list[str]:
    bad = []
    for source, targets in graph().items():
        for target in sorted(targets):
            a, b = unit_of(source), unit_of(target)
            if a == b:
                continue
            if a not in RANK or b not in RANK:
                bad.append(f"{source} -> {target}: {a if a not in RANK else b} has no layer")
            elif RANK[b] >= RANK[a]:
                bad.append(f"{source} ({a}, layer {RANK[a]}) -> {target} ({b}, layer {RANK[b]})")
    return bad


def circles() -> list[list[str]]:
    """Every strongly connected group of two or more files (Tarjan)."""
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def prefixed_files() -> list[str]:
    """Files whose name repeats their folder's: curvature/curvature_maps.py, data/datasets.py."""
    bad = []
    for p in PACKAGE.rglob("*.py"):
        folder = p.parent.name
        if p.parent == PACKAGE or p.name == "__init__.py":
            continue
        stems = {folder, folder.rstrip("s")}
        if any(p.stem.startswith(s) for s in stems if len(s) > 2):
            bad.append(str(p.relative_to(PACKAGE)))
    return sorted(bad)


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m in modules()} - {"conf"}
    assert units <= set(RANK), f"give these a layer in RANK: {sorted(units - set(RANK))}"


def test_imports_point_down_the_layers():
    assert upward_imports() == []


def test_no_two_files_import_each_other_round_a_circle():
    assert circles() == []


def test_the_package_root_holds_only_the_core():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_FILES, top


def test_no_file_name_repeats_its_folder():
    assert prefixed_files() == []


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a file of the curves importing the engine is reported."""
    fake = tmp_path / "modeconn"
    (fake / "curves").mkdir(parents=True)
    (fake / "engine").mkdir()
    for d in (fake, fake / "curves", fake / "engine"):
        (d / "__init__.py").write_text("")
    (fake / "engine" / "grid.py").write_text("from modeconn.curves.a import x\n")
    (fake / "curves" / "a.py").write_text("def f():\n    from modeconn.engine.grid import y\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert upward_imports() == [
        "modeconn.curves.a (curves, layer 2) -> modeconn.engine.grid (engine, layer 4)"
    ]
    assert circles() == [["modeconn.curves.a", "modeconn.engine.grid"]]


if __name__ == "__main__":
    for line in upward_imports():
        print("up:", line)
    for group in circles():
        print("circle:", " <-> ".join(group))
    for name in prefixed_files():
        print("prefixed:", name)

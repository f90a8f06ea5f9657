"""The documentation's code runs, so the docs cannot rot.

Every ```python block of the site's pages (docs/*.md) and of README.md runs once. A page's
blocks run in order in one namespace, in a fresh directory; a page whose first Python block
is preceded by `<!-- docs-test: continues curves.md -->` starts from a copy of that page's
names and files (the trained networks of "Curves and training"), so the networks are trained
once for all the pages that use them. The shell blocks of docs/getting-started.md run too, in
bash, with the repository's environment on the PATH; a block preceded by `<!-- not run:
REASON -->` is skipped, and the reason is required. Long commands get small settings here
(SMALL below): the page shows the real command, the test checks that it runs and what it
prints. Times are reported, not asserted (a busy machine would fail a time limit).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)
DIRECTIVE = re.compile(r"<!--\s*(?P<kind>docs-test|not run):\s*(?P<text>.*?)\s*-->\s*$")
SHELL = {"bash", "sh", "shell", "console"}
TIMES: dict[str, float] = {}

# Small settings for the shell commands of the getting-started page, appended to each command
# of that app: the page shows the real run (about 25 s for the demo), the test its shape.
SMALL = {
    "demo": "endpoint_optim.epochs=2 curve_optim.epochs=2 path_points=5 plane_grid=3"
    " ensemble_points=3 progress=false",
    "train": "optim.epochs=2 progress=false",
    "connect": "optim.epochs=2 progress=false",
    "evaluate": "points=5 progress=false",
}


@dataclass
class Block:
    page: str  # relative to the repository root
    lang: str
    code: str
    line: int  # the first line of the code, 1-based
    directive: tuple[str, str] | None  # ("docs-test", "continues curves.md") or ("not run", why)


def nav_pages() -> list[Path]:
    """The site's pages in the order of mkdocs.yml's nav (a page continues only earlier ones)."""
    cfg = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)

    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from walk(value)
            else:
                yield DOCS / value

    return list(walk(cfg["nav"]))


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        d = DIRECTIVE.search(before)
        found.append(
            Block(
                page=path.relative_to(ROOT).as_posix(),
                lang=m["lang"].lower(),
                code=m["code"],
                line=text.count("\n", 0, m.start("code")) + 1,
                directive=(d["kind"], d["text"]) if d else None,
            )
        )
    return found


PAGES = [*nav_pages(), ROOT / "README.md"]
PYTHON_PAGES = [p for p in PAGES if any(b.lang == "python" for b in blocks(p))]


def test_every_page_of_docs_is_in_the_nav():
    assert sorted(DOCS.glob("*.md")) == sorted(p for p in PAGES if p.parent == DOCS)


def test_every_directive_is_understood():
    for page in PAGES:
        for b in blocks(page):
            if b.directive is None:
                continue
            kind, text = b.directive
            if kind == "not run":
                assert b.lang in SHELL and text, (
                    f"{b.page}:{b.line}: a skipped block needs a reason"
                )
            else:
                assert b.lang == "python" and re.fullmatch(r"continues [\w-]+\.md", text), (
                    f"{b.page}:{b.line}: unknown directive {text!r}"
                )


# --- Python blocks ----------------------------------------------------------------------------

_RUNS: dict[Path, tuple[dict, Path]] = {}  # page -> (its namespace after its blocks, its folder)


def _parent(page: Path) -> Path | None:
    for b in blocks(page):
        if b.lang == "python":
            if b.directive and b.directive[0] == "docs-test":
                return DOCS / b.directive[1].split()[1]
            return None
    return None


def _run_page(page: Path, base: Path) -> tuple[dict, Path]:
    """Run a page's Python blocks (after its parent's, once) in base/<page>; cached."""
    if page in _RUNS:
        return _RUNS[page]
    folder = base / page.stem
    parent = _parent(page)
    if parent is not None:
        names, parent_folder = _run_page(parent, base)
        shutil.copytree(parent_folder, folder)
        namespace = dict(names)
    else:
        folder.mkdir()
        namespace = {"__name__": "__main__"}
    began, cwd = time.perf_counter(), os.getcwd()
    os.chdir(folder)
    try:
        for b in blocks(page):
            if b.lang == "python":
                # line numbers of a traceback are the page's
                exec(compile("\n" * (b.line - 1) + b.code, b.page, "exec"), namespace)
    finally:
        os.chdir(cwd)
        plt.close("all")
    TIMES[page.name] = time.perf_counter() - began
    _RUNS[page] = (namespace, folder)
    return _RUNS[page]


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("docs")


@pytest.fixture
def registries():
    """Restore the model registry: a page registers a model of its own to show how."""
    from modeconn.models import MODELS

    before = dict(MODELS)
    yield
    MODELS.clear()
    MODELS.update(before)


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[p.name for p in PYTHON_PAGES])
def test_python_blocks_run_as_written(page, docs_dir, registries):
    _, folder = _run_page(page, docs_dir)
    assert folder.is_dir()


# --- shell blocks of the getting-started page --------------------------------------------------


def _small(code: str) -> str:
    """The block with SMALL's settings appended to each `modeconn <app>` command."""
    logical = code.replace("\\\n", " ")
    out = []
    for line in logical.splitlines():
        command, hash_, comment = line.partition(" #")
        words = command.split()
        if len(words) >= 2 and words[0] == "modeconn" and words[1] in SMALL:
            command = f"{command.rstrip()} {SMALL[words[1]]}"
        out.append(command + (f"  #{comment}" if hash_ else ""))
    return "\n".join(out) + "\n"


SHELL_BLOCKS = [b for b in blocks(DOCS / "getting-started.md") if b.lang in SHELL]


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[f"line{b.line}" for b in SHELL_BLOCKS])
def test_getting_started_shell_blocks_run(block, tmp_path):
    if block.directive and block.directive[0] == "not run":
        pytest.skip(f"not run: {block.directive[1]}")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    began = time.perf_counter()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _small(block.code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    TIMES[f"getting-started.md shell, line {block.line}"] = time.perf_counter() - began
    assert done.returncode == 0, f"{block.page}:{block.line} failed:\n{done.stdout}\n{done.stderr}"
    if "modeconn demo" in block.code:  # what the page says the demo prints
        for row in ("straight line", "Bezier curve", "ensemble {w1, phi(0.5)}", "plane 3x3"):
            assert row in done.stdout, f"the demo printed no {row!r}:\n{done.stdout}"


def test_report_the_docs_times(capsys):
    """Not an assertion: the time of each page's code, for the claim in CONTRIBUTING.md."""
    if not TIMES:
        pytest.skip("no docs code ran in this session")
    with capsys.disabled():
        rows = ", ".join(f"{k} {v:.0f} s" for k, v in TIMES.items())
        print(f"\ndocs code: {rows}; all {sum(TIMES.values()):.0f} s")

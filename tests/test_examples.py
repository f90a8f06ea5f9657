"""The README's Python examples: each is a file in docs/examples/, the README holds an exact copy,
and each runs as written, self-contained, in a fresh directory. Their times are reported (not
asserted: a busy machine would fail a time limit); each should take about a minute or less
on 2 cores."""

import re
import runpy
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))
MARKER = re.compile(r"<!-- (docs/examples/\w+\.py): .*? -->\n```python\n(.*?)```", re.DOTALL)
TIMES: dict[str, float] = {}


def test_every_readme_python_block_is_a_copy_of_an_example_file():
    readme = (ROOT / "README.md").read_text()
    copies = dict(MARKER.findall(readme))
    assert readme.count("```python") == len(copies), "a README python block without its file"
    assert sorted(copies) == [f"docs/examples/{p.name}" for p in EXAMPLES]
    for name, block in copies.items():
        assert block == (ROOT / name).read_text(), f"README's copy of {name} differs: update it"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_as_written(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    began = time.perf_counter()
    try:
        runpy.run_path(str(example), run_name="__main__")
    finally:
        plt.close("all")
    TIMES[example.stem] = time.perf_counter() - began
    assert any(tmp_path.iterdir()), f"{example.name} wrote nothing (a figure or a result)"


def test_report_the_examples_times(capsys):
    """Not an assertion: the times of the examples above, for the README's claim."""
    if not TIMES:
        pytest.skip("no example ran in this session")
    with capsys.disabled():
        rows = ", ".join(f"{k} {v:.0f} s" for k, v in TIMES.items())
        print(f"\nREADME examples: {rows}; all {sum(TIMES.values()):.0f} s")

"""Execute the notebooks top to bottom in the tiny setting, computing and then reloading."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# The parameter cell each test run gets instead of the notebook's own.
TINY = """\
SMALL = True
RESULTS = {results!r}
PROGRESS = False
"""

CHECK = """\
import matplotlib.figure
assert all(isinstance(f, matplotlib.figure.Figure) for f in ({figures},))
"""

FIGURES = {
    "plane_visualization": ("fig_plane", "fig_path"),
    "ensemble_diversity": ("fig_ens", "fig_fge"),
    "functions_along_curve": ("fig_path", "fig_functions"),
}


def run_notebook(name: str, workdir: Path, results: Path):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    params[0].source = TINY.format(results=str(results))
    nb.cells.append(nbformat.v4.new_code_cell(CHECK.format(figures=", ".join(FIGURES[name]))))
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()  # raises CellExecutionError if any cell fails
    return nb


def png_outputs(nb) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


@pytest.fixture(scope="module", params=sorted(FIGURES))
def computed(request, tmp_path_factory):
    """(name, executed notebook, results folder) of one computing run per notebook."""
    workdir = tmp_path_factory.mktemp(request.param)
    results = workdir / "results"
    return request.param, run_notebook(request.param, workdir, results), results


def stream_text(nb) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )


def test_notebook_runs_and_draws_its_figures(computed):
    name, nb, _ = computed
    assert png_outputs(nb) == len(FIGURES[name])


def test_notebook_saves_results_and_figures(computed):
    _, _, results = computed
    suffixes = {p.suffix for p in results.iterdir()}
    assert {".npz", ".json", ".png", ".pdf"} <= suffixes


def test_notebook_reloads_saved_results_without_training(computed):
    name, _, results = computed
    saved = {p.name: p.stat().st_mtime_ns for p in results.iterdir() if p.suffix == ".npz"}
    nb = run_notebook(name, results.parent, results)
    assert "loading the results from" in stream_text(nb)
    assert png_outputs(nb) == len(FIGURES[name])
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir() if p.suffix == ".npz"} == saved


def test_notebooks_are_stored_without_outputs():
    for name in FIGURES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name

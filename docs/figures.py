"""Every figure of the documentation site, from the code: `make figures` (python docs/figures.py).

`python docs/figures.py [NAME ...]` draws the named ones only; the names and what each runs:

    demo        `modeconn demo` (about 25 s on 2 cores): its path, plane and ensembles figures
    functions   two MLP regressors and a Bezier curve on toy1d: functions along the curve
    shards      the demo's curve's plane in three shards, merged (`modeconn plane -m ...`)
    layers      the package's layers and the imports between them, read from the source
    curvature   docs/curvature_figures.py (about a minute)
    similarity  two endpoints and a curve, `modeconn similarity analysis=training` and
                `analysis=curve` (about 3 minutes)
    trajectory  the trajectory gallery (`make gallery`, about 4 minutes) and SGD vs Adam
    critique    `modeconn critique` (about 4 minutes)
    adaptive    benchmarks/bench_adaptive.py: the demo-like plane, 129 x 129 regular beside
                513 x 513 adaptive with its evaluated nodes (about 15 minutes on 2 cores)
    simplex     benchmarks/simplex_digits.py: a 3-vertex simplex from one ConvFC on digits, drawn
                as a triangle heat map (about 17 minutes; checkpoints in build/)
    stability   benchmarks/stability_digits.py: an MLP's and a ConvFC's instability against
                the spawn step on digits (about 20 minutes; checkpoints in build/)

Each figure is written to docs/figures/ under the name the pages use. The runs work in
build/figures/ (ignored by git), where their checkpoints stay, so that a second run reuses
them (`shards` reads the demo's curve).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIGURES = HERE / "figures"
WORK = ROOT / "build" / "figures"  # kept between runs: the demo's checkpoints
MODECONN = [str(Path(sys.executable).parent / "modeconn")]  # the console script beside python


def run(*args: str, cwd: Path = WORK) -> None:
    print("$ modeconn", " ".join(args), flush=True)
    subprocess.run([*MODECONN, *args], cwd=cwd, check=True)


def copy(source: Path, name: str) -> None:
    FIGURES.mkdir(exist_ok=True)
    shutil.copyfile(source, FIGURES / name)
    print(f"  -> docs/figures/{name}")


def demo() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    run("demo", "progress=false", "hydra.run.dir=outputs/demo")
    out = WORK / "results" / "demo"
    for name in ("path", "plane", "ensembles"):
        copy(out / f"{name}.png", f"demo_{name}.png")


def _demo_curve() -> Path:
    curves = sorted((WORK / "checkpoints" / "demo").glob("curve-*.pt"))
    if not curves:
        demo()
        curves = sorted((WORK / "checkpoints" / "demo").glob("curve-*.pt"))
    return curves[0]


def shards() -> None:
    curve = _demo_curve()
    out = WORK / "results" / "shards"
    common = [f"curve_ckpt={curve}", "grid=11", "num_shards=3", f"out={out}", "progress=false"]
    run("plane", "-m", *common, "shard=0,1,2", "hydra.sweep.dir=multirun/shards", "overwrite=true")
    run("plane", *common, "merge=true", "hydra.run.dir=outputs/shards", "overwrite=true")
    copy(out / "plane.png", "plane_shards.png")


def functions() -> None:
    import torch

    import modeconn as mc
    from modeconn.plotting import plot_functions, save_figure

    data = mc.load_dataset("toy1d")
    nets = []
    for seed in (1, 2):  # the settings of notebooks/functions_along_curve.ipynb
        torch.manual_seed(seed)
        nets.append(mc.build_model("mlp", num_classes=1, input_shape=(1,), hidden=[50, 50]))
        cfg = mc.TrainConfig(epochs=300, lr=0.01, batch_size=16, seed=seed, progress=False)
        mc.train_endpoint(nets[-1], data, cfg)
    torch.manual_seed(0)
    curve = mc.Bezier(nets[0], nets[0], nets[1])
    cfg = mc.TrainConfig(epochs=600, lr=0.01, batch_size=16, seed=3, progress=False)
    mc.train_curve(curve, data, cfg)
    plane = mc.evaluate_plane_through_curve(curve, data, grid=21, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        save_figure(plot_functions(curve, data, plane_result=plane), Path(tmp) / "f.png")
        copy(Path(tmp) / "f.png", "functions_along_curve.png")


# the layers of shared/DESIGN.md, top to bottom; a module's layer is its top-level folder or file
LAYERS = [
    ("apps", ["apps"]),
    ("plotting", ["plotting"]),
    ("analyses", ["trajectory", "curvature", "similarity", "lmc", "volumes"]),
    ("", ["landscape", "ensembles"]),
    ("", ["path", "plane"]),
    ("training", ["training"]),
    ("engine", ["engine"]),
    ("io", ["io"]),
    ("curves", ["curves"]),
    ("models, data", ["models", "data"]),
    ("private", ["_messages", "_version"]),
]


def _imports() -> Counter:
    """(importing part, imported part) -> number of import statements, over modeconn/."""
    package = ROOT / "modeconn"
    arrows: Counter = Counter()
    for path in package.rglob("*.py"):
        part = path.relative_to(package).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                bits = name.split(".")
                if bits[0] == "modeconn" and len(bits) > 1 and bits[1] != part:
                    arrows[part, bits[1]] += 1
    return arrows


def layers() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modeconn.plotting import save_figure

    place = {}  # part -> (x, y)
    for row, (_, parts) in enumerate(LAYERS):
        for col, part in enumerate(parts):
            place[part] = (col - (len(parts) - 1) / 2, -row)
    arrows = _imports()
    fig, ax = plt.subplots(figsize=(8, 8.5))
    for (a, b), n in arrows.items():
        if a not in place or b not in place:
            continue
        (x0, y0), (x1, y1) = place[a], place[b]
        colour = "tab:red" if y1 > y0 else "0.55"  # an upward import would be red
        ax.annotate(
            "", (x1, y1 + 0.18), (x0, y0 - 0.18),
            arrowprops=dict(arrowstyle="->", color=colour, lw=0.5 + 0.25 * min(n, 8), alpha=0.6),
        )  # fmt: skip
    for part, (x, y) in place.items():
        ax.text(
            x, y, part, ha="center", va="center", fontsize=10,
            bbox=dict(boxstyle="round,pad=0.35", fc="white", ec="0.2"),
        )  # fmt: skip
    for row, (name, _) in enumerate(LAYERS):
        ax.text(-3.1, -row, name, ha="left", va="center", fontsize=9, color="0.35", style="italic")
    ax.set_xlim(-3.2, 2.2)
    ax.set_ylim(-len(LAYERS) + 0.5, 0.6)
    ax.axis("off")
    up = sum(
        n for (a, b), n in arrows.items() if a in place and b in place and place[b][1] > place[a][1]
    )
    ax.set_title(
        f"modeconn's layers: {sum(arrows.values())} imports between parts, {up} pointing up\n"
        "(arrow width: the number of import statements; an upward one would be red)",
        fontsize=9,
    )
    with tempfile.TemporaryDirectory() as tmp:
        save_figure(fig, Path(tmp) / "layers.png")
        copy(Path(tmp) / "layers.png", "layers.png")


def curvature() -> None:
    subprocess.run([sys.executable, str(HERE / "curvature_figures.py")], check=True)


def similarity() -> None:
    # the page's runs: two convfc_digits endpoints (20 epochs) and a Bezier curve between them
    WORK.mkdir(parents=True, exist_ok=True)
    run("train", "-m", "seed=1,2", "progress=false", "hydra.sweep.dir=multirun/similarity")
    ends = [WORK / "checkpoints" / f"digits-convfc-pool_padding1-seed{k}.pt" for k in (1, 2)]
    run("connect", f"start={ends[0]}", f"end={ends[1]}", "progress=false",
        "hydra.run.dir=outputs/similarity-connect")  # fmt: skip
    curve = next((WORK / "checkpoints").glob("curve-bezier-digits-convfc-pool_padding1-*.pt"))
    out = WORK / "results" / "similarity"
    run("similarity", "analysis=training", f"out={out}/training", "progress=false",
        "hydra.run.dir=outputs/similarity-training", "overwrite=true")  # fmt: skip
    run("similarity", "analysis=curve", f"ckpt={curve}", f"out={out}/curve", "progress=false",
        "hydra.run.dir=outputs/similarity-curve", "overwrite=true")  # fmt: skip
    for kind in ("training", "curve"):
        pngs = sorted((out / kind).glob("*.png"))
        copy(pngs[0], f"similarity_{kind}.png")


def trajectory() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / "results" / "trajectory"
    nets = "logistic,5x1,20x1,100x1,5x5,20x5,100x5,5x10,20x10,100x10"
    # default out: results/trajectory/<data>-<net>-seed<seed>/, the folders the gallery reads
    run("trajectory", "-m", f"net={nets}", "init=he", "progress=false",
        "hydra.sweep.dir=multirun/trajectory")  # fmt: skip
    run("trajectory", f"gallery={out}", "hydra.run.dir=outputs/gallery")
    copy(out / "gallery.png", "trajectory_gallery.png")
    compare = out.parent / "compare"
    runs = "compare=[{optimizer: adam, lr: 0.005}, {momentum: 0.0}]"
    run("trajectory", "net=20x5", "init=he", runs, f"out={compare}", "progress=false",
        "hydra.run.dir=outputs/compare")  # fmt: skip
    copy(compare / "trajectories-fixed.png", "trajectory_sgd_adam.png")


def critique() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / "results" / "critique"
    run("critique", f"out={out}", "progress=false", "hydra.run.dir=outputs/critique")
    pngs = sorted(out.glob("critique-*.png"))
    copy(pngs[0], "critique.png")


def align() -> None:
    """Two MLPs (3 x 512) on digits: test error along the straight line from w1 to w2, and to
    w2 aligned by weight matching and by activation matching (the Align page)."""
    import matplotlib.pyplot as plt
    import torch

    import modeconn as mc

    data = mc.load_dataset("digits")
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = mc.build_model("mlp", num_classes=10, input_shape=data.input_shape, hidden=[512] * 3)
        mc.train_endpoint(net, data, mc.TrainConfig(epochs=20, seed=seed, progress=False))
        nets.append(net)
    a, b = nets
    spec = mc.permutation_spec(a, data.train_x[:4])
    by_weights, wm = mc.weight_matching(a, a, b, spec=spec, restarts=4)
    by_activations, _ = mc.activation_matching(a, a, b, data, spec=spec)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    rows = []
    for label, state in (("w2", None), ("w2, weight matching", by_weights),
                         ("w2, activation matching", by_activations)):  # fmt: skip
        end = b
        if state is not None:
            end = mc.build_model(
                "mlp", num_classes=10, input_shape=data.input_shape, hidden=[512] * 3
            )
            end.load_state_dict(state)
        path = mc.evaluate_path(mc.Line(a, a, end), data, ts=21, progress=False)
        ax.plot(path.ts, path.test_error, marker=".", label=f"w1 to {label}")
        rows.append((label, path.barrier("test_error"), path.barrier("train_nll")))
    ax.set_xlabel("t along the straight line")
    ax.set_ylabel("test error (%)")
    ax.set_title("MLP 3 x 512 on digits: the line before and after alignment")
    ax.legend()
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "align_line.png", dpi=150)
    plt.close(fig)
    for label, err, nll in rows:
        print(
            f"align: line w1 to {label}: test error barrier {err:.2f} points, train nll {nll:.4f}"
        )
    print(f"align: weight matching sweeps per restart {[r['sweeps'] for r in wm.runs]}")


def simplex() -> None:
    """benchmarks/simplex_digits.py (it resumes from build/simplex_digits/): the triangle heat
    map of the Simplexes page."""
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "simplex_digits.py")], check=True)
    copy(ROOT / "build" / "simplex_digits" / "triangle.png", "simplex_triangle.png")


def stability() -> None:
    """benchmarks/stability_digits.py (it resumes from build/stability_digits/): the figures
    of the Stability page."""
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stability_digits.py")], check=True)
    for label in ("mlp", "convfc"):
        copy(ROOT / "build" / "stability_digits" / f"{label}.png", f"stability_{label}.png")


def adaptive() -> None:
    """benchmarks/bench_adaptive.py (its reference grids kept in build/bench_adaptive/): the
    figure pair of the adaptive-resolution section."""
    out = ROOT / "build" / "bench_adaptive"
    bench = ROOT / "benchmarks" / "bench_adaptive.py"
    subprocess.run(
        [sys.executable, str(bench), "--cache", str(out), "--figures", str(out)], check=True
    )
    for name in ("adaptive_regular", "adaptive_plane"):
        copy(out / f"{name}.png", f"{name}.png")


JOBS = {f.__name__: f for f in (demo, functions, shards, layers, curvature, similarity,
                                trajectory, critique, align, simplex, stability,
                                adaptive)}  # fmt: skip

if __name__ == "__main__":
    names = sys.argv[1:] or list(JOBS)
    unknown = sorted(set(names) - set(JOBS))
    if unknown:
        sys.exit(f"unknown figure job {unknown}; the jobs are: {', '.join(JOBS)}")
    for name in names:
        JOBS[name]()

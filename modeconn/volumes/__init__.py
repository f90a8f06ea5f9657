"""Mode-connecting volumes (Benton, Maddox, Lotfi, Wilson 2021): simplexes grown from one
trained network (SPRO) and complexes of connectors between several, trained a vertex at a
time (`train_simplex`); the loss over their faces (`evaluate_faces`, the triangle heat map);
ensembles of sampled points (`simplex_ensemble`, ESPRO) against deep ensembles and FGE."""

from modeconn.volumes.ensemble import (
    SimplexEnsembleResult,
    deep_ensemble,
    ensemble_scores,
    fge_cycles,
    fge_ensemble,
    network_members,
    simplex_ensemble,
)
from modeconn.volumes.points import (
    SimplexPointsResult,
    default_triples,
    evaluate_faces,
    evaluate_simplex,
    face_lattice,
)
from modeconn.volumes.train import (
    SimplexConfig,
    SimplexRun,
    cosine_lr,
    grow,
    stage_checkpoint,
    train_simplex,
    vertex_names,
)

__all__ = [
    "SimplexConfig",
    "SimplexEnsembleResult",
    "SimplexPointsResult",
    "SimplexRun",
    "cosine_lr",
    "deep_ensemble",
    "default_triples",
    "ensemble_scores",
    "evaluate_faces",
    "evaluate_simplex",
    "face_lattice",
    "fge_cycles",
    "fge_ensemble",
    "grow",
    "network_members",
    "simplex_ensemble",
    "stage_checkpoint",
    "train_simplex",
    "vertex_names",
]

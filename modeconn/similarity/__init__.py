"""Representation similarity: activations of any layer, the measures (CCA, SVCCA, PWCCA, the
CKA family, streamed over batches), and the analyses (two networks, along a curve, over
training, class-wise)."""

from modeconn.similarity.activations import collect_activations, network_at, stream_activations
from modeconn.similarity.analyses import (
    SimilarityResult,
    along_curve,
    class_wise,
    compare_networks,
    over_training,
    training_snapshots,
)
from modeconn.similarity.measures import (
    MEASURES,
    MinibatchCKA,
    Moments,
    SimilarityWarning,
    cca,
    debiased_cka,
    linear_cka,
    minibatch_cka,
    permutation_baseline,
    pwcca,
    rbf_cka,
    svcca,
)

__all__ = [
    "MEASURES",
    "MinibatchCKA",
    "Moments",
    "SimilarityResult",
    "SimilarityWarning",
    "along_curve",
    "cca",
    "class_wise",
    "collect_activations",
    "compare_networks",
    "debiased_cka",
    "linear_cka",
    "minibatch_cka",
    "network_at",
    "over_training",
    "permutation_baseline",
    "pwcca",
    "rbf_cka",
    "stream_activations",
    "svcca",
    "training_snapshots",
]

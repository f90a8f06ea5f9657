"""Connectivity modulo permutation: the permutation groups of any network (traced from its
graph), permuting a network by them, and matching one network's units to another's."""

from modeconn.align.activations import activation_matching
from modeconn.align.repair import (
    ChannelAffine,
    EndStats,
    RepairedLine,
    channel_stats,
    end_stats,
    repair,
)
from modeconn.align.spec import (
    PermutationSpec,
    SpecError,
    apply_permutation,
    check_spec,
    inverse,
)
from modeconn.align.trace import permutation_spec
from modeconn.align.weights import Matching, merge_many, permutation_distance, weight_matching

__all__ = [
    "ChannelAffine",
    "EndStats",
    "Matching",
    "PermutationSpec",
    "RepairedLine",
    "SpecError",
    "activation_matching",
    "apply_permutation",
    "channel_stats",
    "check_spec",
    "end_stats",
    "inverse",
    "merge_many",
    "permutation_distance",
    "permutation_spec",
    "repair",
    "weight_matching",
]

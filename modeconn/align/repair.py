"""REPAIR (Jordan et al. 2023): renormalise the interpolated network's units.

Between two aligned networks, the midpoint's hidden units lose variance ("variance collapse"),
and its accuracy with them. REPAIR sets, for every hidden layer's output channel of the
network at (1 - alpha) a + alpha b, the mean and the standard deviation (std, not variance)
to the endpoints' interpolation:

    mu_goal = (1 - alpha) mu_a + alpha mu_b,   s_goal = (1 - alpha) s_a + alpha s_b

measured on the train inputs (positions of a convolution's map as samples). The reference
inserts a BatchNorm after each layer, resets its statistics on train data and fuses it into
the layer; here each layer's statistics are measured in graph order, with the layers before it
already corrected, and the affine map y -> (y - mu) s_goal / s + mu_goal is fused into the
layer's weight and bias at once. `method="rescale"` corrects the std alone (the mean stays the
interpolated network's): Qu et al. find rescaling to be what matters. The hidden layers are
the Linear and Conv layers whose outputs a permutation group of the spec holds (not the logits).
At alpha = 0 and 1 the endpoints themselves are returned.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from modeconn.align.spec import PermutationSpec
from modeconn.align.trace import permutation_spec
from modeconn.align.weights import _state
from modeconn.curves.family import Line

METHODS = ("repair", "rescale")


def _hidden_layers(model: nn.Module, spec: PermutationSpec) -> list[str]:
    """The Linear / Conv modules whose output channels a group holds, in module order."""
    grouped = {t for entries in spec.groups.values() for t, axis, _ in entries if axis == 0}
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
        and not isinstance(m, nn.modules.conv._ConvTransposeNd)
        and f"{name}.weight" in grouped
    ]


def channel_stats(
    net: nn.Module, layers: list[str], x: Tensor, batch_size: int = 256
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per output channel of each layer: (mean, std) over the inputs `x` (float64; positions
    of a map count as samples), in eval mode."""
    sums: dict[str, list[Any]] = {}
    modules = dict(net.named_modules())

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, out: Tensor) -> None:
            y = out.detach().movedim(1, -1).reshape(-1, out.shape[1]).double()
            s = sums.setdefault(name, [0, 0.0, 0.0])
            s[0] += len(y)
            s[1] = s[1] + y.sum(0)
            s[2] = s[2] + (y * y).sum(0)

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    was = net.training
    try:
        net.eval()
        with torch.no_grad():
            for batch in torch.split(x, batch_size):
                net(batch)
    finally:
        for h in handles:
            h.remove()
        net.train(was)
    out = {}
    for name, (n, s1, s2) in sums.items():
        mean = s1 / n
        out[name] = (mean, (s2 / n - mean**2).clamp_min(0).sqrt())
    return out


def repair(
    model: nn.Module,
    a: nn.Module | Mapping[str, Tensor],
    b: nn.Module | Mapping[str, Tensor],
    alpha: float,
    data: Any,
    *,
    spec: PermutationSpec | None = None,
    method: str = "repair",
    samples: int | None = None,
    batch_size: int = 256,
) -> nn.Module:
    """The network at (1 - alpha) a + alpha b (a copy of `model` with those weights), its
    hidden layers' output channels renormalised to the endpoints' interpolated mean and std
    (`method="repair"`) or std alone (`"rescale"`), fused into the layers' weights and biases.

    a, b: modules or state dicts of `model`'s architecture, b aligned to a (weight or
    activation matching). data: a `Dataset` (its un-augmented train inputs) or inputs (N, ...);
    `samples` of them (None: all). A network with BatchNorm needs no REPAIR: its statistics
    are recomputed at every point ("reset BN", what the engine does)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    sa, sb = _state(a), _state(b)
    x = getattr(data, "train_x", data)
    x = x[:samples] if samples is not None else x
    net = copy.deepcopy(model)
    if alpha in (0.0, 1.0):  # the endpoints themselves
        net.load_state_dict(sa if alpha == 0.0 else sb)
        return net.eval()
    spec = spec or permutation_spec(model, x[:2])
    layers = _hidden_layers(model, spec)
    ends = []
    for state in (sa, sb):
        end = copy.deepcopy(model)
        end.load_state_dict(state)
        ends.append(channel_stats(end, layers, x, batch_size))
    mixed = {
        k: (1 - alpha) * v + alpha * sb[k] if v.is_floating_point() else v for k, v in sa.items()
    }
    net.load_state_dict(mixed)
    modules = dict(net.named_modules())
    for name in layers:  # in order: each measured with the layers before it corrected
        ((mu, s),) = channel_stats(net, [name], x, batch_size).values()
        mu_goal = (1 - alpha) * ends[0][name][0] + alpha * ends[1][name][0]
        s_goal = (1 - alpha) * ends[0][name][1] + alpha * ends[1][name][1]
        if method == "rescale":
            mu_goal = mu
        # a unit constant on the data cannot be rescaled: only its mean moves
        scale = torch.where(s > 1e-12, s_goal / s.clamp_min(1e-12), torch.ones_like(s))
        layer = modules[name]
        shape = (-1,) + (1,) * (layer.weight.ndim - 1)
        with torch.no_grad():
            bias = layer.bias if layer.bias is not None else torch.zeros_like(mu)
            new_bias = (bias.double() - mu) * scale + mu_goal
            layer.weight.mul_(scale.to(layer.weight.dtype).view(shape))
            if layer.bias is None:
                layer.bias = nn.Parameter(new_bias.to(layer.weight.dtype))
            else:
                layer.bias.copy_(new_bias.to(layer.bias.dtype))
    return net.eval()


class RepairedLine(Line):
    """The straight line from a to b with REPAIR at every t: phi(t) is `repair`'s network at
    alpha = t, so `evaluate_path(RepairedLine(...), data)` gives the REPAIRed line's loss and
    error with everything the engine does (BatchNorm statistics, shards, progress).

    Every hidden layer needs a bias (the correction's shift is fused into it); a network with
    BatchNorm needs no REPAIR (the engine resets its statistics at every point)."""

    def __init__(
        self,
        model: nn.Module,
        start: nn.Module | Mapping[str, Tensor],
        end: nn.Module | Mapping[str, Tensor],
        data: Any,
        *,
        spec: PermutationSpec | None = None,
        method: str = "repair",
        samples: int | None = None,
    ):
        super().__init__(model, start, end)
        self._ends = (_state(start), _state(end))
        x = getattr(data, "train_x", data)
        self._spec = spec or permutation_spec(model, x[:2])
        missing = [
            n
            for n in _hidden_layers(model, self._spec)
            if dict(model.named_modules())[n].bias is None
        ]
        if missing:
            raise ValueError(
                f"REPAIR along a path needs a bias in every hidden layer; {', '.join(missing[:3])} "
                "have none (a network with BatchNorm needs no REPAIR: its statistics are reset "
                "at every point)"
            )
        self._options = dict(data=data, spec=self._spec, method=method, samples=samples)
        self._base = copy.deepcopy(model)

    def point(self, t: float | Tensor, wd: float = 0.0) -> Tensor:
        net = repair(self._base, *self._ends, float(t), **self._options)
        like = self.start
        return self.space.flatten(dict(net.named_parameters()), "the REPAIRed point").to(like)

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
layer's weight and bias at once (`fuse=False`: kept as an explicit affine module after the
layer instead; the outputs are the same). Methods:

- `"repair"`: mean and std, measured on the interpolated network (one pass per layer);
- `"rescale"`: the std alone (the mean stays the interpolated network's): Qu et al. find
  rescaling to be what matters;
- `"repair_closed"`: no pass through the interpolated network. Its pre-activation is taken to
  be the interpolation of the endpoints' matched pre-activations, (1 - alpha) z_a + alpha z_b,
  whose mean is mu_goal and whose variance follows from the matched correlation:
  (1 - alpha)^2 s_a^2 + alpha^2 s_b^2 + 2 alpha (1 - alpha) cov(z_a, z_b). Exact for the first
  layer; deeper, an estimate (each layer's input is no longer the interpolation of the ends').

The endpoints' statistics (`end_stats`) are measured once and reused for every alpha. The
hidden layers are the Linear and Conv layers whose outputs a permutation group of the spec
holds (not the logits). At alpha = 0 and 1 the endpoints themselves are returned.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from modeconn.align.spec import PermutationSpec
from modeconn.align.trace import permutation_spec
from modeconn.align.weights import _state
from modeconn.curves.family import Line

METHODS = ("repair", "rescale", "repair_closed")


def _hidden_layers(model: nn.Module, spec: PermutationSpec) -> list[str]:
    """The Linear / Conv modules whose output channels a group holds, in module order."""
    grouped = {e[0] for entries in spec.groups.values() for e in entries if e[1] == 0}
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
        and not isinstance(m, nn.modules.conv._ConvTransposeNd)
        and f"{name}.weight" in grouped
    ]


def _channels(out: Tensor) -> Tensor:
    """(samples, channels) float64: a Linear's last axis or a map's axis 1 as channels."""
    axis = -1 if out.ndim == 2 else 1
    return out.detach().movedim(axis, -1).reshape(-1, out.shape[axis]).double()


def _moments(nets: list[nn.Module], layers: list[str], x: Tensor, batch_size: int):
    """Per layer: [n, sums and sums of squares of each net, sum of the first two's products]
    of the output channels over `x`, the nets run side by side in eval mode."""
    sums: dict[str, list[Any]] = {}
    seen: list[dict[str, Tensor]] = [{} for _ in nets]
    handles = []
    for i, net in enumerate(nets):
        modules = dict(net.named_modules())
        for name in layers:
            handles.append(
                modules[name].register_forward_hook(
                    lambda m, inp, out, i=i, name=name: seen[i].__setitem__(name, _channels(out))
                )
            )
    was = [net.training for net in nets]
    try:
        for net in nets:
            net.eval()
        with torch.no_grad():
            for batch in torch.split(x, batch_size):
                for net in nets:
                    net(batch)
                for name in layers:
                    ys = [s.pop(name) for s in seen]
                    s = sums.setdefault(name, [0] + [0.0] * (2 * len(nets) + 1))
                    s[0] += len(ys[0])
                    for i, y in enumerate(ys):
                        s[1 + 2 * i] = s[1 + 2 * i] + y.sum(0)
                        s[2 + 2 * i] = s[2 + 2 * i] + (y * y).sum(0)
                    if len(ys) == 2:
                        s[-1] = s[-1] + (ys[0] * ys[1]).sum(0)
    finally:
        for h in handles:
            h.remove()
        for net, w in zip(nets, was, strict=True):
            net.train(w)
    return sums


def channel_stats(
    net: nn.Module, layers: list[str], x: Tensor, batch_size: int = 256
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per output channel of each layer: (mean, std) over the inputs `x` (float64; positions
    of a map count as samples), in eval mode."""
    out = {}
    for name, (n, s1, s2, _) in _moments([net], layers, x, batch_size).items():
        mean = s1 / n
        out[name] = (mean, (s2 / n - mean**2).clamp_min(0).sqrt())
    return out


@dataclass
class EndStats:
    """The endpoints' statistics per hidden layer (float64, per output channel): mean and std
    of a and of b, and the covariance of a's channel with b's matched one."""

    mean_a: dict[str, Tensor]
    std_a: dict[str, Tensor]
    mean_b: dict[str, Tensor]
    std_b: dict[str, Tensor]
    cov: dict[str, Tensor]

    def goal(self, name: str, alpha: float) -> tuple[Tensor, Tensor]:
        """(mu_goal, s_goal) of layer `name` at alpha."""
        return (
            (1 - alpha) * self.mean_a[name] + alpha * self.mean_b[name],
            (1 - alpha) * self.std_a[name] + alpha * self.std_b[name],
        )

    def predicted_std(self, name: str, alpha: float) -> Tensor:
        """The std of (1 - alpha) z_a + alpha z_b: the closed form's interpolated unit."""
        sa, sb = self.std_a[name], self.std_b[name]
        var = (1 - alpha) ** 2 * sa**2 + alpha**2 * sb**2 + 2 * alpha * (1 - alpha) * self.cov[name]
        return var.clamp_min(0).sqrt()


def end_stats(
    model: nn.Module,
    a: nn.Module | Mapping[str, Tensor],
    b: nn.Module | Mapping[str, Tensor],
    x: Tensor,
    layers: list[str],
    batch_size: int = 256,
) -> EndStats:
    """Both endpoints' channel statistics at `layers` over the inputs `x`, in one pass."""
    nets = []
    for state in (_state(a), _state(b)):
        net = copy.deepcopy(model)
        net.load_state_dict(state)
        nets.append(net)
    out = EndStats({}, {}, {}, {}, {})
    for name, (n, sa, saa, sb, sbb, sab) in _moments(nets, layers, x, batch_size).items():
        ma, mb = sa / n, sb / n
        out.mean_a[name], out.mean_b[name] = ma, mb
        out.std_a[name] = (saa / n - ma**2).clamp_min(0).sqrt()
        out.std_b[name] = (sbb / n - mb**2).clamp_min(0).sqrt()
        out.cov[name] = sab / n - ma * mb
    return out


class ChannelAffine(nn.Module):
    """y -> y * scale + shift per channel (axis 1 of a map, the last axis of a Linear's
    output): REPAIR's correction kept as its own module (`repair(..., fuse=False)`)."""

    def __init__(self, scale: Tensor, shift: Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, y: Tensor) -> Tensor:
        shape = (-1,) if y.ndim == 2 else (-1,) + (1,) * (y.ndim - 2)
        return y * self.scale.view(shape) + self.shift.view(shape)


def _correct(net: nn.Module, name: str, scale: Tensor, shift: Tensor, fuse: bool) -> None:
    """Make layer `name`'s output y into y * scale + shift (float64 per-channel tensors)."""
    layer = dict(net.named_modules())[name]
    dtype = layer.weight.dtype
    if not fuse:
        parent_name, _, leaf = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, leaf, nn.Sequential(layer, ChannelAffine(scale.to(dtype), shift.to(dtype))))
        return
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    with torch.no_grad():
        bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(shift)
        new_bias = bias * scale + shift
        layer.weight.mul_(scale.to(dtype).view(shape))
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias.to(dtype))
        else:
            layer.bias.copy_(new_bias.to(dtype))


def _scale(goal: Tensor, now: Tensor) -> Tensor:
    """goal / now; a unit constant on the data cannot be rescaled: only its mean moves."""
    return torch.where(now > 1e-12, goal / now.clamp_min(1e-12), torch.ones_like(now))


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
    fuse: bool = True,
    stats: EndStats | None = None,
) -> nn.Module:
    """The network at (1 - alpha) a + alpha b (a copy of `model` with those weights), its
    hidden layers' output channels renormalised to the endpoints' interpolated mean and std
    (`method="repair"`, `"repair_closed"`: the closed form, no pass through the interpolated
    network) or std alone (`"rescale"`), fused into the layers' weights and biases
    (`fuse=False`: an explicit `ChannelAffine` after each layer, the same outputs).

    a, b: modules or state dicts of `model`'s architecture, b aligned to a (weight or
    activation matching). data: a `Dataset` (its un-augmented train inputs) or inputs (N, ...);
    `samples` of them (None: all). `stats`: the endpoints' `end_stats` when already measured
    (a line evaluated at many alpha). A network with BatchNorm needs no REPAIR: its statistics
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
    stats = stats or end_stats(model, sa, sb, x, layers, batch_size)
    mixed = {
        k: (1 - alpha) * v + alpha * sb[k] if v.is_floating_point() else v for k, v in sa.items()
    }
    net.load_state_dict(mixed)
    for name in layers:  # in order: each measured with the layers before it corrected
        mu_goal, s_goal = stats.goal(name, alpha)
        if method == "repair_closed":
            scale = _scale(s_goal, stats.predicted_std(name, alpha))
            _correct(net, name, scale, mu_goal * (1 - scale), fuse)
            continue
        ((mu, s),) = channel_stats(net, [name], x, batch_size).values()
        if method == "rescale":
            mu_goal = mu
        scale = _scale(s_goal, s)
        _correct(net, name, scale, mu_goal - mu * scale, fuse)
    return net.eval()


class RepairedLine(Line):
    """The straight line from a to b with REPAIR at every t: phi(t) is `repair`'s network at
    alpha = t, so `evaluate_path(RepairedLine(...), data)` gives the REPAIRed line's loss and
    error with everything the engine does (BatchNorm statistics, shards, progress). The
    endpoints' statistics are measured once, at the first point inside the segment.

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
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self._ends = (_state(start), _state(end))
        x = getattr(data, "train_x", data)
        self._spec = spec or permutation_spec(model, x[:2])
        layers = _hidden_layers(model, self._spec)
        missing = [n for n in layers if dict(model.named_modules())[n].bias is None]
        if missing:
            raise ValueError(
                f"REPAIR along a path needs a bias in every hidden layer; {', '.join(missing[:3])} "
                "have none (a network with BatchNorm needs no REPAIR: its statistics are reset "
                "at every point)"
            )
        self._x = x[:samples] if samples is not None else x
        self._layers = layers
        self._stats: EndStats | None = None
        self._options = dict(data=self._x, spec=self._spec, method=method)
        self._base = copy.deepcopy(model)

    def point(self, t: float | Tensor, wd: float = 0.0) -> Tensor:
        t = float(t)
        if 0.0 < t < 1.0 and self._stats is None:
            self._stats = end_stats(self._base, *self._ends, self._x, self._layers)
        net = repair(self._base, *self._ends, t, stats=self._stats, **self._options)
        like = self.start
        return self.space.flatten(dict(net.named_parameters()), "the REPAIRed point").to(like)

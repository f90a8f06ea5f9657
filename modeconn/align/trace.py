"""Permutation groups of any network, traced from its graph.

Hidden units can be permuted without changing what a network computes: reorder the output
channels of a layer and, with them, everything that reads or normalises those channels. Which
tensors' axes move together is a property of the graph, not of a hand-written table (the
git-re-basin specs are written per architecture; one of its ResNet50 specs was silently wrong,
its issue #10). Here `torch.fx` traces the network and every tensor's channel axis carries a
group (union-find):

- Linear and Conv (groups=1, transposed too) start a new group for their outputs; their
  weights' output axis and bias belong to it, their input axis to the input's group;
- BatchNorm, LayerNorm (over the channel axis and after), GroupNorm(1, C) and every
  elementwise op or pooling pass the group through (BatchNorm's running mean and var are
  permuted with it, `num_batches_tracked` is not);
- a residual addition, multiplication or other elementwise op of two tensors merges their
  groups: one permutation for the whole residual stream;
- flatten of (N, C, H, W) into Linear repeats the group over the H*W positions of a channel;
- a depthwise convolution passes its input's group through; other grouped convolutions,
  GroupNorm(g > 1), concatenation along channels and the network's input and output fix the
  groups they touch (they are not permuted, and the spec lists them as fixed).

An op the tracer does not know raises one error naming the node and the op; a spec can then
be written by hand (`PermutationSpec.from_dict`). Every spec is checked when built: random
permutations applied to the network leave its outputs unchanged, in eval and in train mode.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from modeconn.align.spec import FIXED, PermutationSpec, SpecError, check_spec

# modules and functions that act on each channel alone (the channel group passes through)
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.CELU,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Mish, nn.PReLU, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_PASS_NAMES = {
    "relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "elu", "leaky_relu",
    "hardswish", "hardsigmoid", "hardtanh", "softplus", "mish", "dropout", "dropout2d",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "contiguous", "clone", "float", "double",
    "to", "detach", "neg", "abs", "exp", "sqrt", "square", "pow", "clamp", "clamp_min",
}  # fmt: skip
# the nonlinearities whose outputs are activation matching's default tap points
_ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.CELU,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Mish, nn.PReLU,
)  # fmt: skip
_ACTIVATION_NAMES = {
    "relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "elu", "leaky_relu",
    "hardswish", "hardsigmoid", "hardtanh", "softplus", "mish",
}  # fmt: skip
_MERGE_NAMES = {"add", "add_", "iadd", "sub", "isub", "mul", "mul_", "imul", "truediv", "div"}
_SHAPE_NAMES = {"size", "dim", "shape", "getattr", "numel"}  # results are not tensors
_FLATTEN_NAMES = {"flatten", "view", "reshape"}


# --------------------------------------------------------------------------- tracing


class _Groups:
    """Union-find over channel groups; group 0 (FIXED) absorbs whatever joins it."""

    def __init__(self) -> None:
        self.parent = [FIXED]
        self.names = ["fixed"]

    def new(self, name: str) -> int:
        self.parent.append(len(self.parent))
        self.names.append(name)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        low, high = min(a, b), max(a, b)  # FIXED (0) wins; else the earlier group's name
        self.parent[high] = low
        return low


@dataclass
class _Chan:
    group: int
    axis: int
    repeat: int = 1


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _op_name(node: fx.Node) -> str:
    target = node.target
    if node.op == "call_method":
        return str(target)
    return getattr(target, "__name__", str(target)).lstrip("_")


class _Tracer:
    def __init__(self, model: nn.Module, example_input: Tensor):
        self.model = model
        try:
            self.graph = fx.symbolic_trace(model)
        except Exception as err:  # fx raises many kinds on data-dependent control flow
            raise SpecError(
                f"torch.fx cannot trace {type(model).__name__} ({str(err).splitlines()[0]}); "
                "write its permutation groups with PermutationSpec.from_dict"
            ) from err
        like = next((p for p in model.parameters() if p.is_floating_point()), None)
        if like is not None and example_input.is_floating_point():
            example_input = example_input.to(like)
        was = model.training
        try:  # eval mode: shapes only, no BatchNorm statistics updated
            model.eval()
            with torch.no_grad():
                ShapeProp(self.graph).propagate(example_input)
        finally:
            model.train(was)
        self.groups = _Groups()
        self.entries: list[tuple[int, str, int, int]] = []  # (group, tensor, axis, repeat)
        self.taps: list[tuple[int, str, str, int]] = []  # (group, node, kind, channel axis)
        self.chan: dict[fx.Node, _Chan | None] = {}
        self.module_out: dict[str, int] = {}
        self.module_in: dict[str, int] = {}

    def tap(self, node: fx.Node, kind: str) -> None:
        """Record a node whose output carries a group on its channel axis (one unit per
        channel): "post" after a nonlinearity, "pre" after a layer, "stream" after a merge."""
        chan = self.chan.get(node)
        if chan is not None and chan.group != FIXED and chan.repeat == 1:
            self.taps.append((chan.group, node.name, kind, chan.axis))

    def tie(self, group: int, tensor: str, axis: int, repeat: int = 1) -> None:
        self.entries.append((group, tensor, axis, repeat))

    def run(self) -> PermutationSpec:
        modules = dict(self.graph.named_modules())
        for node in self.graph.graph.nodes:
            if node.op == "placeholder":
                shape = _shape(node)
                self.chan[node] = _Chan(FIXED, 1 if shape and len(shape) > 1 else 0)
            elif node.op == "output":
                for arg in node.all_input_nodes:
                    if self.chan.get(arg) is not None:
                        self.groups.union(self.chan[arg].group, FIXED)
            elif node.op == "call_module":
                self.chan[node] = self.module(node, modules[node.target])
                self.tap(
                    node, "post" if isinstance(modules[node.target], _ACTIVATION_MODULES) else "pre"
                )
            elif node.op in ("call_function", "call_method"):
                self.chan[node] = self.function(node)
                name = _op_name(node)
                merge = name in _MERGE_NAMES or node.target in (operator.add, operator.mul)
                if name in _ACTIVATION_NAMES or merge:
                    self.tap(node, "post" if name in _ACTIVATION_NAMES else "stream")
            elif node.op == "get_attr":
                raise SpecError(
                    f"node {node.name!r} reads the tensor {node.target!r} directly (get_attr); "
                    "write the groups with PermutationSpec.from_dict"
                )
        return self.spec()

    def tensor_inputs(self, node: fx.Node) -> list[_Chan]:
        return [self.chan[a] for a in node.all_input_nodes if self.chan.get(a) is not None]

    def unknown(self, node: fx.Node, what: str) -> SpecError:
        return SpecError(
            f"node {node.name!r} ({what}) is an op the permutation tracer does not know; "
            "write the groups with PermutationSpec.from_dict, or fix the axes it touches"
        )

    def start(self, node: fx.Node, name: str) -> int:
        """The output group of module `name` (the same object on every call)."""
        if name not in self.module_out:
            self.module_out[name] = self.groups.new(name)
        return self.module_out[name]

    def feed(self, name: str, group: int) -> int:
        """Tie the input group of module `name` across its calls."""
        if name in self.module_in:
            return self.groups.union(self.module_in[name], group)
        self.module_in[name] = group
        return group

    def module(self, node: fx.Node, m: nn.Module) -> _Chan | None:
        name = str(node.target)
        prefix = f"{name}." if name else ""
        ins = self.tensor_inputs(node)
        x = ins[0] if ins else _Chan(FIXED, 1)
        shape = _shape(node)
        ndim = len(shape) if shape else 2
        if isinstance(m, nn.Linear):
            g_in = self.feed(name, x.group if x.axis == ndim - 1 else FIXED)
            self.tie(g_in, prefix + "weight", 1, x.repeat if x.axis == ndim - 1 else 1)
            out = self.start(node, name)
            self.tie(out, prefix + "weight", 0)
            if m.bias is not None:
                self.tie(out, prefix + "bias", 0)
            return _Chan(out, ndim - 1)
        if isinstance(m, nn.modules.conv._ConvNd):
            transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
            out_axis, in_axis = (1, 0) if transposed else (0, 1)
            if m.groups == 1:
                g_in = self.feed(name, x.group if x.axis == 1 else FIXED)
                self.tie(g_in, prefix + "weight", in_axis)
                out = self.start(node, name)
            elif m.groups == m.in_channels == m.out_channels and not transposed:
                out = self.feed(name, x.group if x.axis == 1 else FIXED)  # depthwise
            else:  # block permutations only: fixed here
                self.groups.union(x.group, FIXED)
                out = FIXED
            self.tie(out, prefix + "weight", out_axis)
            if m.bias is not None:
                self.tie(out, prefix + "bias", 0)
            return _Chan(out, 1)
        if isinstance(m, nn.modules.batchnorm._NormBase):  # BatchNorm, InstanceNorm
            g = self.feed(name, x.group if x.axis == 1 else FIXED)
            for t in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, t, None) is not None:
                    self.tie(g, prefix + t, 0)
            return _Chan(g, 1, x.repeat)
        if isinstance(m, nn.LayerNorm):
            first = ndim - len(m.normalized_shape)
            g = self.feed(name, x.group if x.axis == first else FIXED)
            for t in ("weight", "bias"):
                if getattr(m, t, None) is not None:
                    self.tie(g, prefix + t, 0, x.repeat if first == ndim - 1 else 1)
            return _Chan(g, x.axis, x.repeat)
        if isinstance(m, nn.GroupNorm):
            g = self.feed(name, x.group if m.num_groups == 1 and x.axis == 1 else FIXED)
            for t in ("weight", "bias"):
                if getattr(m, t, None) is not None:
                    self.tie(g, prefix + t, 0)
            return _Chan(g, 1)
        if isinstance(m, _PASS_MODULES):
            if isinstance(m, nn.PReLU) and m.num_parameters > 1:
                self.tie(x.group, prefix + "weight", 0)
            return _Chan(x.group, x.axis, x.repeat)
        if isinstance(m, nn.Flatten):
            return self.flatten(node, x, m.start_dim)
        leaf = not any(True for _ in m.parameters(recurse=False)) and not list(m.children())
        # a parameter-free leaf fx kept whole: allowed only if it keeps the shape
        if leaf and shape is not None and _shape(node.all_input_nodes[0]) == shape:
            return _Chan(x.group, x.axis, x.repeat)
        raise self.unknown(node, f"module {name} of type {type(m).__name__}")

    def flatten(self, node: fx.Node, x: _Chan, start_dim: int) -> _Chan:
        before = _shape(node.all_input_nodes[0])
        after = _shape(node)
        if before == after:
            return x
        if before is None or after is None or x.axis != 1 or len(after) != 2 or start_dim != 1:
            self.groups.union(x.group, FIXED)
            return _Chan(FIXED, len(after) - 1 if after else 1)
        return _Chan(x.group, 1, x.repeat * math.prod(before[2:]))

    def function(self, node: fx.Node) -> _Chan | None:
        name = _op_name(node)
        shape = _shape(node)
        ins = self.tensor_inputs(node)
        if shape is None or not ins or name in _SHAPE_NAMES:  # not a tensor, or no tensor input
            return None
        x = ins[0]
        if name in _PASS_NAMES:
            return _Chan(x.group, x.axis, x.repeat)
        if name in _MERGE_NAMES or node.target in (operator.add, operator.mul, operator.sub):
            group = x.group
            for other in ins[1:]:
                if _shape(node) != shape or other.axis != x.axis:
                    group = self.groups.union(group, FIXED)
                group = self.groups.union(group, other.group)
            return _Chan(group, x.axis, x.repeat)
        if name in _FLATTEN_NAMES:
            start = node.args[1] if name == "flatten" and len(node.args) > 1 else 1
            return self.flatten(node, x, int(node.kwargs.get("start_dim", start)))
        if name == "mean" or name == "sum":
            before = _shape(node.all_input_nodes[0])
            if before is not None and x.axis == 1 and len(shape) >= 2 and shape[1] == before[1]:
                return _Chan(x.group, 1, x.repeat if len(shape) == len(before) else 1)
        if name == "cat":
            for c in ins:
                self.groups.union(c.group, FIXED)
            return _Chan(FIXED, x.axis)
        raise self.unknown(node, f"{node.op} {name}")

    def spec(self) -> PermutationSpec:
        state = {
            k: v
            for k, v in self.model.state_dict().items()
            if not k.endswith("num_batches_tracked")
        }
        groups: dict[str, list[tuple[str, int, int]]] = {}
        sizes: dict[str, int] = {}
        touched: set[tuple[str, int]] = set()
        for group, tensor, axis, repeat in self.entries:
            root = self.groups.find(group)
            if root == FIXED or tensor not in state:
                continue
            name = self.groups.names[root]
            entry = (tensor, axis, repeat)
            if entry in groups.setdefault(name, []):
                continue
            groups[name].append(entry)
            units = state[tensor].shape[axis] // repeat
            if sizes.setdefault(name, units) != units:
                raise SpecError(f"traced group {name!r}: {tensor} axis {axis} has {units} units")
            touched.add((tensor, axis))
        fixed = [(t, a) for t, v in state.items() for a in range(v.ndim) if v.shape[a] > 1]
        spec = PermutationSpec(
            {g: e for g, e in groups.items() if sizes[g] > 1},
            {g: n for g, n in sizes.items() if n > 1},
            [ta for ta in fixed if ta not in touched],
            [name for name, _ in self.model.named_buffers()],
        )
        for group, node, kind, axis in self.taps:
            root = self.groups.find(group)
            name = self.groups.names[root]
            if root != FIXED and name in spec.groups:
                spec.taps.setdefault(name, []).append((node, kind, axis))
        return spec


def permutation_spec(
    model: nn.Module, example_input: Tensor, *, check: bool = True, seed: int = 0
) -> PermutationSpec:
    """The permutation groups of `model`, traced with torch.fx on `example_input` (a batch
    of two or more inputs, shapes as the data's). With `check`, random permutations are
    applied to a copy and its outputs compared with the model's, in eval and train mode
    (dropout off), to 1e-5 of the outputs' scale: a spec that changed the function raises."""
    spec = _Tracer(model, example_input).run()
    if check:
        check_spec(spec, model, example_input, seed=seed)
    return spec

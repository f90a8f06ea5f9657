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

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from modeconn.align.channels import Chan, Groups
from modeconn.align.ops import (
    ACTIVATION_MODULES,
    ACTIVATION_NAMES,
    FLATTEN_NAMES,
    MERGE_NAMES,
    PASS_MODULES,
    PASS_NAMES,
    SHAPE_NAMES,
)
from modeconn.align.spec import FIXED, PermutationSpec, SpecError, check_spec

# --------------------------------------------------------------------------- tracing


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
        self.groups = Groups()
        # (group, tensor, axis, repeat, offset, whole axis)
        self.entries: list[tuple[int, str, int, int, int, bool]] = []
        self.taps: list[tuple[int, str, str, int]] = []  # (group, node, kind, channel axis)
        self.chan: dict[fx.Node, Chan | None] = {}
        self.module_out: dict[str, int] = {}
        self.module_in: dict[str, int] = {}

    def tap(self, node: fx.Node, kind: str) -> None:
        """Record a node whose output carries a group on its channel axis (one unit per
        channel): "post" after a nonlinearity, "pre" after a layer, "stream" after a merge."""
        chan = self.chan.get(node)
        if chan is not None and chan.parts is None and chan.group != FIXED and chan.repeat == 1:
            self.taps.append((chan.group, node.name, kind, chan.axis))

    def tie(self, group: int, tensor: str, axis: int, repeat: int = 1) -> None:
        self.entries.append((group, tensor, axis, repeat, 0, True))

    def tie_parts(self, x: Chan, tensor: str, axis: int, scale: int = 1) -> None:
        """Tie `tensor`'s `axis` to x's channel groups: the whole axis to a plain group, one
        slice per part after a concatenation."""
        if x.parts is None:
            self.tie(x.group, tensor, axis, x.repeat * scale)
            return
        for group, repeat, offset in x.slices():
            self.entries.append((group, tensor, axis, repeat * scale, offset * scale, False))

    def fix(self, x: Chan | None) -> None:
        """Fix every group of x's channel axis (it will not be permuted)."""
        if x is not None:
            for group, _, _ in x.slices():
                self.groups.union(group, FIXED)

    def run(self) -> PermutationSpec:
        modules = dict(self.graph.named_modules())
        for node in self.graph.graph.nodes:
            if node.op == "placeholder":
                shape = _shape(node)
                self.chan[node] = Chan(FIXED, 1 if shape and len(shape) > 1 else 0)
            elif node.op == "output":
                for arg in node.all_input_nodes:
                    self.fix(self.chan.get(arg))
            elif node.op == "call_module":
                self.chan[node] = self.module(node, modules[node.target])
                self.tap(
                    node, "post" if isinstance(modules[node.target], ACTIVATION_MODULES) else "pre"
                )
            elif node.op in ("call_function", "call_method"):
                self.chan[node] = self.function(node)
                name = _op_name(node)
                merge = name in MERGE_NAMES or node.target in (operator.add, operator.mul)
                if name in ACTIVATION_NAMES or merge:
                    self.tap(node, "post" if name in ACTIVATION_NAMES else "stream")
            elif node.op == "get_attr":
                raise SpecError(
                    f"node {node.name!r} reads the tensor {node.target!r} directly (get_attr); "
                    "write the groups with PermutationSpec.from_dict"
                )
        return self.spec()

    def tensor_inputs(self, node: fx.Node) -> list[Chan]:
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

    def enter(self, name: str, x: Chan, usable: bool) -> Chan:
        """x as module `name` reads it: its groups if `usable` (the module acts on x's channel
        axis), else fixed. A module called more than once reads one group on every call; one
        that reads a concatenation is tied to it on its first call only (later calls fixed)."""
        if not usable:
            self.fix(x)
            x = Chan(FIXED, x.axis)
        if x.parts is not None:
            if name in self.module_in:
                self.groups.union(self.module_in[name], FIXED)
                self.fix(x)
                return Chan(FIXED, x.axis)
            self.module_in[name] = FIXED
            return x
        return Chan(self.feed(name, x.group), x.axis, x.repeat)

    def module(self, node: fx.Node, m: nn.Module) -> Chan | None:
        name = str(node.target)
        prefix = f"{name}." if name else ""
        ins = self.tensor_inputs(node)
        x = ins[0] if ins else Chan(FIXED, 1)
        shape = _shape(node)
        ndim = len(shape) if shape else 2
        if isinstance(m, nn.Linear):
            self.tie_parts(self.enter(name, x, x.axis == ndim - 1), prefix + "weight", 1)
            out = self.start(node, name)
            self.tie(out, prefix + "weight", 0)
            if m.bias is not None:
                self.tie(out, prefix + "bias", 0)
            return Chan(out, ndim - 1)
        if isinstance(m, nn.modules.conv._ConvNd):
            transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
            out_axis, in_axis = (1, 0) if transposed else (0, 1)
            if m.groups == 1:
                self.tie_parts(self.enter(name, x, x.axis == 1), prefix + "weight", in_axis)
                y = Chan(self.start(node, name), 1)
            elif m.groups == m.in_channels == m.out_channels and not transposed:
                y = self.enter(name, x, x.axis == 1).like(1)  # depthwise: channel by channel
            else:  # block permutations only: fixed here
                self.fix(x)
                y = Chan(FIXED, 1)
            self.tie_parts(y, prefix + "weight", out_axis)
            if m.bias is not None:
                self.tie_parts(y, prefix + "bias", 0)
            return y
        if isinstance(m, nn.modules.batchnorm._NormBase):  # BatchNorm, InstanceNorm
            y = self.enter(name, x, x.axis == 1)
            for t in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, t, None) is not None:
                    self.tie_parts(y, prefix + t, 0)
            return y
        if isinstance(m, nn.LayerNorm):
            first = ndim - len(m.normalized_shape)
            y = self.enter(name, x, x.axis == first and x.parts is None)
            for t in ("weight", "bias"):
                if getattr(m, t, None) is not None:
                    self.tie(y.group, prefix + t, 0, y.repeat if first == ndim - 1 else 1)
            return y
        if isinstance(m, nn.GroupNorm):
            y = self.enter(name, x, m.num_groups == 1 and x.axis == 1)
            for t in ("weight", "bias"):
                if getattr(m, t, None) is not None:
                    self.tie_parts(y, prefix + t, 0)
            return y.like(1)
        if isinstance(m, PASS_MODULES):
            if isinstance(m, nn.PReLU) and m.num_parameters > 1:
                self.tie_parts(x, prefix + "weight", 0)
            return x.like()
        if isinstance(m, nn.Flatten):
            return self.flatten(node, x, m.start_dim)
        leaf = not any(True for _ in m.parameters(recurse=False)) and not list(m.children())
        # a parameter-free leaf fx kept whole: allowed only if it keeps the shape
        if leaf and shape is not None and _shape(node.all_input_nodes[0]) == shape:
            return x.like()
        raise self.unknown(node, f"module {name} of type {type(m).__name__}")

    def flatten(self, node: fx.Node, x: Chan, start_dim: int) -> Chan:
        before = _shape(node.all_input_nodes[0])
        after = _shape(node)
        if before == after:
            return x
        if before is None or after is None or x.axis != 1 or len(after) != 2 or start_dim != 1:
            self.fix(x)
            return Chan(FIXED, len(after) - 1 if after else 1)
        return x.like(1, math.prod(before[2:]))

    def merge(self, chans: list[Chan]) -> Chan:
        """The channel groups of an elementwise op of tensors: one permutation for all (the
        same slices, part by part, after concatenations); anything else fixed."""
        x = chans[0]
        layout = [(n, r) for _, n, r in x.parts] if x.parts is not None else None
        same = all(c.axis == x.axis and c.repeat == x.repeat for c in chans) and all(
            (c.parts is None) == (x.parts is None)
            and (c.parts is None or [(n, r) for _, n, r in c.parts] == layout)
            for c in chans
        )
        if not same:
            for c in chans:
                self.fix(c)
            return Chan(FIXED, x.axis)
        if x.parts is None:
            group = x.group
            for c in chans[1:]:
                group = self.groups.union(group, c.group)
            return Chan(group, x.axis, x.repeat)
        parts = []
        for i, (group, n, r) in enumerate(x.parts):
            for c in chans[1:]:
                group = self.groups.union(group, c.parts[i][0])
            parts.append((group, n, r))
        return Chan(FIXED, x.axis, 1, tuple(parts))

    def concatenate(self, node: fx.Node) -> Chan:
        """torch.cat along the channel axis: the parts in order (a group twice: fixed); along
        another axis: a merge."""
        tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        chans = [self.chan.get(t) if isinstance(t, fx.Node) else None for t in tensors]
        shape = _shape(node)
        if not chans or any(c is None for c in chans) or shape is None:
            for c in chans:
                self.fix(c)
            return Chan(FIXED, 1)
        dim = int(dim) % len(shape)
        if all(c.axis != dim for c in chans):  # along another axis: elementwise for channels
            return self.merge(chans)
        if any(c.axis != dim for c in chans):
            for c in chans:
                self.fix(c)
            return Chan(FIXED, dim)
        parts: list[tuple[int, int, int]] = []
        for t, c in zip(tensors, chans, strict=True):
            if c.parts is not None:
                parts += c.parts
            else:
                parts.append((c.group, _shape(t)[dim] // c.repeat, c.repeat))
        roots = [self.groups.find(g) for g, _, _ in parts]
        for g in roots:
            if g != FIXED and roots.count(g) > 1:  # one permutation on two slices: fixed
                self.groups.union(g, FIXED)
        return Chan(FIXED, dim, 1, tuple(parts))

    def function(self, node: fx.Node) -> Chan | None:
        name = _op_name(node)
        shape = _shape(node)
        ins = self.tensor_inputs(node)
        if shape is None or not ins or name in SHAPE_NAMES:  # not a tensor, or no tensor input
            return None
        x = ins[0]
        if name in PASS_NAMES:
            return x.like()
        if name in MERGE_NAMES or node.target in (operator.add, operator.mul, operator.sub):
            return self.merge(ins)
        if name in FLATTEN_NAMES:
            start = node.args[1] if name == "flatten" and len(node.args) > 1 else 1
            return self.flatten(node, x, int(node.kwargs.get("start_dim", start)))
        if name == "mean" or name == "sum":
            before = _shape(node.all_input_nodes[0])
            if before is not None and x.axis == 1 and len(shape) >= 2 and shape[1] == before[1]:
                if len(shape) == len(before):
                    return x.like()
                parts = None if x.parts is None else tuple((g, n, 1) for g, n, _ in x.parts)
                return Chan(x.group, 1, 1, parts)
        if name == "cat":
            return self.concatenate(node)
        raise self.unknown(node, f"{node.op} {name}")

    def spec(self) -> PermutationSpec:
        state = {
            k: v
            for k, v in self.model.state_dict().items()
            if not k.endswith("num_batches_tracked")
        }
        groups: dict[str, list[tuple[str, int, int, int]]] = {}
        sizes: dict[str, int] = {}
        touched: set[tuple[str, int]] = set()
        for group, tensor, axis, repeat, offset, whole in self.entries:
            root = self.groups.find(group)
            if root == FIXED or tensor not in state:
                continue
            name = self.groups.names[root]
            entry = (tensor, axis, repeat, offset)
            if entry in groups.setdefault(name, []):
                continue
            groups[name].append(entry)
            touched.add((tensor, axis))
            if whole:
                units = state[tensor].shape[axis] // repeat
                if sizes.setdefault(name, units) != units:
                    raise SpecError(
                        f"traced group {name!r}: {tensor} axis {axis} has {units} units"
                    )
        for name, entries in groups.items():
            for tensor, axis, repeat, offset in entries:
                if offset + sizes[name] * repeat > state[tensor].shape[axis]:
                    raise SpecError(f"traced group {name!r}: a slice overruns {tensor} axis {axis}")
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

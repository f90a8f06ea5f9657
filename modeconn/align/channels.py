"""The tracer's bookkeeping: channel groups under union-find, and a tensor's channel axis
(one group, or the slices of a concatenation)."""

from __future__ import annotations

from dataclasses import dataclass

from modeconn.align.spec import FIXED


class Groups:
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
class Chan:
    """A tensor's channel axis: one group (each unit `repeat` consecutive entries), or, after
    a concatenation along it, `parts`: (group, units, repeat) slices in order."""

    group: int
    axis: int
    repeat: int = 1
    parts: tuple[tuple[int, int, int], ...] | None = None

    def slices(self) -> list[tuple[int, int, int]]:
        """(group, repeat, offset) of each part (one part for a plain channel axis)."""
        if self.parts is None:
            return [(self.group, self.repeat, 0)]
        out, offset = [], 0
        for group, units, repeat in self.parts:
            out.append((group, repeat, offset))
            offset += units * repeat
        return out

    def like(self, axis: int | None = None, scale: int = 1) -> Chan:
        """The same groups on `axis` (default: this one), each repeat times `scale`."""
        parts = None if self.parts is None else tuple((g, n, r * scale) for g, n, r in self.parts)
        return Chan(self.group, self.axis if axis is None else axis, self.repeat * scale, parts)

"""Event-time reorder buffer for closed sessions, one per segment.

Kafka interleaves partitions differently from a file, so stage 2 would see a segment's
sessions in a run-dependent order. The buffer holds them and releases, in
``(end_time, session_id)`` order, those the caller's event-time bound has passed (stage 2
derives the bound from every source partition's watermark, see ``watermarks``): any two
runs whose disorder stays within that bound feed the detectors the same sequence. A session
older than what was already released passes through at once and is counted as late
(nothing is dropped).

The buffer is also bounded in size: ``spill`` releases the earliest items beyond a capacity
before any bound has passed them (counted as spilled). A slow source partition (a backlog
read unevenly, a stalled producer) would otherwise grow the buffer without limit, and it is
stored in one table value: one Kafka message. What arrives behind a spilled item later is
late, so order then depends on arrival; the counts say when that happened.

>>> buf = ReorderState()
>>> buf, out = push(buf, (30, "c"), "C")
>>> buf, out = push(buf, (25, "a"), "A")
>>> out
[]
>>> buf, out = push(buf, (45, "d"), "D")
>>> release(buf, 35)[1]
['A', 'C']
>>> push(buf, (20, "z"), "Z")[1], buf.late        # behind what was released: passes, counted
(['Z'], 1)
>>> holds(buf, (45, "d")), holds(buf, (30, "c"))  # buffered; released
(True, False)
>>> drain(buf)[1]
['D']
>>> for t in (50, 70, 60):
...     buf, _ = push(buf, (t, "x"), t)
>>> spill(buf, 2)[1], buf.spilled, pending(buf)  # full: the earliest goes, bound or not
([50], 1, 2)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

SortKey = tuple[int, str]


@dataclass(slots=True)
class ReorderState:
    heap: list[tuple[int, str, Any]] = field(default_factory=list)
    watermark: int = 0
    released_upto: SortKey = (0, "")
    late: int = 0
    spilled: int = 0
    # derived (not stored): the keys buffered, so one pushed twice is seen (``holds``) and
    # never reaches the heap, whose items do not compare: (t, sid, item) twice raised TypeError
    keys: set[SortKey] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.heap and not self.keys:
            self.keys = {(t, sid) for t, sid, _ in self.heap}

    def to_dict(self) -> dict:
        return {"heap": [list(h) for h in sorted(self.heap)], "watermark": self.watermark,
                "released_upto": list(self.released_upto), "late": self.late, "spilled": self.spilled}

    @classmethod
    def from_dict(cls, d: dict) -> ReorderState:
        heap = [tuple(h) for h in d["heap"]]
        heapq.heapify(heap)
        return cls(heap=heap, watermark=d["watermark"],
                   released_upto=tuple(d["released_upto"]), late=d["late"],
                   spilled=d.get("spilled", 0))


def holds(state: ReorderState, key: SortKey) -> bool:
    """True if an item is buffered under ``key``."""
    return key in state.keys


def push(state: ReorderState, key: SortKey, item: Any) -> tuple[ReorderState, list]:
    """Buffer ``item`` under ``key`` (not buffered yet: see ``holds``); returns ``[item]``
    only if it is already late."""
    if key <= state.released_upto:
        state.late += 1
        return state, [item]
    heapq.heappush(state.heap, (key[0], key[1], item))
    state.keys.add(key)
    if key[0] > state.watermark:  # max(), without the builtin's call (once per session)
        state.watermark = key[0]
    return state, []


def release(state: ReorderState, upto_ns: int | None) -> tuple[ReorderState, list]:
    """Release, in order, every buffered item whose end time is <= ``upto_ns``."""
    return state, ([] if upto_ns is None else _release(state, upto_ns))


def _release(state: ReorderState, upto_ns: int) -> list:
    out = []
    while state.heap and state.heap[0][0] <= upto_ns:
        out.append(_pop(state))
    return out


def _pop(state: ReorderState) -> Any:
    """Take the earliest item out, and remember it as released."""
    t, sid, item = heapq.heappop(state.heap)
    state.released_upto = key = (t, sid)
    state.keys.discard(key)
    return item


def spill(state: ReorderState, capacity: int) -> tuple[ReorderState, list]:
    """Release, in order, the earliest items until at most ``capacity`` are buffered."""
    excess = len(state.heap) - capacity
    if excess <= 0:
        return state, []
    out = [_pop(state) for _ in range(excess)]
    state.spilled += excess
    return state, out


def drain(state: ReorderState) -> tuple[ReorderState, list]:
    """Release everything (end of a replay, or a flush)."""
    return state, _release(state, 2**63)


def pending(state: ReorderState) -> int:
    return len(state.heap)

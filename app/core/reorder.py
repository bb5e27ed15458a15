"""Event-time reorder buffer for closed sessions, one per segment.

Kafka interleaves partitions differently from a file, so stage 2 would see a segment's
sessions in a run-dependent order. The buffer releases them in ``(end_time, session_id)``
order once the segment's watermark (the latest end time seen) has passed them by
``lateness_ns``: any two runs whose disorder stays within the lateness feed the detectors
the same sequence. A session older than what was already released is passed through
at once and counted as late (nothing is dropped).

>>> buf = ReorderState()
>>> buf, out = push(buf, (30, "c"), "C", lateness_ns=10)
>>> buf, out2 = push(buf, (25, "a"), "A", lateness_ns=10)
>>> out, out2
([], [])
>>> buf, out = push(buf, (45, "d"), "D", lateness_ns=10)
>>> out
['A', 'C']
>>> drain(buf)[1]
['D']
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

    def to_dict(self) -> dict:
        return {"heap": [list(h) for h in sorted(self.heap)], "watermark": self.watermark,
                "released_upto": list(self.released_upto), "late": self.late}

    @classmethod
    def from_dict(cls, d: dict) -> ReorderState:
        heap = [tuple(h) for h in d["heap"]]
        heapq.heapify(heap)
        return cls(heap=heap, watermark=d["watermark"],
                   released_upto=tuple(d["released_upto"]), late=d["late"])


def push(state: ReorderState, key: SortKey, item: Any, *, lateness_ns: int) -> tuple[ReorderState, list]:
    """Add ``item`` (sorted by ``key``); return the items now safe to release, in order."""
    if key <= state.released_upto:
        state.late += 1
        return state, [item]
    heapq.heappush(state.heap, (key[0], key[1], item))
    state.watermark = max(state.watermark, key[0])
    return state, _release(state, state.watermark - lateness_ns)


def _release(state: ReorderState, upto_ns: int) -> list:
    out = []
    while state.heap and state.heap[0][0] <= upto_ns:
        t, sid, item = heapq.heappop(state.heap)
        state.released_upto = (t, sid)
        out.append(item)
    return out


def drain(state: ReorderState) -> tuple[ReorderState, list]:
    """Release everything (end of a replay, or a flush)."""
    return state, _release(state, 2**63)


def pending(state: ReorderState) -> int:
    return len(state.heap)

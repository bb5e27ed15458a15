"""Which open sessions have gone idle, in event time.

A lazy min-heap of (last_event_ns, session_id): every touch pushes a new entry; stale
entries (the session was touched again, or closed) are skipped when popped. The index is
in-memory only: after a restart the shell rebuilds it from the session table.

>>> idx = IdleIndex()
>>> idx.touch("a", 10); idx.touch("b", 20); idx.touch("a", 30)
>>> idx.expired(watermark_ns=45, timeout_ns=20)
['b']
>>> idx.expired(watermark_ns=100, timeout_ns=20)
['a']
>>> len(idx)
0
"""

from __future__ import annotations

import heapq


class IdleIndex:
    __slots__ = ("_heap", "_last")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._last: dict[str, int] = {}

    def touch(self, session_id: str, last_event_ns: int) -> None:
        if self._last.get(session_id) == last_event_ns:
            return
        self._last[session_id] = last_event_ns
        heapq.heappush(self._heap, (last_event_ns, session_id))
        if len(self._heap) > 4 * len(self._last) + 64:
            self._compact()

    def forget(self, session_id: str) -> None:
        self._last.pop(session_id, None)

    def expired(self, *, watermark_ns: int, timeout_ns: int) -> list[str]:
        """Pop every session whose last event is older than watermark - timeout."""
        out = []
        limit = watermark_ns - timeout_ns
        while self._heap and self._heap[0][0] < limit:
            last, sid = heapq.heappop(self._heap)
            if self._last.get(sid) == last:
                del self._last[sid]
                out.append(sid)
        return out

    def _compact(self) -> None:
        self._heap = [(t, s) for s, t in self._last.items()]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._last

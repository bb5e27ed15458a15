"""Which open sessions have gone idle, in event time.

A lazy min-heap: each session has at most one live heap entry, queued at a time no later
than its last event. The index does not keep the last events: it asks its owner
(``last_event(session id)``) when an entry comes up, and a session that is not idle after all
is queued again at its real last event. So the owner touches a session only when it starts
being tracked or its last event moves *earlier*; a later event (every span of an open
session) needs no call at all. Sessions come out in (last event, id) order, whatever the
history of touches. In-memory only: after a restart the shell rebuilds it from its session
entries.

>>> last = {"a": 10, "b": 20}
>>> idx = IdleIndex(last.__getitem__)
>>> idx.touch("a", 10); idx.touch("b", 20)
>>> last["a"] = 30  # later: no touch
>>> idx.expired(45, 20)
['b']
>>> idx.expired(100, 20)
['a']
>>> len(idx)
0
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

NEVER = 2**63  # later than any event time (unix nanoseconds fit in 63 bits)


class IdleIndex:
    __slots__ = ("_heap", "_last_event", "_queued", "earliest_ns")

    def __init__(self, last_event: Callable[[str], int]) -> None:
        self._heap: list[tuple[int, str]] = []
        # no session's last event is earlier (the heap's top, or past any time when empty):
        # nothing is idle while ``earliest_ns >= watermark - timeout``
        self.earliest_ns = NEVER
        self._last_event = last_event  # session id -> its last event time (the owner's)
        self._queued: dict[str, int] = {}  # tracked session id -> time of its live heap entry

    def touch(self, session_id: str, last_event_ns: int) -> None:
        """Track ``session_id``, whose last event is now ``last_event_ns`` (needed only when
        it was not tracked, or its last event moved earlier; see the module doc)."""
        queued = self._queued.get(session_id)
        if queued is None or last_event_ns < queued:  # the live entry must not be later
            self._queue(session_id, last_event_ns)

    def forget(self, session_id: str) -> None:
        self._queued.pop(session_id, None)

    def expired(self, watermark_ns: int, timeout_ns: int) -> list[str]:
        """Remove and return every session whose last event is older than
        ``watermark_ns - timeout_ns``, oldest first (ties by session id)."""
        heap = self._heap
        limit = watermark_ns - timeout_ns
        if not heap or heap[0][0] >= limit:  # the common case: nothing is due
            return []
        due = []
        while heap and heap[0][0] < limit:
            queued, sid = heapq.heappop(heap)
            if self._queued.get(sid) != queued:
                continue  # a stale entry: forgotten, or queued again since
            last = self._last_event(sid)
            if last < limit:
                del self._queued[sid]
                due.append((last, sid))
            else:
                self._queue(sid, last)
        self.earliest_ns = self._heap[0][0] if self._heap else NEVER
        due.sort()
        return [sid for _, sid in due]

    def pop_oldest(self) -> str | None:
        """Remove and return the tracked session with the earliest last event (ties by id),
        None if none is tracked.

        >>> last = {"a": 10, "b": 20}
        >>> idx = IdleIndex(last.__getitem__)
        >>> idx.touch("a", 10); idx.touch("b", 20)
        >>> last["a"] = 30  # later: no touch
        >>> idx.pop_oldest(), idx.pop_oldest(), idx.pop_oldest()
        ('b', 'a', None)
        """
        while self._heap:
            queued, sid = self._heap[0]
            if self._queued.get(sid) != queued:
                heapq.heappop(self._heap)  # a stale entry: forgotten, or queued again since
                continue
            last = self._last_event(sid)
            if last > queued:  # queued early (its later events were not touched): re-queue
                heapq.heappop(self._heap)
                self._queue(sid, last)
                continue
            heapq.heappop(self._heap)
            del self._queued[sid]
            self.earliest_ns = self._heap[0][0] if self._heap else NEVER
            return sid
        return None

    def _queue(self, session_id: str, at_ns: int) -> None:
        self._queued[session_id] = at_ns
        heapq.heappush(self._heap, (at_ns, session_id))
        if len(self._heap) > 4 * len(self._queued) + 64:
            self._heap = [(t, s) for s, t in self._queued.items()]
            heapq.heapify(self._heap)
        self.earliest_ns = self._heap[0][0]

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._queued

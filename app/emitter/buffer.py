"""The emitter's bounded, thread-safe record buffer and the counters that account for every span.

Every accepted span is in exactly one place, so at any snapshot
``queued == sent + dropped_buffer_full + dropped_send_failed + buffered + in_flight``.

>>> buf = SpanBuffer(capacity=2)
>>> [buf.push((b"k", bytes([i]))) for i in range(3)]   # (queued, buffer was empty)
[(True, True), (True, False), (True, False)]
>>> buf.take(10)            # the oldest record was dropped to make room
[(b'k', b'\\x01'), (b'k', b'\\x02')]
>>> buf.settle(sent=1, failed=1)
>>> s = buf.stats()
>>> s.queued, s.sent, s.dropped_buffer_full, s.dropped_send_failed, s.buffered, s.in_flight
(3, 1, 1, 1, 0, 0)
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

Record = tuple[bytes, bytes]  # (key, value)


@dataclass(frozen=True, slots=True)
class EmitterStats:
    """A consistent snapshot of an emitter's counters."""

    queued: int = 0  # accepted by emit()
    sent: int = 0  # acknowledged by Kafka
    dropped_buffer_full: int = 0  # oldest records pushed out of a full buffer
    dropped_send_failed: int = 0  # failed after the producer's retries, or unsent at close
    invalid: int = 0  # refused by validation (InvalidSpanError raised)
    buffered: int = 0  # waiting in the buffer
    in_flight: int = 0  # handed to the producer, not yet acknowledged or failed
    dropped_closed: int = 0  # emit() after close(): refused, never queued

    @property
    def dropped(self) -> int:
        """Accepted spans that will never reach Kafka."""
        return self.dropped_buffer_full + self.dropped_send_failed


@dataclass(slots=True)
class _Counters:
    queued: int = 0
    sent: int = 0
    dropped_buffer_full: int = 0
    dropped_send_failed: int = 0
    invalid: int = 0
    in_flight: int = 0
    dropped_closed: int = 0


class SpanBuffer:
    """Drop-oldest FIFO of encoded records; every method is O(1) or O(records moved).

    One lock guards the deque and the counters together; it is only ever held for a few
    list operations, so agents calling ``push`` never wait on Kafka.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer_size must be >= 1, got {capacity}")
        self._capacity = capacity
        self._items: deque[Record] = deque()
        self._lock = threading.Lock()
        self._n = _Counters()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def push(self, record: Record) -> tuple[bool, bool]:
        """Append ``record``; returns (queued, the buffer was empty before)."""
        with self._lock:
            if self._closed:
                self._n.dropped_closed += 1
                return False, False
            if len(self._items) >= self._capacity:
                self._items.popleft()
                self._n.dropped_buffer_full += 1
            self._items.append(record)
            self._n.queued += 1
            return True, len(self._items) == 1

    def note_invalid(self) -> None:
        with self._lock:
            self._n.invalid += 1

    def take(self, max_records: int) -> list[Record]:
        """Remove up to ``max_records`` oldest records; they count as in flight."""
        with self._lock:
            n = min(max_records, len(self._items))
            popleft = self._items.popleft
            batch = [popleft() for _ in range(n)]
            self._n.in_flight += n
            return batch

    def give_back(self, records: list[Record]) -> None:
        """Return records the producer never took to the front; the oldest go if there is no room."""
        if not records:
            return
        with self._lock:
            self._n.in_flight -= len(records)
            room = max(0, self._capacity - len(self._items))
            keep = records[len(records) - room :] if room else []
            self._n.dropped_buffer_full += len(records) - len(keep)
            self._items.extendleft(reversed(keep))

    def settle(self, sent: int, failed: int) -> None:
        """Account in-flight records Kafka acknowledged (``sent``) or gave up on (``failed``)."""
        with self._lock:
            self._n.in_flight -= sent + failed
            self._n.sent += sent
            self._n.dropped_send_failed += failed

    def close(self) -> None:
        """Refuse (and count) further pushes."""
        with self._lock:
            self._closed = True

    def abandon(self) -> int:
        """Count everything still buffered or in flight as failed; returns how many."""
        with self._lock:
            lost = len(self._items) + self._n.in_flight
            self._items.clear()
            self._n.in_flight = 0
            self._n.dropped_send_failed += lost
            return lost

    def idle(self) -> bool:
        """Nothing buffered and nothing in flight."""
        with self._lock:
            return not self._items and self._n.in_flight == 0

    def stats(self) -> EmitterStats:
        with self._lock:
            n = self._n
            return EmitterStats(
                queued=n.queued,
                sent=n.sent,
                dropped_buffer_full=n.dropped_buffer_full,
                dropped_send_failed=n.dropped_send_failed,
                invalid=n.invalid,
                buffered=len(self._items),
                in_flight=n.in_flight,
                dropped_closed=n.dropped_closed,
            )

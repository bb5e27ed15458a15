"""Event-time progress of stage 1's partitions, as seen by one stage-2 partition.

Stage 1 sends each stage-2 partition a heartbeat with its own partition's watermark (the
latest span end time it has folded). Stage 2 may release a buffered session only when every
live source has passed it: ``release_upto = min(source watermarks) - lateness``. A source
that fell more than ``idle_ns`` behind the most advanced one (in event time) counts as idle
and is ignored, so an empty partition cannot stall the pipeline. Until ``expected`` sources
have reported, nothing is released (unless the others are idle by that rule).

>>> wm = SourceWatermarks(expected=2, idle_ns=100)
>>> wm.update(0, 50); wm.release_upto(lateness_ns=10) is None
True
>>> wm.update(1, 40); wm.release_upto(lateness_ns=10)
30
>>> wm.update(0, 500); wm.release_upto(lateness_ns=10)     # source 1 is idle now
490
"""

from __future__ import annotations


class SourceWatermarks:
    __slots__ = ("expected", "idle_ns", "_wm", "_first")

    def __init__(self, *, expected: int, idle_ns: int) -> None:
        self.expected, self.idle_ns = expected, idle_ns
        self._wm: dict[int, int] = {}
        self._first: int | None = None  # earliest watermark ever reported

    def update(self, source: int, watermark_ns: int) -> None:
        if watermark_ns > self._wm.get(source, -1):
            self._wm[source] = watermark_ns
        if self._first is None or watermark_ns < self._first:
            self._first = watermark_ns

    def release_upto(self, *, lateness_ns: int) -> int | None:
        if not self._wm:
            return None
        top = max(self._wm.values())
        live = [w for w in self._wm.values() if top - w <= self.idle_ns]
        if len(self._wm) < self.expected and top - self._first <= self.idle_ns:
            return None  # a source that has not reported yet may still be behind
        return min(live) - lateness_ns

"""Event-time progress of stage 1's partitions, as seen by one stage-2 partition.

Stage 1 sends each stage-2 partition a heartbeat with its own partition's watermark (the
latest span end time it has folded). Stage 2 may release a buffered session only when every
live source has passed it: ``release_upto = min(source watermarks) - lateness``. Until
``expected`` sources have reported, nothing is released.

A source that is really quiet must not stall the pipeline forever, so it counts as *idle* and
is ignored when both hold:

* it is more than ``idle_ns`` behind the most advanced source in event time, and
* it has sent no heartbeat for ``quiet_ns`` of record time: the processing time of the
  records this partition reads, passed in with ``tick`` (the worker uses their Kafka
  timestamps). A pause of the whole partition (nothing read from any source: the pipeline was
  down or restarting) counts as at most ``quiet_ns / 4`` of silence, so a source is not
  singled out for not having resumed as fast as another.

Event time alone is not enough: while a backlog is read (after a restart or a rebalance) a
second of processing skew between partitions is minutes of event time, so a partition that is
merely read a little later than the others would count as idle and its sessions would be
folded late, out of order. A partition being read keeps sending heartbeats; a quiet one does
not. A source that has not reported at all is idle by the same rule, with its event time
taken as the earliest watermark reported and its silence counted from the first heartbeat.

>>> wm = SourceWatermarks(expected=2, idle_ns=100, quiet_ns=40)
>>> wm.tick(0); wm.update(0, 50); wm.release_upto(lateness_ns=10) is None
True
>>> wm.tick(1); wm.update(1, 40); wm.release_upto(lateness_ns=10)
30
>>> wm.tick(2); wm.update(0, 500); wm.release_upto(lateness_ns=10)   # far behind, not quiet
30
>>> for t in range(3, 50, 5): wm.tick(t); wm.update(0, 500 + t)
>>> wm.release_upto(lateness_ns=10)                                   # quiet too: idle now
538
"""

from __future__ import annotations


class SourceWatermarks:
    __slots__ = ("expected", "idle_ns", "quiet_ns", "_wm", "_beat", "_first", "_since", "_now",
                 "_clock", "_ck")

    def __init__(self, *, expected: int, idle_ns: int, quiet_ns: int) -> None:
        self.expected, self.idle_ns, self.quiet_ns = expected, idle_ns, quiet_ns
        self._wm: dict[int, int] = {}
        self._beat: dict[int, int] = {}  # source -> _clock at its latest heartbeat
        self._first: int | None = None  # earliest watermark ever reported
        self._since: int | None = None  # _clock at the first heartbeat
        self._now: int | None = None  # latest record time ticked
        self._clock = 0  # record time elapsed, each pause counted as at most quiet_ns / 4
        self._ck: dict[int, int] = {}  # source -> watermark of its last durable checkpoint

    def tick(self, now_ns: int) -> None:
        """A record of this partition was read at record time ``now_ns``."""
        if self._now is None:
            self._now = now_ns
        elif now_ns > self._now:
            self._clock += min(now_ns - self._now, -(-self.quiet_ns // 4))
            self._now = now_ns

    def update(self, source: int, watermark_ns: int, checkpointed_ns: int | None = None) -> None:
        """A heartbeat of ``source`` (after ``tick`` with its record time)."""
        if watermark_ns > self._wm.get(source, -1):
            self._wm[source] = watermark_ns
        if checkpointed_ns is not None and checkpointed_ns > self._ck.get(source, -1):
            self._ck[source] = checkpointed_ns
        self._beat[source] = self._clock
        if self._first is None or watermark_ns < self._first:
            self._first = watermark_ns
        if self._since is None:
            self._since = self._clock

    def checkpointed(self) -> dict[int, int]:
        """Source -> the watermark its last durable stage-1 checkpoint had reached (sessions
        closed below it are never published again)."""
        return self._ck

    def release_upto(self, *, lateness_ns: int) -> int | None:
        if not self._wm:
            return None
        top = max(self._wm.values())
        if len(self._wm) < self.expected and not self._idle(top - self._first, self._since):
            return None  # a source that has not reported yet may still be behind
        live = [w for s, w in self._wm.items() if not self._idle(top - w, self._beat[s])]
        return min(live) - lateness_ns

    def to_dict(self) -> dict:
        """What the heartbeats said so far, as plain data (the settings are not in it).

        >>> wm = SourceWatermarks(expected=2, idle_ns=100, quiet_ns=40)
        >>> wm.tick(5); wm.update(1, 70)
        >>> again = SourceWatermarks.from_dict(wm.to_dict(), expected=2, idle_ns=100, quiet_ns=40)
        >>> again.to_dict() == wm.to_dict()
        True
        """
        d = {"wm": [[s, w] for s, w in self._wm.items()],
             "beat": [[s, c] for s, c in self._beat.items()],
             "first": self._first, "since": self._since, "now": self._now, "clock": self._clock}
        if self._ck:
            d["ck"] = [[s, w] for s, w in self._ck.items()]
        return d

    @classmethod
    def from_dict(cls, d: dict, *, expected: int, idle_ns: int, quiet_ns: int) -> SourceWatermarks:
        wm = cls(expected=expected, idle_ns=idle_ns, quiet_ns=quiet_ns)
        wm._wm = {int(s): int(w) for s, w in d["wm"]}
        wm._beat = {int(s): int(c) for s, c in d["beat"]}
        wm._first, wm._since, wm._now = d["first"], d["since"], d["now"]
        wm._clock = int(d["clock"])
        wm._ck = {int(s): int(w) for s, w in d.get("ck", ())}
        return wm

    def _idle(self, behind_ns: int, heard_at: int) -> bool:
        return behind_ns > self.idle_ns and self._clock - heard_at >= self.quiet_ns

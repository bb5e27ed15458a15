"""Stage 2 step: a segment's closed sessions -> drift and assumption alerts.

Shared by the worker and replay. A segment's entry holds the event-time reorder buffer (so
every run feeds the detectors the same sequence), the segment monitor's state (sketches,
detectors, episodes) and the assumption tracker's state. ``dump``/``load`` turn an entry
into the bytes a Faust table stores (JSON, zlib-compressed: a Kafka message is at most 1 MB
and a held backlog makes the buffer large); replay keeps entries as objects and never encodes.

The reorder buffer holds the live ``SessionShape`` (``_Held``): a session is turned into plain
data only if the entry is dumped while it waits (once, then kept), never on the fold path.
The bytes ``dump`` writes are unchanged (a buffered session as
``model_dump(mode="json", exclude_defaults=True)``), and the fold sees exactly what it saw
when the buffer held that plain data and re-validated it on release: a shape that would not
come back bit for bit (a -0.0 where the default is 0.0, extra fields) is still buffered as
plain data (``tests/unit/test_stage2_fastpaths.py``).
"""

from __future__ import annotations

import copy
import math
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from app.core import copies, reorder
from app.core.copies import RECENT_SESSIONS
from app.core.limits import REORDER_MAX_HELD
from app.core.segment import MonitorConfig, SegmentMonitor, SegmentState
from app.core.session import SessionValues
from app.core.stats import MetricStats
from app.loop.tracker import AssumptionTracker, TrackerState
from schemas.alert import Alert
from schemas.session import SessionShape

GAUGE_EVERY = 25  # sessions between quantile-gauge refreshes (reading sketches costs more than folding)


@dataclass(slots=True)
class SegmentEntry:
    buffer: reorder.ReorderState
    monitor: SegmentState
    tracker: TrackerState
    # source partition -> last offset folded into this entry: a redelivered record at or
    # below it is already in the state (exactly-once results from at-least-once input)
    applied: dict[int, int] = field(default_factory=dict)
    # session id -> end time of the latest RECENT_SESSIONS sessions released, oldest first
    # (ordered: the oldest goes in O(1); a dict's first key is found by a scan over the slots
    # its deletions left, until it is resized)
    recent: OrderedDict[str, int] = field(default_factory=OrderedDict)
    # span partition -> session id -> (end time, watermark it closed at) of the sessions
    # accepted that its stage 1 may still publish again (no durable checkpoint passed them)
    may_repeat: dict[int, OrderedDict[str, tuple[int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.recent.__class__ is not OrderedDict:
            self.recent = OrderedDict(self.recent)

    def seen(self, partition: int, offset: int) -> bool:
        return offset <= self.applied.get(partition, -1)

    def mark(self, partition: int, offset: int) -> None:
        if offset > self.applied.get(partition, -1):
            self.applied[partition] = offset


@dataclass(slots=True)
class Step2Result:
    entry: SegmentEntry
    alerts: list[Alert] = field(default_factory=list)
    released: list[SessionShape] = field(default_factory=list)
    spilled: int = 0  # of ``released``: sessions the full reorder buffer let go before their bound
    late: int = 0  # of ``released``: the one that arrived behind what was released already
    copies: int = 0  # the session applied was a copy stage 1 published again: dropped
    quantiles: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    episodes: dict[str, bool] = field(default_factory=dict)
    assumptions: dict[str, bool] = field(default_factory=dict)


class SegmentStep:
    """Owns no state: every method maps an entry (and input) to a new entry and outputs.

    ``gauges=False`` leaves ``Step2Result.quantiles`` / ``episodes`` / ``assumptions`` empty
    (reading every metric's quantiles costs more than folding; replay never reads them);
    nothing else changes.
    """

    def __init__(self, monitor: SegmentMonitor, *, lateness_ns: int,
                 tracker: AssumptionTracker | None = None, gauges: bool = True,
                 max_held: int = REORDER_MAX_HELD) -> None:
        self.monitor, self.lateness_ns, self.tracker = monitor, lateness_ns, tracker
        self.gauges, self.max_held = gauges, max_held

    def without_gauges(self) -> SegmentStep:
        """A copy of this step with ``gauges=False`` (for a caller that reads only alerts)."""
        step = copy.copy(self)
        step.gauges = False
        return step

    @classmethod
    def from_settings(cls, settings, monitor_config: MonitorConfig | None = None) -> SegmentStep:
        tracker = None
        if settings.assumptions_file is not None:
            from app.loop.assumptions import load_assumptions

            tracker = AssumptionTracker(load_assumptions(settings.assumptions_file))
        if monitor_config is None:
            n = settings.baseline_sessions
            monitor_config = MonitorConfig(baseline_n=n, rebaseline_n=max(100, n // 2))
        return cls(SegmentMonitor(monitor_config), lateness_ns=int(settings.reorder_lateness_s * 1e9),
                   tracker=tracker, max_held=settings.reorder_max_held)

    # --- entries <-> bytes ------------------------------------------------------------
    def new(self, shape: SessionShape) -> SegmentEntry:
        return SegmentEntry(reorder.ReorderState(), self.monitor.initial(shape.segment), TrackerState())

    @staticmethod
    def dump(entry: SegmentEntry) -> bytes:
        buf = entry.buffer
        plain = reorder.ReorderState([(t, sid, _plain(item)) for t, sid, item in buf.heap],
                                     buf.watermark, buf.released_upto, buf.late, buf.spilled)
        raw = orjson.dumps({"reorder": plain.to_dict(), "monitor": entry.monitor.to_dict(),
                            "tracker": entry.tracker.to_dict(),
                            "applied": {str(p): o for p, o in entry.applied.items()},
                            "recent": list(entry.recent.items()),
                            **copies.may_repeat_doc(entry.may_repeat)})
        # zlib, fastest level: an entry's reorder buffer holds every session the slowest span
        # partition has not passed (a backlog read unevenly: hundreds), and one Kafka message
        # is at most 1 MB; this JSON of shapes and sketches packs 4x and more
        return zlib.compress(raw, 1)

    @staticmethod
    def document(stored: bytes) -> dict:
        """The JSON document of a stored entry: ``dump``'s bytes, or an entry stored before
        they were compressed (b"{"; a zlib stream starts with 0x78)."""
        return orjson.loads(stored if stored[:1] == b"{" else zlib.decompress(stored))

    @classmethod
    def load(cls, stored: bytes) -> SegmentEntry:
        d = cls.document(stored)
        return SegmentEntry(reorder.ReorderState.from_dict(d["reorder"]),
                            SegmentState.from_dict(d["monitor"]), TrackerState.from_dict(d["tracker"]),
                            {int(p): o for p, o in d.get("applied", {}).items()},
                            OrderedDict(d.get("recent", ())), copies.may_repeat_of(d))

    # --- steps ------------------------------------------------------------------------
    def apply(self, entry: SegmentEntry | None, shape: SessionShape | SessionValues,
              watermark_ns: int | None, origin: tuple[int, int] | None = None,
              checkpointed: Mapping[int, int] | None = None) -> Step2Result:
        """Buffer ``shape``; release what all sources' ``watermark_ns`` - lateness has passed.

        ``shape`` may be stage 1's unvalidated ``SessionValues`` (replay, in-process): the
        fold reads only its attributes, which are the same; it is validated only if an entry
        holding it is dumped. ``released`` then holds it as it came.

        ``origin``: the span partition and watermark stage 1 closed it at (its record's
        ``schemas.closed_wm`` header), ``checkpointed``: each span partition's last durable
        checkpoint watermark (the heartbeats'). With them a copy stage 1 publishes again is
        dropped however many sessions came between (see ``app.core.copies``)."""
        entry = entry if entry is not None else self.new(shape)
        if (origin is not None and copies.repeated(entry, shape, origin, checkpointed or {})
                or copies.duplicate(entry, shape)):
            return Step2Result(entry=entry, copies=1)  # published again: folded once already
        if origin is not None:
            copies.remember_origin(entry, shape, origin, checkpointed or {})
        key = (shape.end_time_unix_nano, shape.session_id)
        entry.buffer, late = reorder.push(entry.buffer, key, _held(shape))
        entry.buffer, ready = reorder.release(entry.buffer, self._bound(watermark_ns))
        if len(entry.buffer.heap) > self.max_held:
            # the slowest source holds the bound back this far: go on unordered (and say so)
            entry.buffer, spilled = reorder.spill(entry.buffer, self.max_held)
            res = self._fold(entry, late + ready + spilled)
            res.spilled, res.late = len(spilled), len(late)
            return res
        res = self._fold(entry, late + ready)
        res.late = len(late)
        return res

    def advance(self, entry: SegmentEntry, watermark_ns: int | None) -> Step2Result:
        """Event time moved on (a heartbeat): release what is now safe."""
        entry.buffer, ready = reorder.release(entry.buffer, self._bound(watermark_ns))
        return self._fold(entry, ready)

    def drain(self, entry: SegmentEntry) -> Step2Result:
        entry.buffer, ready = reorder.drain(entry.buffer)
        return self._fold(entry, ready)

    @staticmethod
    def pending(entry: SegmentEntry) -> int:
        return reorder.pending(entry.buffer)

    def _bound(self, watermark_ns: int | None) -> int | None:
        return None if watermark_ns is None else watermark_ns - self.lateness_ns

    def _fold(self, entry: SegmentEntry, ready: list) -> Step2Result:
        res = Step2Result(entry=entry)
        if not ready:
            return res
        monitor, tracker = self.monitor, self.tracker
        recent = entry.recent
        for item in ready:
            shape = item.shape if item.__class__ is _Held else SessionShape.model_validate(item)
            sid = shape.session_id
            recent.pop(sid, None)  # a reused id with another end time is a new session
            recent[sid] = shape.end_time_unix_nano
            if len(recent) > RECENT_SESSIONS:
                recent.popitem(last=False)
            entry.monitor, alerts = monitor.fold(entry.monitor, shape)
            if alerts:
                res.alerts.extend(alerts)
            res.released.append(shape)
            if tracker is not None and tracker.applicable(shape.segment):
                entry.tracker, broken = tracker.observe(
                    entry.tracker, shape.segment, _LazyStats(monitor, entry.monitor),
                    shape.end_time_unix_nano, shape.session_id)
                if broken:
                    res.alerts.extend(broken)
        if self.gauges:
            self._gauges(entry, res)
        return res

    def _gauges(self, entry: SegmentEntry, res: Step2Result) -> None:
        if entry.monitor.sessions % GAUGE_EVERY < len(res.released) or res.alerts:
            for metric, s in self.monitor.stats(entry.monitor).items():
                res.quantiles[metric] = (s.p50, s.p95, s.p99)
            res.episodes = self.monitor.episodes(entry.monitor)
        if self.tracker is not None:
            res.assumptions = {k: bool(v) for k, v in self.tracker.gauges(entry.tracker).items()}


class _LazyStats(Mapping):
    """Per-metric stats computed on first access (an assumption reads one or two metrics).

    ``read(metric, stat)`` is ``(n, stats[metric].get(stat))`` without computing the other
    statistics (the tracker's check needs only these two)."""

    __slots__ = ("_monitor", "_state", "_cache")

    def __init__(self, monitor: SegmentMonitor, state: SegmentState) -> None:
        self._monitor, self._state, self._cache = monitor, state, {}

    def read(self, metric: str, stat: str) -> tuple[int, float] | None:
        """``(n, value of stat)`` of ``metric``'s current window; None when it has no values."""
        found = self._cache.get(metric)
        if found is not None:
            return found.n, found.get(stat)
        ms = (self._state.metrics or {}).get(metric)
        if ms is None or not ms.window.n:
            return None
        return ms.window.n, ms.window.read(stat)

    def __getitem__(self, metric: str) -> MetricStats:
        if metric not in self._cache:
            self._cache[metric] = self._monitor.metric_stats(self._state, metric)
        found = self._cache[metric]
        if found is None:
            raise KeyError(metric)
        return found

    def __iter__(self):
        return iter(self._state.metrics or {})

    def __len__(self) -> int:
        return len(self._state.metrics or {})


def _compact(shape: SessionShape | SessionValues) -> dict:
    """The shape as plain data for the reorder buffer (defaults left out: smaller state)."""
    if shape.__class__ is SessionValues:
        shape = shape.shape()
    return shape.model_dump(mode="json", exclude_defaults=True)


class _Held:
    """A buffered session: the live shape, and its plain data once it was dumped."""

    __slots__ = ("shape", "data")

    def __init__(self, shape: SessionShape | SessionValues) -> None:
        self.shape, self.data = shape, None


def _held(shape: SessionShape | SessionValues) -> _Held | dict:
    """What the reorder buffer holds for ``shape``: the live shape when re-validating its plain
    data would give it back bit for bit, else (the rare case) that plain data, as always."""
    # A validated shape comes back from _compact except for: a -0.0 where the default is 0.0
    # (dropped as "default", read back as 0.0), and extra fields (kept, but as JSON values;
    # SessionValues has none).
    if (math.copysign(1.0, shape.retry_rate) < 0.0 or math.copysign(1.0, shape.complexity) < 0.0
            or (shape.__class__ is not SessionValues and shape.__pydantic_extra__)):
        return _compact(shape)
    return _Held(shape)


def _plain(item) -> dict:
    """A buffered item as the plain data the state bytes hold."""
    if item.__class__ is not _Held:
        return item
    if item.data is None:
        item.data = _compact(item.shape)
    return item.data

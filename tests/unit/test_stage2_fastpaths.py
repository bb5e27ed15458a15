"""Stage 2's fast paths change no result and no stored byte.

* The reorder buffer holds live ``SessionShape``s; the state bytes ``SegmentStep.dump`` writes
  must stay those of the plain-data buffer (``golden_stage2.json``: hashes of a worker-like and
  a replay-like transcript over a fixed workload, generated with the stage-2 modules of commit
  5fff25f, before the change, by running this file as a script; regenerated since when the
  gate's exact short-window test made alerts earlier by design, when a metric's state
  gained its change hint, when the log-location test made a context_utilization alert
  come earlier, before three other metrics' alerts, and when a segment's state gained
  ``changed_at``, its alerts unchanged; and when ``recent`` came to hold the sessions
  released rather than those arrived: the worker hash with ``recent`` left out, and the
  alerts, unchanged), and equal the bytes of the same entry
  holding plain data (the old representation).
* ``RollingWindow.read`` is ``stats().get`` bit for bit; the tracker's incremental ``observe``
  is the straightforward one (kept below as the reference); ADWIN called directly is
  ``ADWIN.update``; ``QuantileCusum.update_key`` is ``update``; ``gauges=False`` changes
  nothing but the gauges.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import random
import struct
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from river.drift import ADWIN

from app.core import reorder
from app.core.drift import _EMPTY_BAND, AdwinDetector, QuantileCusum, Signal
from app.core.metricwatch import MetricState, Origin, observe
from app.core.reference import Reference
from app.core.segment import MonitorConfig, SegmentMonitor
from app.core.session import SessionValues
from app.core.sketch import Sketch
from app.core.stage1 import SessionStep
from app.core.stage2 import SegmentEntry, SegmentStep
from app.core.stats import STAT_NAMES, MetricStats
from app.core.windows import RollingWindow
from app.loop.assumptions import Assumption, check, load_assumptions
from app.loop.tracker import (
    AssumptionTracker,
    Episode,
    TrackerConfig,
    TrackerState,
    broken_alert,
    resolved_alert,
)
from app.replay import Replayer
from app.simulate import iter_records
from schemas.common import Segment
from schemas.session import SessionShape
from schemas.span import SpanEvent

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden_stage2.json")
SEC = 10**9


# --- a fixed workload: the stage-2 calls of a replay, with odd shapes mixed in -----------------
class _Recorder:
    """Stands in for the replay's SegmentStep and records every call (then delegates)."""

    def __init__(self, step) -> None:
        self.step, self.calls = step, []

    def apply(self, entry, shape, wm):
        # the replay hands stage 2 unvalidated SessionValues; the workload keeps the shapes
        self.calls.append(("apply", shape.segment.key, shape.shape(), wm))
        return self.step.apply(entry, shape, wm)

    def advance(self, entry, wm):
        self.calls.append(("advance", entry.monitor.segment.key, None, wm))
        return self.step.advance(entry, wm)

    def drain(self, entry):
        self.calls.append(("drain", entry.monitor.segment.key, None, None))
        return self.step.drain(entry)

    def pending(self, entry):
        return self.step.pending(entry)


def _odd(shape: SessionShape, i: int) -> SessionShape:
    """Every 37th shape a -0.0 complexity / retry rate, every 101st an extra field: shapes
    whose plain data does not re-validate to the same values."""
    if i % 101 == 0:
        return SessionShape.model_validate({**shape.model_dump(), "x_note": [i, "n", 0.5]})
    if i % 37 == 0:
        return shape.model_copy(update={"complexity": -0.0} if i % 2 else {"retry_rate": -0.0})
    return shape


def make_step(gauges: bool = True) -> SegmentStep:
    tracker = AssumptionTracker(load_assumptions(ROOT / "examples" / "assumptions.yaml"))
    step = SegmentStep(SegmentMonitor(MonitorConfig(baseline_n=150, rebaseline_n=150)),
                       lateness_ns=30 * SEC, tracker=tracker)
    if not gauges:
        step.gauges = False
    return step


def workload(sessions: int = 1500) -> list[tuple]:
    step = make_step()
    rec = _Recorder(step)
    rep = Replayer(SessionStep(idle_timeout_ns=60 * SEC), step)
    rep.s2 = rec
    for rec_ in iter_records("dev-to-support", seed=3, sessions=sessions):
        rep.feed(SpanEvent.model_validate(rec_))
    rep.finish()
    out, i = [], 0
    for op, key, shape, wm in rec.calls:
        if shape is not None:
            i += 1
            shape = _odd(shape, i)
        out.append((op, key, shape, wm))
    return out


def run(step: SegmentStep, calls, *, dump_every: int = 0, reload_every: int = 0,
        legacy: bool = False) -> tuple[str, list]:
    """Drive ``step`` like a worker (dumps, reloads from the dumped bytes); a hash of every
    output and dumped byte, and the alerts. ``legacy``: also check each dump equals the dump
    of the entry with its buffer as plain data (the old representation)."""
    h, entries, alerts = hashlib.sha256(), {}, []
    for n, (op, key, shape, wm) in enumerate(calls, start=1):
        if op == "apply":
            res = step.apply(entries.get(key), shape, wm)
        elif op == "advance":
            res = step.advance(entries[key], wm)
        else:
            res = step.drain(entries[key])
        entries[key] = res.entry
        alerts += [a.model_dump_json() for a in res.alerts]
        h.update(orjson.dumps([op, key, [a.model_dump_json() for a in res.alerts],
                               [_validated(s).model_dump_json() for s in res.released],
                               res.quantiles, res.episodes, res.assumptions]))
        if dump_every and n % dump_every == 0:
            for k in sorted(entries):
                raw = step.dump(entries[k])
                if legacy:
                    assert raw == step.dump(_as_plain(entries[k]))
                h.update(k.encode() + zlib.decompress(raw))  # the JSON: zlib's bytes may vary
                if reload_every and n % reload_every == 0:
                    entries[k] = step.load(raw)
    for k in sorted(entries):
        h.update(k.encode() + zlib.decompress(step.dump(entries[k])))
    return h.hexdigest(), alerts


def _validated(shape) -> SessionShape:
    return shape.shape() if isinstance(shape, SessionValues) else shape


def _values(shape: SessionShape) -> SessionValues | SessionShape:
    """The SessionValues stage 1 would have closed ``shape`` into (one with extra fields,
    which stage 1 never makes, stays a shape)."""
    if shape.__pydantic_extra__:
        return shape
    return SessionValues({k: getattr(shape, k) for k in SessionShape.model_fields
                          if k != "schema_version"})


def _as_plain(entry: SegmentEntry) -> SegmentEntry:
    """The entry with each buffered session as the plain data the old buffer held."""
    buf = entry.buffer
    heap = [(t, sid, item if isinstance(item, dict) else
             item.shape.model_dump(mode="json", exclude_defaults=True)) for t, sid, item in buf.heap]
    return SegmentEntry(reorder.ReorderState(heap, buf.watermark, buf.released_upto, buf.late),
                        entry.monitor, entry.tracker, entry.applied, entry.recent)


def transcripts() -> dict:
    calls = workload()
    worker, alerts = run(make_step(), calls, dump_every=23, reload_every=23 * 7)
    replay, alerts_r = run(make_step(gauges=False), calls)
    assert alerts == alerts_r
    return {"worker": worker, "replay_alerts": hashlib.sha256("\n".join(alerts_r).encode()).hexdigest(),
            "alerts": len(alerts)}


@pytest.fixture(scope="module")
def calls():
    return workload()


def test_state_bytes_and_results_equal_the_plain_data_buffer(calls):
    golden = json.loads(GOLDEN.read_text())
    worker, alerts = run(make_step(), calls, dump_every=23, reload_every=23 * 7, legacy=True)
    kinds = {json.loads(a)["kind"] for a in alerts}
    assert {"drift", "assumption_broken"} <= kinds  # the workload reaches the detectors
    assert len(alerts) == golden["alerts"]
    assert worker == golden["worker"]
    _, alerts_r = run(make_step(gauges=False), calls)
    assert hashlib.sha256("\n".join(alerts_r).encode()).hexdigest() == golden["replay_alerts"]


def test_unvalidated_values_give_the_same_results_and_bytes(calls):
    """Stage 2 fed stage 1's SessionValues (replay) gives what it gives fed the validated
    shapes: alerts, released sessions, gauges and every dumped byte (a -0.0 among them)."""
    as_values = [(op, key, None if shape is None else _values(shape), wm)
                 for op, key, shape, wm in calls]
    assert sum(isinstance(c[2], SessionValues) for c in as_values) > 1000
    assert run(make_step(), as_values, dump_every=23, reload_every=23 * 7) == run(
        make_step(), calls, dump_every=23, reload_every=23 * 7)
    assert run(make_step(gauges=False), as_values) == run(make_step(gauges=False), calls)


def test_gauges_off_changes_only_the_gauges(calls):
    on, off = make_step(), make_step().without_gauges()
    assert off.gauges is False and on.gauges is True
    e_on, e_off = {}, {}
    for op, key, shape, wm in calls[:600]:
        if op != "apply":
            continue
        r_on, r_off = on.apply(e_on.get(key), shape, wm), off.apply(e_off.get(key), shape, wm)
        e_on[key], e_off[key] = r_on.entry, r_off.entry
        assert r_on.alerts == r_off.alerts and r_on.released == r_off.released
        assert not (r_off.quantiles or r_off.episodes or r_off.assumptions)
        assert on.dump(r_on.entry) == off.dump(r_off.entry)


def test_replay_drives_a_copy_without_gauges():
    step = make_step()
    rep = Replayer(SessionStep(idle_timeout_ns=SEC), step)
    assert rep.s2.gauges is False and step.gauges is True
    assert rep.s2.monitor is step.monitor and rep.s2.tracker is step.tracker


def test_odd_shapes_fold_as_their_plain_data_would():
    """-0.0 where the default is 0.0 is read back as 0.0 from plain data: the fold must see 0.0."""
    step_live, step_plain = make_step(), make_step()
    e_live = e_plain = None
    seg = Segment(agent="support")
    for i in range(400):
        shape = SessionShape(session_id=f"s{i}", segment=seg, start_time_unix_nano=i * SEC,
                             end_time_unix_nano=i * SEC + 1, closed_by="session_end", spans=3,
                             fanout=i % 5, complexity=-0.0 if i % 3 else 0.25,
                             retry_rate=-0.0 if i % 2 else 0.5)
        plain = SessionShape.model_validate(shape.model_dump(mode="json", exclude_defaults=True))
        e_live = step_live.apply(e_live, shape, (i - 40) * SEC).entry
        e_plain = step_plain.apply(e_plain, plain, (i - 40) * SEC).entry
    assert step_live.dump(e_live) == step_plain.dump(e_plain)
    w = e_live.monitor.metrics["complexity"].window
    assert all(math.copysign(1.0, v) > 0 for v in w.last(w.n))


# --- RollingWindow.read ----------------------------------------------------------------------
SPECIAL = [0.0, -0.0, 1.0, 2.0, 3.0, 1e-10, 5e-324, 1e-9, 0.5, 1e300]


def _value(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.15:
        return rng.choice(SPECIAL)
    if r < 0.5:
        return float(rng.randint(0, 30))
    if r < 0.8:
        return rng.lognormvariate(5, 2)
    return rng.random()


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


@pytest.mark.parametrize("seed", range(40))
def test_window_read_is_stats_get_bit_for_bit(seed):
    rng = random.Random(seed)
    w = RollingWindow(rng.randint(1, 60), rng.choice([0.01, 0.05]), rng.choice([2048, 8]))
    with pytest.raises(ValueError):
        w.read("p50")
    for _ in range(rng.randint(1, 500)):
        w.add(_value(rng))
        if rng.random() < 0.3:
            stat = rng.choice(STAT_NAMES)
            assert _bits(w.read(stat)) == _bits(w.stats().get(stat)), stat
        if rng.random() < 0.02:
            w = RollingWindow.from_dict(orjson.loads(orjson.dumps(w.to_dict())))
    full = w.stats()
    assert [_bits(w.read(s)) for s in STAT_NAMES] == [_bits(full.get(s)) for s in STAT_NAMES]
    with pytest.raises(KeyError):
        w.read("p80")


@pytest.mark.parametrize("seed", range(8))
def test_window_read_every_value_follows_the_quantiles(seed):
    """Reads after every value (the tracker's pattern), across jumps, evictions, collapses."""
    rng = random.Random(100 + seed)
    size = rng.choice([5, 64, 1024])
    w = RollingWindow(size, 0.01, rng.choice([2048, 40]))  # 40: low buckets collapse
    quiet = RollingWindow(size, 0.01, w.sketch.max_buckets)
    stats = rng.sample(["p50", "p90", "p95", "p99"], 2)
    level = 5.0
    for i in range(4 * size + 300):
        if rng.random() < 0.01:
            level = rng.choice([0.0, 1.0, 5.0, 200.0, 1e5])  # the distribution jumps
        x = 0.0 if rng.random() < 0.1 else round(level * rng.lognormvariate(0, 1), rng.choice([0, 3]))
        w.add(x)
        quiet.add(x)
        for stat in stats:
            assert _bits(w.read(stat)) == _bits(w.stats().get(stat)), (i, stat)
    assert w.to_dict() == quiet.to_dict()  # reading leaves the stored form alone


# --- the tracker ----------------------------------------------------------------------------
def reference_observe(t: AssumptionTracker, state, segment, stats, at_ns, session_id):
    """The tracker's ``observe`` before it was made incremental (the definition)."""
    episodes, alerts, judged = dict(state.open), [], set(state.judged)
    for a in tuple(a for a in t.assumptions if a.segment.matches(segment)):
        key = f"{a.id}@{segment.key}"
        stat = stats.get(a.metric)
        if stat is not None and stat.n >= t.config.min_samples:
            judged.add(key)
        ep, alert = _reference_step(t, a, episodes.get(key), segment, stat, at_ns, session_id)
        if ep is None:
            episodes.pop(key, None)
        else:
            episodes[key] = ep
        if alert is not None:
            alerts.append(alert)
    return TrackerState(open=episodes, judged=tuple(sorted(judged))), alerts


def _reference_step(t, a, ep, segment, stats, at_ns, session_id):
    res = check(a, stats)
    if res.holds is None or res.n < t.config.min_samples:
        return ep, None
    if ep is None:
        if res.holds:
            return None, None
        alert = broken_alert(a, segment, stats, at_ns, session_id)
        return Episode(alert_id=alert.alert_id, since=at_ns), alert
    if not a.holds_for(res.observed, abs(a.bound) * t.config.margin):
        return replace(ep, ok_streak=0), None
    if ep.ok_streak + 1 < t.config.resolve_after:
        return replace(ep, ok_streak=ep.ok_streak + 1), None
    return None, resolved_alert(a, segment, stats, ep, at_ns, session_id)


class _Reading(dict):
    """Stats with the lazy ``read`` stage 2 passes (checks ``read`` is not the dict path)."""

    def read(self, metric, stat):
        found = self.get(metric)
        return None if found is None else (found.n, found.get(stat))


def _assumptions() -> tuple[Assumption, ...]:
    def a(i, seg, metric, stat, op, bound):
        return Assumption(id=f"a{i}", segment=seg, metric=metric, stat=stat, op=op, bound=bound,
                          why="test")
    sup, sub = {"agent": "support"}, {"agent": "support", "task_type": "refund"}
    return (a(1, sup, "context_tokens", "p95", "<=", 100), a(2, sup, "fanout", "p50", "<=", 3),
            a(3, sub, "fanout", "mean", ">", 1), a(4, {"agent": "other"}, "fanout", "max", "<", 9),
            a(5, sup, "complexity", "p99", "<", 0.5), a(6, sup, "fanout", "p90", ">=", 0))


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_tracker_observe_equals_the_reference(seed, lazy):
    rng = random.Random(seed)
    cfg = TrackerConfig(min_samples=rng.choice([0, 5, 30]), resolve_after=rng.choice([1, 3]))
    t = AssumptionTracker(_assumptions(), cfg)
    segs = [Segment(agent="support"), Segment(agent="support", task_type="refund"),
            Segment(agent="other"), Segment(agent="none")]
    states = {s.key: TrackerState() for s in segs}
    for i in range(600):
        seg = rng.choice(segs)
        stats = (_Reading if lazy else dict)()
        for metric, scale in (("context_tokens", 100), ("fanout", 3), ("complexity", 0.5)):
            if rng.random() < 0.9:
                v = [rng.uniform(0, 2 * scale) for _ in range(4)]
                stats[metric] = MetricStats(rng.choice([0, 3, 10, 40]), *sorted(v), max(v) * 1.1,
                                            max(v) * 1.2)
        before = states[seg.key]
        got, alerts = t.observe(before, seg, stats, i, f"s{i}")
        want, want_alerts = reference_observe(t, before, seg, stats, i, f"s{i}")
        assert got == want and got.to_dict() == want.to_dict()
        assert alerts == want_alerts
        if got == before:
            assert got is before  # unchanged: not rebuilt
        states[seg.key] = got
    assert any(s.open for s in states.values())


def test_tracker_normalises_an_unsorted_judged_like_the_reference():
    t = AssumptionTracker(_assumptions(), TrackerConfig(min_samples=5))
    state = TrackerState(judged=("z@x", "a2@support", "a2@support"))
    seg = Segment(agent="support")
    stats = {"fanout": MetricStats(10, 1, 1, 1, 1, 1, 1)}
    assert t.observe(state, seg, stats, 1, "s") == reference_observe(t, state, seg, stats, 1, "s")
    none = Segment(agent="none")
    assert t.observe(state, none, {}, 1, "s") == reference_observe(t, state, none, {}, 1, "s")


def test_applicable_is_per_agent_and_task_type_not_per_key():
    t = AssumptionTracker(_assumptions())
    slash = Segment(agent="support/refund")  # same .key as support + refund, other segment
    assert t.applicable(slash) == ()
    assert [a.id for a in t.applicable(Segment(agent="support", task_type="refund"))] == [
        "a1", "a2", "a3", "a5", "a6"]


# --- detectors -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_adwin_detector_is_adwin_update(seed):
    rng = random.Random(seed)
    det, plain = AdwinDetector(delta=0.002, clock=1), ADWIN(delta=0.002, clock=1)
    hits = 0
    for i in range(3000):
        x = rng.gauss(3 if (i // 700) % 2 else 9, 1) if seed % 2 else float(rng.randint(0, 5) + i // 1000)
        sig = det.update(x)
        plain.update(x)
        assert (sig is not None) == plain.drift_detected
        if sig is not None:
            hits += 1
            assert sig.age == int(plain.width)
        assert det.estimation == plain.estimation
    assert hits
    assert pickle.dumps(det._adwin) == pickle.dumps(plain)


@pytest.mark.parametrize("seed", range(4))
def test_observe_adwin_is_adwin_update(seed):
    # observe's ADWIN (AdwinDetector.update, river's helper called directly) is river's
    # ADWIN.update: the same state after every value
    rng = random.Random(seed)
    cfg = MonitorConfig(baseline_n=200, rebaseline_n=200)
    st, plain = MetricState.initial(cfg), ADWIN(delta=cfg.adwin_delta, clock=cfg.adwin_clock)
    hits = 0
    for i in range(3000):
        x = rng.gauss(3 if (i // 700) % 2 else 9, 1) if seed % 2 else float(rng.randint(0, 5) + i // 1000)
        observe(st, abs(x), "fanout", Origin("seg", f"s{i}", i, i), cfg)
        plain.update(abs(x))
        adwin = st.free[0]._adwin
        assert (adwin.drift_detected, adwin.width) == (plain.drift_detected, plain.width)
        hits += plain.drift_detected
    assert hits
    assert pickle.dumps(st.free[0]._adwin) == pickle.dumps(plain)


def test_quantile_cusum_update_key_is_update():
    rng = random.Random(5)
    ref = Reference.from_sketch(Sketch.of([rng.lognormvariate(3, 1) for _ in range(500)] + [0.0] * 20))
    a, b = QuantileCusum.from_reference(ref), QuantileCusum.from_reference(ref)
    sk = Sketch()
    for i in range(4000):
        x = rng.lognormvariate(3 + (i > 2000), 1) if i % 50 else 0.0
        assert a.update(x) == b.update_key(sk.key(x))
    assert a.to_state() == b.to_state()


def _cusum_reference(det: QuantileCusum, k: int):
    """``QuantileCusum.update_key`` as first written: one walk over the levels in order."""
    if det.quiet_lo <= k <= det.quiet_hi:
        return None
    out = None
    for i, (name, key, direction, hit, miss) in enumerate(det.levels):
        s = det.s[i] + (hit if (k > key if direction > 0 else k < key) else miss)
        if s <= 0.0:
            det.s[i], det.run[i] = 0.0, 0
            continue
        det.run[i] += 1
        if s >= det.h:
            out = out or Signal(name, det.run[i])
            s, det.run[i] = 0.0, 0
        det.s[i] = s
    det.quiet_lo, det.quiet_hi = _EMPTY_BAND if any(det.s) else det._band
    return out


@pytest.mark.parametrize("seed", range(6))
def test_quantile_cusum_walk_is_the_reference_walk(seed):
    # levels split by direction, at-rest levels skipped on a miss: same signals, same state
    # (also from loaded states holding 0.0 / -0.0, and with a positive miss: nothing skipped)
    rng = random.Random(seed)
    ref = Reference.from_sketch(Sketch.of([rng.lognormvariate(3, 1) for _ in range(500)]))
    a = QuantileCusum.from_reference(ref, h=rng.choice([3.0, 10.0]))
    if seed % 3 == 1:
        a = QuantileCusum.from_state({**a.to_state(), "s": [-0.0, 0.0, 0, 1.5, 0.0],
                                      "run": [0, 0, 0, 2, 0]})
    if seed % 3 == 2:
        levels = a.to_state()["levels"]
        levels[1][4] = 0.05  # a miss that raises the CUSUM
        a = QuantileCusum.from_state({**a.to_state(), "levels": levels})
    b = QuantileCusum.from_state(a.to_state())
    sk = Sketch()
    signals = 0
    for i in range(3000):
        x = rng.lognormvariate(3 + (i // 700) % 2, 1) if i % 40 else 0.0
        k = sk.key(x)
        got, want = a.update_key(k), _cusum_reference(b, k)
        assert got == want
        assert orjson.dumps(a.to_state()) == orjson.dumps(b.to_state())
        signals += got is not None
    assert signals


def test_segment_state_key_is_derived_not_stored():
    from app.core.segment import SegmentState
    st = SegmentMonitor().initial(Segment(agent="a", task_type="t"))
    back = SegmentState.from_dict(orjson.loads(orjson.dumps(st.to_dict())))
    assert st.key == back.key == "a/t" and "key" not in st.to_dict() and back == st


if __name__ == "__main__":  # regenerate the golden hashes (only with the reference code!)
    sys.path.insert(0, str(ROOT))
    print(json.dumps(transcripts(), indent=1))

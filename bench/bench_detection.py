"""Detection quality: delay (sessions of the changed segment) and false alarms per scenario,
loadshape's segment monitor vs plain ``river.drift.ADWIN(clock=1)`` on the same values; and
1,000,000 stationary sessions with zero alerts.

Sessions come from the simulator (``app.simulate``), are folded into SessionShapes by the
stage-1 core and fed, per segment in (end time, session id) order as the reorder buffer would,
to ``SegmentMonitor`` (the worker's configuration: ``SegmentStep.from_settings``) and to one
ADWIN per (segment, metric). A detection counts for a changed metric if it is the first one at
or after the change; false alarms are detections before the change or in unchanged segments.

The 1M-session run resamples (with replacement, seeded) the shapes of a 30,000-session
``steady`` simulation - the same stationary distribution, without folding 11M spans.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict

from river.drift import ADWIN

from app.core import episodes, metricwatch
from app.core import session as core
from app.core.stage2 import SegmentStep
from app.settings import Settings
from app.simulate import build, iter_sessions
from bench import evidence_limits
from bench.common import Row, verdict
from schemas.session import METRICS
from schemas.span import SpanEvent

SCENARIOS = ("steady", "dev-to-support", "context-creep", "retry-storm", "tail-only")
SEEDS = (7, 8, 9)
ADWIN_DELTA = 0.002  # river's default
STRICT_DELTA = 1e-5  # 0 false alarms over 300k resampled steady sessions (19 at the default)
# scenario -> (changed metrics, rows of bench/evidence_limits.py): how early a calibrated
# test could be at all, beside the detectors' delays
LIMITS = {"tail-only": (("context_tokens", "context_utilization"), evidence_limits.tail_rows),
          "context-creep": (("context_tokens", "context_utilization"),
                            evidence_limits.location_rows)}
LABELS = ("loadshape", "ADWIN(clock=1)", f"ADWIN(clock=1, delta={STRICT_DELTA:g})")


def shapes_of(scenario: str, sessions: int, change_at: int, seed: int = 7):
    """{segment key: [(shape, phase)]} in (end, session id) order."""
    sc = build(scenario, sessions=sessions, change_at=change_at)
    out = defaultdict(list)
    for sim in iter_sessions(sc, seed):
        state = None
        for rec in sim.spans:
            state = core.fold(state, SpanEvent.model_validate(rec))
        shape = core.close(state, "session_end")
        out[shape.segment.key].append((shape, sim.truth.phase))
    for seg in out:
        out[seg].sort(key=lambda sp: (sp[0].end_time_unix_nano, sp[0].session_id))
    return sc, out


def detections(monitor, seq, deltas=(ADWIN_DELTA,)):
    """Per metric: indices (in the segment's sequence) of monitor drift alerts, and of
    ADWIN(clock=1) drifts for each delta in ``deltas`` -> (ours, [theirs per delta])."""
    state = monitor.initial(seq[0][0].segment)
    ours = defaultdict(list)
    theirs = [defaultdict(list) for _ in deltas]
    detectors = [{m: ADWIN(delta=d, clock=1) for m in METRICS} for d in deltas]
    for i, (shape, _phase) in enumerate(seq):
        state, alerts = monitor.fold(state, shape)
        for a in alerts:
            if a.kind == "drift":
                ours[a.metric].append(i)
        for m in METRICS:
            x = shape.metric(m)
            if x is not None:
                for found, dets in zip(theirs, detectors, strict=True):
                    d = dets[m]
                    d.update(x)
                    if d.drift_detected:
                        found[m].append(i)
    return ours, theirs


def score(sc, by_segment, found, change_idx):
    """({(segment, metric): delay, None if missed} of the changed metrics, false alarms)."""
    delays, false = {}, 0
    changed = {s.key: s for s in sc.segments if s.after is not None and sc.change_at < sc.sessions}
    for seg, per_metric in found.items():
        spec = changed.get(seg)
        cut = change_idx.get(seg, len(by_segment[seg]))
        for idxs in per_metric.values():
            false += sum(1 for i in idxs if spec is None or i < cut)
        if spec is not None:
            for metric in spec.metrics:
                after = [i for i in per_metric.get(metric, []) if i >= cut]
                delays[(seg, metric)] = after[0] - cut if after else None
    return delays, false


def beyond_max(by_segment, delays, change_idx) -> list[int]:
    """Per detection in ``delays``: post-change values above the pre-change max, up to and
    including the detecting session (how much tail evidence the detector acted on)."""
    out = []
    for (seg, metric), delay in sorted(delays.items()):
        if delay is None:
            continue
        cut = change_idx[seg]
        xs = [shape.metric(metric) for shape, _ in by_segment[seg]]
        top = max((x for x in xs[:cut] if x is not None), default=0.0)
        out.append(sum(1 for x in xs[cut:cut + delay + 1] if x is not None and x > top))
    return out


def head_to_head(ours: list[int | None], theirs: list[int | None]) -> str:
    """Paired delays (same seed, segment, metric; None: missed): who alerted first.

    >>> head_to_head([5, 30, None, None, 8], [7, 20, 9, None, None])
    'loadshape first or same 2, ADWIN first 2 (of which loadshape missed 1), neither 1'
    """
    pairs = list(zip(ours, theirs, strict=True))
    first = sum(a is not None and (b is None or a <= b) for a, b in pairs)
    later = sum(a is not None and b is not None and a > b for a, b in pairs)
    only_them = sum(a is None and b is not None for a, b in pairs)
    return (f"loadshape first or same {first}, ADWIN first {later + only_them} "
            f"(of which loadshape missed {only_them}), neither {len(pairs) - first - later - only_them}")


def scenario_rows(monitor, sessions: int, change_at: int, seeds: tuple[int, ...] = SEEDS) -> list[Row]:
    """Per scenario and detector: changed metrics detected and delays, pooled over ``seeds``
    (one simulation is one draw of each delay; three show how much they vary)."""
    rows = []
    for name in SCENARIOS:
        pooled = {label: ([], 0) for label in LABELS}
        evidence = []  # ADWIN(clock=1): values above the pre-change max when it fired
        limits = []  # evidence-limit cases (seed, metric, values, change index), see LIMITS
        limit_delays = {label: [] for label in LABELS}  # the detectors' delays on those cases
        for seed in seeds:
            sc, by_segment = shapes_of(name, sessions, change_at, seed)
            change_idx = {seg: next((i for i, (_, ph) in enumerate(seq) if ph == "after"), len(seq))
                          for seg, seq in by_segment.items()}
            if name in LIMITS:
                limits += changed_values(sc, by_segment, change_idx, seed, LIMITS[name][0])
            found = {label: {} for label in LABELS}
            for seg, seq in by_segment.items():
                ours, theirs = detections(monitor, seq, (ADWIN_DELTA, STRICT_DELTA))
                for label, per_metric in zip(LABELS, (ours, *theirs), strict=True):
                    found[label][seg] = per_metric
            for label in LABELS:
                delays, false = score(sc, by_segment, found[label], change_idx)
                d0, f0 = pooled[label]
                pooled[label] = (d0 + [delays[k] for k in sorted(delays)], f0 + false)
                if label == LABELS[1]:
                    evidence += beyond_max(by_segment, delays, change_idx)
                if name in LIMITS:  # in changed_values' order
                    limit_delays[label] += [delays[k] for k in sorted(delays)
                                            if k[1] in LIMITS[name][0]]
        for label, (all_delays, false) in pooled.items():
            expected, delays = len(all_delays), [d for d in all_delays if d is not None]
            if expected:
                value = (f"{len(delays)}/{expected} changed metrics detected; delay median "
                         f"{statistics.median(delays) if delays else '-'}, max "
                         f"{max(delays) if delays else '-'} sessions")
            else:
                value = "no change in this scenario"
            rows.append(Row("4 Detection", f"{name}: {label}", value,
                            note=f"false alarms {false}; seeds {', '.join(map(str, seeds))}"))
        if pooled[LABELS[0]][0]:
            rows.append(Row("4 Detection", f"{name}: loadshape vs {LABELS[1]}, per changed metric "
                            "and seed", head_to_head(pooled[LABELS[0]][0], pooled[LABELS[1]][0]),
                            note=f"{LABELS[1]} fired after {sorted(evidence)} post-change values "
                                 "above the pre-change max"))
        if limits:
            order = ", ".join(f"{seed} {metric}" for seed, metric, _, _ in limits)
            rows.append(Row("4 Detection", f"{name}: delays per seed and metric", "; ".join(
                f"{label} {limit_delays[label]}" for label in LABELS[:2]), note=order))
            rows += LIMITS[name][1](limits, monitor.config.baseline_n)
    return rows


def changed_values(sc, by_segment, change_idx, seed: int,
                   metrics: tuple[str, ...]) -> list[evidence_limits.Case]:
    """(seed, metric, the segment's values, change index) of the changed ``metrics``."""
    return [(seed, metric, [shape.metric(metric) for shape, _ in by_segment[spec.key]],
             change_idx[spec.key])  # in ``score``'s order
            for spec in sorted(sc.segments, key=lambda s: s.key) if spec.after is not None
            for metric in sorted(spec.metrics) if metric in metrics]


def steady_pool(pool_sessions: int = 30_000) -> dict[str, tuple[float, list]]:
    """{segment key: (weight, [SessionShape])} of a ``steady`` simulation."""
    sc, by_segment = shapes_of("steady", pool_sessions, pool_sessions)
    weights = {s.key: s.weight for s in sc.segments}
    return {seg: (weights[seg], [sh for sh, _ in by_segment[seg]]) for seg in sorted(by_segment)}


def resampled(pool: dict[str, tuple[float, list]], n: int, seed: int):
    """``n`` (segment, shape) drawn with replacement from ``pool``, one second apart."""
    segs = list(pool)
    weights = [pool[s][0] for s in segs]
    rng = random.Random(seed)
    t = pool[segs[0]][1][0].end_time_unix_nano
    for i in range(n):
        seg = rng.choices(segs, weights=weights)[0]
        t += 1_000_000_000
        yield seg, rng.choice(pool[seg][1]).model_copy(update={"end_time_unix_nano": t,
                                                                "session_id": f"m{i}"})


def steady_million(monitor, n: int, pool: dict | None = None,
                   seed: int = 11) -> tuple[int, list[int], float]:
    """(monitor drift alerts, ADWIN detections per delta of ``LABELS``, seconds) over ``n``
    resampled steady sessions."""
    pool = pool or steady_pool()
    states = {seg: monitor.initial(shapes[0].segment) for seg, (_, shapes) in pool.items()}
    deltas = (ADWIN_DELTA, STRICT_DELTA)
    adwins = {(seg, m): [ADWIN(delta=d, clock=1) for d in deltas] for seg in pool for m in METRICS}
    ours, theirs = 0, [0] * len(deltas)
    began = time.perf_counter()
    for seg, shape in resampled(pool, n, seed):
        states[seg], alerts = monitor.fold(states[seg], shape)
        ours += sum(a.kind == "drift" for a in alerts)
        for m in METRICS:
            x = shape.metric(m)
            if x is not None:
                for j, d in enumerate(adwins[(seg, m)]):
                    d.update(x)
                    theirs[j] += d.drift_detected
    return ours, theirs, time.perf_counter() - began


def hinted_steady(monitor, n: int, pool: dict, seed: int = 13,
                  every: int = 300) -> tuple[int, int, float]:
    """(drift alerts, hinted metric-periods, seconds): steady sessions in which, every
    ``every`` sessions of a segment, all its watched metrics are told a change began now,
    as a drift confirmed on another metric would; every alert is a false one."""
    states = {seg: monitor.initial(shapes[0].segment) for seg, (_, shapes) in pool.items()}
    alerts = hinted = 0
    began = time.perf_counter()
    for seg, shape in resampled(pool, n, seed):
        state, out = monitor.fold(states[seg], shape)
        states[seg] = state
        alerts += sum(a.kind == "drift" for a in out)
        if state.sessions % every == 0 and state.sessions >= monitor.config.baseline_n + every:
            for ms in state.metrics.values():
                hinted += ms.episode.phase == episodes.WATCH and ms.change_hint is None
                metricwatch.hint(ms, 0)
    return alerts, hinted, time.perf_counter() - began


def run(*, sessions: int = 16_000, change_at: int = 10_000, million: int = 1_000_000,
        million_seeds: tuple[int, ...] = (11, 12)) -> tuple[list[Row], dict]:
    monitor = SegmentStep.from_settings(Settings()).monitor
    rows = scenario_rows(monitor, sessions, change_at)
    extra = {}
    pool = steady_pool()
    for seed in million_seeds:
        ours, theirs, secs = steady_million(monitor, million, pool, seed=seed)
        rows.append(Row("4 Detection", f"{million:,} steady sessions (seed {seed}): loadshape drift alerts",
                        str(ours), "0", verdict(ours == 0),
                        f"{secs:.0f} s, resampled from a 30,000-session steady run"))
        for label, count in zip(LABELS[1:], theirs, strict=True):
            rows.append(Row("4 Detection", f"{million:,} steady sessions (seed {seed}): {label} detections",
                            str(count), note="12 metrics x 3 segments, same values"))
        extra[f"million_ours_{seed}"], extra[f"million_adwin_{seed}"] = ours, theirs
    hinted_n = max(million // 10, 20_000)
    alerts, periods, secs = hinted_steady(monitor, hinted_n, pool)
    rows.append(Row("4 Detection", f"{hinted_n:,} steady sessions, every 300 of a segment all its "
                    "metrics hinted as if a drift had been confirmed: drift alerts", str(alerts), "0",
                    verdict(alerts == 0), f"{periods:,} hinted metric-periods; {secs:.0f} s"))
    extra["hinted_alerts"], extra["hinted_periods"] = alerts, periods
    return rows, extra

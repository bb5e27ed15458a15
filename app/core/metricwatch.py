"""Stage-2 fold of one (segment, metric): window, baseline, detectors, gate, episode.

Per value: add it to the current window and feed ADWIN (it needs no baseline and runs for
the stream's life); while a baseline is being collected, add the value there (and freeze
it when full); otherwise also feed the baseline-bound detectors. A detector signal opens
(or refreshes) a *candidate*, which the gate judges on the latest sessions at once and
every ``check_every`` values until it is confirmed or ``patience`` values passed without
a new signal (in a cool-down it is held, not judged). A confirmed drift goes to the
episode logic (``episodes``): open an episode (-> ``drift``) and re-baseline, seeding the
new baseline with the confirmed post-change sample. Returns ``Outcome``s, which
``segment`` turns into alerts.

A drift confirmed on one metric dates a change of the whole segment: ``hint`` tells the
segment's other metrics (in ``watch``) where it began, and for ``patience`` values they are
also judged on the window since then, at every value, by ``gate.corroborate_counts`` (a given
start needs less evidence than a searched one; the per-aspect counts are kept up to date, so
a look costs O(1)). A workload change rarely moves one metric alone: retries raise fan-out
and LLM calls too.

``observe`` updates the state in place (a fold over 12 metrics per session must not copy
sketches) and returns what happened.

>>> cfg = MonitorConfig(baseline_n=200, rebaseline_n=200)
>>> st = MetricState.initial(cfg)
>>> def at(i):
...     return Origin("seg", f"s{i}", detected_at=i, now=i)
>>> outs = [observe(st, 3.0 + (i % 3), "fanout", at(i), cfg) for i in range(300)]
>>> st.episode.phase, any(outs)
('watch', False)
>>> outs = [observe(st, 11.0 + (i % 3), "fanout", at(300 + i), cfg) for i in range(50)]
>>> [(i, o.kind, o.verdict.aspect) for i, o in enumerate(outs) if o]
[(4, 'drift', 'tail_max')]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from app.core import episodes
from app.core.alerts import alert_id, move_factor, severity
from app.core.aspects import add_hit, aspect_hits
from app.core.drift import AdwinDetector, Detector, QuantileCusum, Signal, detector_from_state
from app.core.episodes import EpisodeState
from app.core.gate import Verdict, corroborate_counts, judge
from app.core.log_location import LogLocation
from app.core.monitor_config import MonitorConfig
from app.core.reference import Reference
from app.core.sketch import MIN_VALUE, ZERO_KEY, Sketch
from app.core.windows import RollingWindow

_INF, _log, _ceil = math.inf, math.log, math.ceil  # module globals: per value, no attribute
_TICKING = episodes.TICKING
SEGMENT_CHANGE = "segment_change"  # detector named by alerts that ``corroborate`` confirmed


class Origin(NamedTuple):
    """The session being folded: it names alerts (content-hash ids) and drives the clock."""

    segment_key: str
    session_id: str
    detected_at: int  # the session's end time: alerts it triggers carry it
    now: int  # event-time clock of episodes: the latest end time seen, never backwards


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # "drift" | "resolved"
    episode: EpisodeState  # drift: the episode it opened; resolved: the episode it closed
    baseline: dict[str, float]  # summary of the baseline the change is measured against
    current: dict[str, float]  # drift: post-change sample; resolved: the new baseline
    verdict: Verdict | None = None


@dataclass(slots=True)
class Candidate:
    detector: str  # the first detector that signalled
    last_signal: int  # value count at the latest signal
    judged: int  # value count at the latest judgement

    def to_list(self) -> list:
        return [self.detector, self.last_signal, self.judged]


@dataclass(slots=True)
class MetricState:
    n: int  # values seen
    window: RollingWindow
    collecting: Sketch | None  # baseline under construction
    baseline: Sketch | None  # frozen baseline
    ref: Reference | None  # its digest
    ref_n: int  # value count when it was frozen
    free: list[Detector]  # need no baseline: run on every value from the first one
    bound: list[Detector]  # built from the frozen baseline (empty while collecting)
    candidate: Candidate | None
    episode: EpisodeState
    change_hint: int | None = None  # value count where another metric's confirmed change began
    # derived, never stored: (value count, aspects.aspect_hits of the values since change_hint)
    hint_hits: tuple[int, list[int]] | None = None
    # derived from the baseline, never stored: its log-location (None: not continuous)
    log_loc: LogLocation | None = None

    @classmethod
    def initial(cls, cfg: MonitorConfig) -> MetricState:
        # one ADWIN for the stream's life: it adapts its own window, and stays comparable
        # with a plain ADWIN(clock=1) run on the same values
        adwin = AdwinDetector(delta=cfg.adwin_delta, clock=cfg.adwin_clock)
        return cls(0, RollingWindow(cfg.window_n, cfg.rel_acc, cfg.max_buckets),
                   Sketch(cfg.rel_acc, cfg.max_buckets), None, None, 0, [adwin], [], None,
                   EpisodeState())

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "window": self.window.to_dict(),
                "collecting": None if self.collecting is None else self.collecting.to_dict(),
                "baseline": None if self.baseline is None else self.baseline.to_dict(),
                "ref": None if self.ref is None else self.ref.to_dict(), "ref_n": self.ref_n,
                "free": [d.to_state() for d in self.free],
                "bound": [d.to_state() for d in self.bound],
                "candidate": None if self.candidate is None else self.candidate.to_list(),
                "episode": self.episode.to_dict(), "hint": self.change_hint}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricState:
        def sketch(x):
            return None if x is None else Sketch.from_dict(x)

        baseline = sketch(d["baseline"])
        return cls(d["n"], RollingWindow.from_dict(d["window"]), sketch(d["collecting"]),
                   baseline, None if d["ref"] is None else Reference.from_dict(d["ref"]),
                   d["ref_n"], [detector_from_state(x) for x in d["free"]],
                   [detector_from_state(x) for x in d["bound"]],
                   None if d["candidate"] is None else Candidate(*d["candidate"]),
                   EpisodeState.from_dict(d["episode"]), d.get("hint"),  # no "hint": older state
                   log_loc=None if baseline is None else LogLocation.of(baseline))


def observe(st: MetricState, x: float, metric: str, origin: Origin,
            cfg: MonitorConfig) -> Outcome | None:
    """Fold one value of ``metric`` into ``st``; the alert-worthy outcome, if any."""
    if not 0.0 <= x < _INF:  # before anything changes: a bad value leaves st untouched
        raise ValueError(f"{metric}: values must be finite and >= 0, got {x!r}")
    st.n += 1
    window = st.window
    inv_ln = window.sketch._inv_ln
    key = ZERO_KEY if x < MIN_VALUE else _ceil(_log(x) * inv_ln)  # sketch.key(x)
    window.add_keyed(x, key)
    signals = None  # plain loops, a list only when a detector signals (rare)
    for det in st.free:
        sig = det.update(x)
        if sig is not None:
            if signals is None:
                signals = []
            signals.append(sig)
    if st.collecting is not None:
        st.collecting.add(x, key)
        target = cfg.baseline_n if st.episode.phase == episodes.WARMUP else cfg.rebaseline_n
        if st.collecting.count >= target:
            _freeze(st, origin.now, cfg)
        return None
    for det in st.bound:
        # the tail CUSUMs bucket x like the window (same accuracy): reuse its key
        if det.__class__ is QuantileCusum and det._inv_ln == inv_ln:
            if det.quiet_lo <= key <= det.quiet_hi:
                continue  # update_key's no-op case (most values), without the call
            sig = det.update_key(key)
        else:
            sig = det.update(x)
        if sig is not None:
            if signals is None:
                signals = []
            signals.append(sig)
    out = None if signals is None and st.candidate is None else _detect(
        st, signals or (), metric, origin, cfg)
    if out is None and st.change_hint is not None:
        out = _corroborate(st, x, metric, origin, cfg)
    if st.episode.phase in _TICKING:  # tick changes nothing in any other phase
        ep, closed = episodes.tick(st.episode, n=st.n, ns=origin.now, cfg=cfg.episodes)
        st.episode = ep
        if closed is not None:
            return Outcome("resolved", closed, closed.old or st.ref.summary(), st.ref.summary())
    return out


def hint(st: MetricState, sessions_ago: int) -> None:
    """A change of this metric's segment began ``sessions_ago`` sessions ago (confirmed on
    another metric): judge this one from there too, if it is being watched."""
    if st.episode.phase == episodes.WATCH and st.change_hint is None:
        st.change_hint, st.hint_hits = max(st.ref_n, st.n - sessions_ago), None


def _corroborate(st: MetricState, x: float, metric: str, origin: Origin,
                 cfg: MonitorConfig) -> Outcome | None:
    since = st.n - st.change_hint
    # the hits count every value since the hint: judged while they all fit the gate's window
    if since > cfg.patience or since > cfg.gate.max_post_n or st.episode.phase != episodes.WATCH:
        st.change_hint = st.hint_hits = None
        return None
    cached = st.hint_hits
    if cached is not None and cached[0] == st.n - 1:  # kept up to date: count x alone
        hits = cached[1]
        add_hit(hits, x, st.ref)
    else:  # the first look, or after a restore (not stored): count the window
        hits = aspect_hits(st.window.last(since), st.ref)
    st.hint_hits = (st.n, hits)
    verdict = corroborate_counts(since, hits, st.ref, cfg.gate, lambda: st.window.last(since))
    if not verdict.passed:
        return None
    if st.candidate is None:  # the alert names the detector that led to it
        st.candidate = Candidate(SEGMENT_CHANGE, st.n, st.n)
    return _confirm(st, verdict, metric, origin, cfg)


def _freeze(st: MetricState, ns: int, cfg: MonitorConfig) -> None:
    st.baseline, st.collecting = st.collecting, None
    st.ref, st.ref_n = Reference.from_sketch(st.baseline), st.n
    st.log_loc = LogLocation.of(st.baseline)
    st.bound = [QuantileCusum.from_reference(st.ref, cfg.cusum_levels, h=cfg.cusum_h)]
    st.candidate = None
    st.episode = episodes.baseline_frozen(st.episode, n=st.n, ns=ns)


def _detect(st: MetricState, signals: Sequence[Signal], metric: str, origin: Origin,
            cfg: MonitorConfig) -> Outcome | None:
    for sig in signals:
        if st.candidate is None:
            st.candidate = Candidate(sig.detector, st.n, -cfg.check_every)
        else:
            st.candidate.last_signal = st.n
    cand = st.candidate
    if cand is None or not episodes.may_open(st.episode) or st.n - cand.judged < cfg.check_every:
        return None
    cand.judged = st.n
    since_ref = min(st.n - st.ref_n, cfg.gate.max_post_n)  # never reach behind the baseline
    verdict = judge(st.window.last(since_ref), st.ref, cfg.gate, st.log_loc)
    if verdict.wait:  # judge again the moment the post-change sample is large enough
        cand.judged = st.n - cfg.check_every + min(verdict.wait, cfg.check_every)
    if not verdict.passed:
        if st.n - cand.last_signal >= cfg.patience:
            st.candidate = None
        return None
    return _confirm(st, verdict, metric, origin, cfg)


def _confirm(st: MetricState, verdict: Verdict, metric: str, origin: Origin,
             cfg: MonitorConfig) -> Outcome | None:
    old = st.ref.summary()
    sev = severity(metric, verdict.aspect, move_factor(old, verdict.post), cfg.page_factor,
                   cfg.page_metrics)
    aid = alert_id("drift", origin.segment_key, metric, origin.detected_at, origin.session_id)
    st.episode, opened = episodes.confirmed(st.episode, n=st.n, ns=origin.now, alert_id=aid,
                                            detector=st.candidate.detector, severity=sev, old=old)
    # the confirmed post-change sample seeds the new baseline
    st.collecting = Sketch.of(st.window.last(verdict.window), cfg.rel_acc, cfg.max_buckets)
    st.candidate, st.bound, st.change_hint, st.hint_hits = None, [], None, None
    return Outcome("drift", st.episode, old, verdict.post, verdict) if opened else None

"""Prometheus metrics of loadshape: ONE bundle built from an injected registry.

Callers never touch ``prometheus_client`` objects; they call the bundle's typed methods.
Segment labels are bounded: the first ``max_segments`` distinct segment keys keep their name,
every later one is reported as ``other`` (first come, first served, so deterministic for a
given order of events).

>>> from prometheus_client import CollectorRegistry
>>> reg = CollectorRegistry()
>>> m = LoadshapeMetrics.create(reg, max_segments=1, clock=lambda: 1700000000.0)
>>> m.count_span(1_699_999_990_000_000_000)
>>> reg.get_sample_value("loadshape_spans_processed_total")
1.0
>>> reg.get_sample_value("loadshape_last_event_timestamp_seconds")
1699999990.0
>>> m.count_misroute("support"); m.count_misroute("dev"); m.count_misroute("ops")
>>> reg.get_sample_value("loadshape_misroutes_total", {"segment": "other"})
2.0
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from schemas.session import METRIC_UNITS, SessionShape

OTHER = "other"
NS = 1_000_000_000

# Explicit histogram buckets in each unit of schemas.session.METRIC_UNITS.
BUCKETS_BY_UNIT: Mapping[str, tuple[float, ...]] = {
    "tokens": (512, 1024, 2048, 4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536,
               98304, 131072, 262144, 524288, 1048576),
    "ratio": (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0,
              1.25, 1.5, 2.0),
    "count": (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 128),
    "seconds": (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
}


def histogram_name(metric: str, unit: str) -> str:
    """Prometheus name of the per-session histogram of a load-shape metric (unit in the name).

    >>> histogram_name("context_tokens", "tokens"), histogram_name("retry_rate", "ratio")
    ('loadshape_session_context_tokens', 'loadshape_session_retry_rate_ratio')
    >>> histogram_name("cache_age_s", "seconds"), histogram_name("fanout", "count")
    ('loadshape_session_cache_age_seconds', 'loadshape_session_fanout')
    """
    base = metric.removesuffix("_s") if unit == "seconds" else metric
    suffix = "" if unit == "count" or base.endswith("_" + unit) else "_" + unit
    return f"loadshape_session_{base}{suffix}"


@dataclass(slots=True)
class BoundedLabels:
    """Keep the first ``limit`` distinct values by name; fold the rest into ``other``.

    >>> b = BoundedLabels(limit=2)
    >>> [b.label(v) for v in ("a", "b", "c", "a", "d")]
    ['a', 'b', 'other', 'a', 'other']
    """

    limit: int
    named: set[str] = field(default_factory=set)

    def label(self, value: str) -> str:
        if value in self.named:
            return value
        if len(self.named) < self.limit and value != OTHER:
            self.named.add(value)
            return value
        return OTHER


@dataclass(slots=True)
class FlagGauge:
    """A gauge counting the raw keys that are 'on' under each (bounded) label set.

    A named segment reads 0 or 1; ``other`` reads how many overflowed keys are on.
    """

    gauge: Gauge
    on: dict[tuple[str, ...], set[tuple[str, ...]]] = field(default_factory=dict)

    def set(self, labels: tuple[str, ...], key: tuple[str, ...], on: bool) -> None:
        keys = self.on.setdefault(labels, set())
        (keys.add if on else keys.discard)(key)
        self.gauge.labels(*labels).set(len(keys))

    def clear(self) -> None:
        self.on.clear()
        self.gauge.clear()


def _session_histograms(registry: CollectorRegistry) -> dict[str, Histogram]:
    out = {}
    for metric, unit in METRIC_UNITS.items():
        if unit not in BUCKETS_BY_UNIT:
            raise ValueError(f"no histogram buckets for unit {unit!r} of metric {metric!r}")
        out[metric] = Histogram(
            histogram_name(metric, unit), f"Per-session {metric} ({unit}) by segment.",
            ["segment"], buckets=BUCKETS_BY_UNIT[unit], registry=registry,
        )
    return out


@dataclass(frozen=True, slots=True)
class LoadshapeMetrics:
    session: Mapping[str, Histogram]
    metric_quantile: Gauge
    drift_episodes_open: FlagGauge
    assumption_broken: FlagGauge
    assumption_holds: Gauge
    policy_version: Gauge
    recalibrations: Counter
    misroutes: Counter
    spans_processed: Counter
    dead_letters: Counter
    sessions_open: Gauge
    sessions_closed: Counter
    late_spans: Counter
    sessions_spilled: Counter
    sessions_late: Counter
    sessions_copies: Counter
    consumer_lag: Gauge
    alerts_published: Counter
    alerts_forwarded: Counter
    otlp_spans_skipped: Counter
    last_event_ts: Gauge
    last_processed_ts: Gauge
    segments: BoundedLabels
    names: BoundedLabels
    clock: Callable[[], float]
    # segment label -> metric -> its histogram's child: labels() is a locked dict lookup,
    # and every released session observes a dozen metrics
    session_children: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def create(
        cls, registry: CollectorRegistry, *, max_segments: int,
        max_names: int = 200, clock: Callable[[], float] = time.time,
    ) -> LoadshapeMetrics:
        """Register every loadshape metric on ``registry`` (one bundle per registry)."""
        r = registry
        seg = ["segment"]
        return cls(
            session=_session_histograms(r),
            metric_quantile=Gauge(
                "loadshape_metric_quantile",
                "Sketch quantile (stat=p50|p95|p99) of a load-shape metric, in the metric's unit.",
                ["segment", "metric", "stat"], registry=r),
            drift_episodes_open=FlagGauge(Gauge(
                "loadshape_drift_episodes_open", "Open drift episodes (0/1 per named segment).",
                ["segment", "metric"], registry=r)),
            assumption_broken=FlagGauge(Gauge(
                "loadshape_assumption_broken", "1 while a declared workload assumption is broken.",
                ["assumption", "segment"], registry=r)),
            assumption_holds=Gauge(
                "loadshape_assumption_holds",
                "1 while a declared workload assumption holds, 0 once broken (named segments only).",
                ["assumption", "segment"], registry=r),
            policy_version=Gauge(
                "loadshape_routing_policy_version", "Latest routing policy version published.",
                ["policy"], registry=r),
            recalibrations=Counter(
                "loadshape_recalibrations_total", "Routing recalibrations published.",
                ["policy", "mode"], registry=r),
            misroutes=Counter(
                "loadshape_misroutes_total", "Sessions routed to a model below their complexity.",
                seg, registry=r),
            spans_processed=Counter(
                "loadshape_spans_processed_total", "Spans accepted by stage 1.", registry=r),
            dead_letters=Counter(
                "loadshape_dead_letters_total", "Records sent to the dead-letter topic.",
                ["reason"], registry=r),
            sessions_open=Gauge(
                "loadshape_sessions_open", "Sessions open in stage 1 on this worker.", registry=r),
            sessions_closed=Counter(
                "loadshape_sessions_closed_total", "Sessions closed by stage 1.",
                ["closed_by"], registry=r),
            late_spans=Counter(
                "loadshape_late_spans_total", "Spans that arrived after their session closed.",
                registry=r),
            sessions_spilled=Counter(
                "loadshape_sessions_spilled_total", "Sessions stage 2 released unordered: the "
                "segment's reorder buffer was full (reorder_max_held).", seg, registry=r),
            sessions_late=Counter(
                "loadshape_sessions_late_total", "Sessions stage 2 folded out of event-time "
                "order: they arrived behind what the segment had released (a span partition "
                "that lagged past the watermarks, or a copy stage 1 published again after more "
                "sessions than stage 2 remembers).", seg, registry=r),
            sessions_copies=Counter(
                "loadshape_sessions_copies_dropped_total", "Sessions stage 2 dropped as copies "
                "stage 1 published again (it folds again from its checkpoint after a crash or "
                "a rebalance).", seg, registry=r),
            consumer_lag=Gauge(
                "loadshape_consumer_lag_messages", "Kafka consumer lag of this worker.",
                ["topic", "partition"], registry=r),
            alerts_published=Counter(
                "loadshape_alerts_published_total", "Alerts published to Kafka.",
                ["kind"], registry=r),
            alerts_forwarded=Counter(
                "loadshape_alerts_forwarded_total", "Alerts posted to Alertmanager.",
                ["kind", "outcome"], registry=r),
            otlp_spans_skipped=Counter(
                "loadshape_otlp_spans_skipped_total", "OTLP spans skipped (not GenAI spans).",
                registry=r),
            last_event_ts=Gauge(
                "loadshape_last_event_timestamp_seconds",
                "Event time of the last processed span.", registry=r),
            last_processed_ts=Gauge(
                "loadshape_last_processed_timestamp_seconds",
                "Wall-clock time the last span was processed.", registry=r),
            segments=BoundedLabels(max_segments),
            names=BoundedLabels(max_names),
            clock=clock,
        )

    # --- load shape (stage 2) ----------------------------------------------------------
    def observe_session(self, segment_key: str, shape: SessionShape) -> None:
        """One observation per load-shape metric (metrics without a value are skipped)."""
        seg = self.segments.label(segment_key)
        children = self.session_children.get(seg)
        if children is None:
            children = self.session_children[seg] = {}
            self.sessions_spilled.labels(seg)  # 0 from the segment's first session on
            self.sessions_late.labels(seg)
            self.sessions_copies.labels(seg)
        for metric, hist in self.session.items():
            value = shape.metric(metric)
            if value is not None:
                child = children.get(metric)
                if child is None:  # created on the first value: no empty series before
                    child = children[metric] = hist.labels(seg)
                child.observe(value)

    def set_quantiles(self, segment_key: str, metric: str, p50: float, p95: float,
                      p99: float) -> None:
        """Sketch quantiles; not written for segments folded into ``other`` (meaningless)."""
        seg = self.segments.label(segment_key)
        if seg == OTHER:
            return
        name = self.names.label(metric)
        for stat, value in (("p50", p50), ("p95", p95), ("p99", p99)):
            self.metric_quantile.labels(seg, name, stat).set(value)

    def set_drift_episode(self, segment_key: str, metric: str, open: bool) -> None:
        labels = (self.segments.label(segment_key), self.names.label(metric))
        self.drift_episodes_open.set(labels, (segment_key, metric), open)

    def set_assumption(self, assumption_id: str, segment_key: str, holds: bool) -> None:
        labels = (self.names.label(assumption_id), self.segments.label(segment_key))
        self.assumption_broken.set(labels, (assumption_id, segment_key), not holds)
        if OTHER not in labels:  # "other" mixes assumptions: only the broken count is meaningful
            self.assumption_holds.labels(*labels).set(1 if holds else 0)

    def reset_assignment_gauges(self) -> None:
        """Forget per-segment gauges and lag, e.g. on partition revocation, so a worker
        never keeps exporting state of segments it no longer owns."""
        self.metric_quantile.clear()
        self.drift_episodes_open.clear()
        self.assumption_broken.clear()
        self.assumption_holds.clear()
        self.consumer_lag.clear()

    # --- routing loop ------------------------------------------------------------------
    def set_recalibration_version(self, policy_id: str, version: int) -> None:
        self.policy_version.labels(self.names.label(policy_id)).set(version)

    def count_recalibration(self, policy_id: str, mode: str) -> None:
        self.recalibrations.labels(self.names.label(policy_id), mode).inc()

    def count_misroute(self, segment_key: str) -> None:
        self.misroutes.labels(self.segments.label(segment_key)).inc()

    # --- pipeline health ---------------------------------------------------------------
    def count_span(self, event_time_unix_nano: int) -> None:
        """A span was processed: count it, stamp event time and wall time (stall detection)."""
        self.spans_processed.inc()
        self.last_event_ts.set(event_time_unix_nano / NS)
        self.last_processed_ts.set(self.clock())

    def count_dead_letter(self, reason_code: str) -> None:
        self.dead_letters.labels(self.names.label(reason_code)).inc()

    def set_sessions_open(self, n: int) -> None:
        self.sessions_open.set(n)

    def count_session_closed(self, closed_by: str) -> None:
        self.sessions_closed.labels(closed_by).inc()

    def count_late_span(self) -> None:
        self.late_spans.inc()

    def count_spilled(self, segment_key: str, n: int) -> None:
        self.sessions_spilled.labels(self.segments.label(segment_key)).inc(n)

    def count_late_sessions(self, segment_key: str, n: int) -> None:
        self.sessions_late.labels(self.segments.label(segment_key)).inc(n)

    def count_copies(self, segment_key: str, n: int) -> None:
        self.sessions_copies.labels(self.segments.label(segment_key)).inc(n)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(max(lag, 0))

    def count_alert_published(self, kind: str) -> None:
        self.alerts_published.labels(kind).inc()

    def count_alert_forwarded(self, kind: str, outcome: str) -> None:
        self.alerts_forwarded.labels(kind, outcome).inc()

    def count_otlp_skipped(self, n: int = 1) -> None:
        self.otlp_spans_skipped.inc(n)


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0"):
    """Serve ``registry`` on http://addr:port/metrics in a daemon thread.

    Returns ``(server, thread)``; stop with ``server.shutdown(); server.server_close()``.
    """
    return start_http_server(port, addr=addr, registry=registry)

"""Prometheus view of span emitters: what the agents' process sent, and what it dropped.

An emitter never blocks and never raises because Kafka is slow or down, so its drops must be
visible somewhere else: this collector reads the emitters' own counters (``EmitterStats``)
at scrape time - nothing is counted twice and ``emit()`` pays nothing for it. Register it on
the registry the agents' process serves (``loadshape simulate --kafka --metrics-port``).

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from app.emitter.buffer import EmitterStats
>>> registry = CollectorRegistry()
>>> _ = register_emitter_metrics(registry, lambda: [EmitterStats(queued=10, sent=7,
...                                                  dropped_buffer_full=2, buffered=1)])
>>> text = generate_latest(registry).decode()
>>> 'loadshape_emitter_dropped_spans_total{reason="buffer_full"} 2.0' in text
True
>>> 'loadshape_emitter_spans_sent_total 7.0' in text
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.emitter.buffer import EmitterStats

DROP_REASONS = {"buffer_full": "dropped_buffer_full", "send_failed": "dropped_send_failed",
                "closed": "dropped_closed"}
TOTALS = {  # counter name (without _total) -> (help, EmitterStats field)
    "loadshape_emitter_spans_queued": ("Spans accepted by emit().", "queued"),
    "loadshape_emitter_spans_sent": ("Spans acknowledged by Kafka.", "sent"),
    "loadshape_emitter_spans_invalid": ("Spans emit() refused as invalid.", "invalid"),
}
LEVELS = {
    "loadshape_emitter_buffered_spans": ("Spans waiting in the emitter's buffer.", "buffered"),
    "loadshape_emitter_in_flight_spans": ("Spans handed to the producer, not yet acknowledged.",
                                          "in_flight"),
}


class EmitterCollector(Collector):
    """Sums the stats of every emitter ``stats_of()`` returns, at each scrape."""

    def __init__(self, stats_of: Callable[[], Iterable[EmitterStats]]) -> None:
        self._stats_of = stats_of

    def collect(self):
        stats = list(self._stats_of())

        def total(field: str) -> int:
            return sum(getattr(s, field) for s in stats)

        drops = CounterMetricFamily("loadshape_emitter_dropped_spans",
                                    "Spans the emitter dropped (never reach Kafka).",
                                    labels=["reason"])
        for reason, field in DROP_REASONS.items():
            drops.add_metric([reason], total(field))
        yield drops
        for name, (doc, field) in TOTALS.items():
            yield CounterMetricFamily(name, doc, value=total(field))
        for name, (doc, field) in LEVELS.items():
            yield GaugeMetricFamily(name, doc, value=total(field))


def register_emitter_metrics(registry: CollectorRegistry,
                             stats_of: Callable[[], Iterable[EmitterStats]]) -> EmitterCollector:
    """Register the emitter metrics on ``registry``; ``stats_of`` lists the live emitters' stats."""
    collector = EmitterCollector(stats_of)
    registry.register(collector)
    return collector

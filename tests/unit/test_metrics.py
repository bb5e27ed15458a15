"""The metrics bundle: names, units, bounded labels, flag gauges."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import BUCKETS_BY_UNIT, OTHER, LoadshapeMetrics, histogram_name
from schemas import METRIC_UNITS, Segment, SessionShape

NOW = 1_700_000_000.0


def shape(agent: str = "dev-assistant", **kw) -> SessionShape:
    base = dict(
        session_id="s1", segment=Segment(agent=agent), start_time_unix_nano=1,
        end_time_unix_nano=2, closed_by="session_end", spans=7, context_utilization=0.5,
        context_tokens=9000, fanout=3, max_parallel_fanout=2, retry_rate=0.1, reflections=1,
        llm_calls=4, depth=3, distinct_tools=2, complexity=0.4, truncations=0,
        cache_age_s=42.0, cache_hits=1,
    )
    return SessionShape(**{**base, **kw})


def record_one_of_each(m: LoadshapeMetrics, segment: str = "dev-assistant") -> None:
    """One observation of every metric in the bundle (shared with test_grafana)."""
    m.observe_session(segment, shape(agent=segment))
    for metric in METRIC_UNITS:
        m.set_quantiles(segment, metric, 1.0, 2.0, 3.0)
    m.set_drift_episode(segment, "fanout", True)
    m.set_assumption("dev-fanout-p50", segment, False)
    m.set_recalibration_version("default", 2)
    m.count_recalibration("default", "auto")
    m.count_misroute(segment)
    m.count_span(int(NOW * 1e9))
    m.count_dead_letter("invalid_json")
    m.set_sessions_open(3)
    m.count_session_closed("session_end")
    m.count_late_span()
    m.count_spilled(segment, 2)
    m.set_consumer_lag("agent.spans", 0, 12)
    m.count_alert_published("drift")
    m.count_alert_forwarded("drift", "ok")
    m.count_otlp_skipped()


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


def test_every_load_shape_metric_has_a_unit_named_histogram(reg):
    m = LoadshapeMetrics.create(reg, max_segments=5, clock=lambda: NOW)
    m.observe_session("dev-assistant", shape())
    s = shape()
    for metric, unit in METRIC_UNITS.items():
        name = histogram_name(metric, unit)
        assert name.startswith("loadshape_session_")
        assert unit in ("count", "tokens") or name.endswith("_" + unit)
        count = reg.get_sample_value(f"{name}_count", {"segment": "dev-assistant"})
        assert count == 1.0, name
        assert reg.get_sample_value(f"{name}_sum", {"segment": "dev-assistant"}) == s.metric(metric)
    assert "loadshape_session_cache_age_seconds" in generate_latest(reg).decode()


def test_buckets_are_explicit_and_cover_the_reference_scenario():
    assert BUCKETS_BY_UNIT["tokens"][-1] >= 1_000_000
    assert 16384 in BUCKETS_BY_UNIT["tokens"] and 65536 in BUCKETS_BY_UNIT["tokens"]
    assert {3, 12} <= set(BUCKETS_BY_UNIT["count"])
    assert 1.0 in BUCKETS_BY_UNIT["ratio"]
    for buckets in BUCKETS_BY_UNIT.values():
        assert list(buckets) == sorted(set(buckets))


def test_missing_values_are_not_observed(reg):
    m = LoadshapeMetrics.create(reg, max_segments=5)
    m.observe_session("dev", shape(context_utilization=None, cache_age_s=None))
    assert reg.get_sample_value("loadshape_session_cache_age_seconds_count", {"segment": "dev"}) is None
    assert reg.get_sample_value("loadshape_session_fanout_count", {"segment": "dev"}) == 1.0


def test_spilled_late_and_copied_sessions_count_from_zero_per_segment(reg):
    # a series at 0 from the segment's first session: the alert rule's increase() and the
    # dashboard see the first spill, and a healthy pipeline still draws the panel
    m = LoadshapeMetrics.create(reg, max_segments=5)
    m.observe_session("dev", shape(agent="dev"))
    get = reg.get_sample_value
    assert get("loadshape_sessions_spilled_total", {"segment": "dev"}) == 0.0
    m.count_spilled("dev", 3)
    assert get("loadshape_sessions_spilled_total", {"segment": "dev"}) == 3.0
    assert get("loadshape_sessions_late_total", {"segment": "dev"}) == 0.0
    m.count_late_sessions("dev", 2)
    assert get("loadshape_sessions_late_total", {"segment": "dev"}) == 2.0
    assert get("loadshape_sessions_copies_dropped_total", {"segment": "dev"}) == 0.0
    m.count_copies("dev", 1)
    assert get("loadshape_sessions_copies_dropped_total", {"segment": "dev"}) == 1.0


def test_segment_labels_are_bounded_first_come_first_served(reg):
    m = LoadshapeMetrics.create(reg, max_segments=2)
    for seg in ("a", "b", "c", "d", "a", "e"):
        m.observe_session(seg, shape(agent=seg))
    text = generate_latest(reg).decode()
    segments = {
        s.labels["segment"]
        for fam in text_string_to_metric_families(text)
        for s in fam.samples if "segment" in s.labels
    }
    assert segments == {"a", "b", OTHER}
    get = reg.get_sample_value
    assert get("loadshape_session_fanout_count", {"segment": "a"}) == 2.0
    assert get("loadshape_session_fanout_count", {"segment": OTHER}) == 3.0


def test_bounding_is_deterministic_given_the_order():
    seen = []
    for _ in range(2):
        r = CollectorRegistry()
        m = LoadshapeMetrics.create(r, max_segments=3)
        for seg in ("z", "y", "x", "w", "v"):
            m.count_misroute(seg)
        seen.append(sorted(m.segments.named))
    assert seen[0] == seen[1] == ["x", "y", "z"]


def test_a_segment_literally_named_other_does_not_take_a_slot(reg):
    m = LoadshapeMetrics.create(reg, max_segments=1)
    m.count_misroute(OTHER)
    m.count_misroute("real")
    assert reg.get_sample_value("loadshape_misroutes_total", {"segment": "real"}) == 1.0


def test_quantile_gauges_skip_overflowed_segments(reg):
    m = LoadshapeMetrics.create(reg, max_segments=1)
    m.set_quantiles("a", "fanout", 3, 8, 11)
    m.set_quantiles("b", "fanout", 1, 1, 1)
    get = reg.get_sample_value
    assert get("loadshape_metric_quantile", {"segment": "a", "metric": "fanout", "stat": "p99"}) == 11
    assert get("loadshape_metric_quantile", {"segment": OTHER, "metric": "fanout", "stat": "p50"}) is None


def test_drift_gauge_counts_open_episodes_even_when_folded(reg):
    m = LoadshapeMetrics.create(reg, max_segments=1)
    m.set_drift_episode("a", "fanout", True)
    m.set_drift_episode("b", "fanout", True)
    m.set_drift_episode("c", "fanout", True)
    m.set_drift_episode("b", "fanout", False)
    m.set_drift_episode("b", "fanout", False)
    get = reg.get_sample_value
    assert get("loadshape_drift_episodes_open", {"segment": "a", "metric": "fanout"}) == 1
    assert get("loadshape_drift_episodes_open", {"segment": OTHER, "metric": "fanout"}) == 1
    m.set_drift_episode("a", "fanout", False)
    assert get("loadshape_drift_episodes_open", {"segment": "a", "metric": "fanout"}) == 0


def test_assumption_gauge_and_reset_on_revocation(reg):
    m = LoadshapeMetrics.create(reg, max_segments=4)
    m.set_assumption("support-ctx-32k", "support", holds=False)
    m.set_consumer_lag("agent.spans", 3, 7)
    labels = {"assumption": "support-ctx-32k", "segment": "support"}
    assert reg.get_sample_value("loadshape_assumption_broken", labels) == 1
    m.set_assumption("support-ctx-32k", "support", holds=True)
    assert reg.get_sample_value("loadshape_assumption_broken", labels) == 0
    m.reset_assignment_gauges()
    assert reg.get_sample_value("loadshape_assumption_broken", labels) is None
    lag = {"topic": "agent.spans", "partition": "3"}
    assert reg.get_sample_value("loadshape_consumer_lag_messages", lag) is None


def test_span_clock_is_injected(reg):
    clock = iter([10.0, 20.0])
    m = LoadshapeMetrics.create(reg, max_segments=1, clock=lambda: next(clock))
    m.count_span(5_000_000_000)
    m.count_span(6_500_000_000)
    assert reg.get_sample_value("loadshape_last_processed_timestamp_seconds") == 20.0
    assert reg.get_sample_value("loadshape_last_event_timestamp_seconds") == 6.5
    assert reg.get_sample_value("loadshape_spans_processed_total") == 2.0


def test_two_bundles_need_two_registries(reg):
    LoadshapeMetrics.create(reg, max_segments=1)
    with pytest.raises(ValueError):
        LoadshapeMetrics.create(reg, max_segments=1)
    LoadshapeMetrics.create(CollectorRegistry(), max_segments=1)


def test_counters_end_in_total_and_every_family_has_help(reg):
    m = LoadshapeMetrics.create(reg, max_segments=3, clock=lambda: NOW)
    record_one_of_each(m)
    for fam in reg.collect():
        assert fam.name.startswith("loadshape_")
        assert fam.documentation
        if fam.type == "counter":
            assert any(s.name.endswith("_total") for s in fam.samples), fam.name
        assert fam.samples, f"{fam.name} got no observation from record_one_of_each"

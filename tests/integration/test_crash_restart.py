"""kill -9 in the middle of a load, and a consumer group losing and regaining a member: the
sessions and alerts a worker publishes equal those of an uninterrupted run (the offline replay
of the same records). No span lost, none counted twice: stage 1 folds by span id and resumes
from its changelog; stage 2 resumes from its changelog and skips redelivered sessions.

See ``reliability_data`` for what "equal" means on an at-least-once topic; duplicates of an
identical record are counted and printed (``-s``), never allowed to differ in content.
"""

from __future__ import annotations

import pytest
from pipeline_data import keyed_lines, workload_file
from reliability_data import compare, describe, isolated, reference, session_records, wait_for

from app.testing import WorkerProcess, free_port, produce, read_topic, scrape_metrics

pytestmark = pytest.mark.integration

SESSIONS = 1500
SEED = 11
# A killed member leaves the group after the session timeout; Faust's default is 60 s.
FAST_GROUP = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1",
              "BROKER_REBALANCE_TIMEOUT": "20"}


@pytest.fixture(scope="module")
def workload(tmp_path_factory, kafka_settings):
    tmp = tmp_path_factory.mktemp("crash-data")
    path = workload_file(tmp / "spans.jsonl", scenario="dev-to-support", seed=SEED,
                         sessions=SESSIONS, partitions=kafka_settings.spans_partitions)
    return path, keyed_lines(path)


def spans_processed(ports) -> float:
    return sum(scrape_metrics(p).get("loadshape_spans_processed_total", 0.0) for p in ports)


def collect(settings, ref, timeout: float = 150.0):
    """Sessions and alerts published, once every expected one has arrived (or timeout)."""
    want = {s["session_id"] for s in ref.sessions}
    sessions = read_topic(settings, settings.topic_sessions, timeout=timeout,
                          until=lambda recs: want <= {r["value"].get("session_id") for r in recs})
    want_alerts = {a["alert_id"] for a in ref.alerts}
    alerts = read_topic(settings, settings.topic_alerts, timeout=30,
                        until=lambda recs: want_alerts <= {r["value"]["alert_id"] for r in recs})
    return session_records(sessions), [r["value"] for r in alerts]


def check_equal(settings, ref, logs, label: str, known_flaky: str = "") -> None:
    sessions, alerts = collect(settings, ref)
    s_cmp = compare(sessions, ref.sessions, "session_id")
    a_cmp = compare(alerts, ref.alerts, "alert_id")
    print(f"\n{label}: {len(ref.sessions)} sessions, {len(ref.alerts)} alerts expected; "
          f"published {len(sessions)} session records ({s_cmp.duplicates} identical duplicates), "
          f"{len(alerts)} alert records ({a_cmp.duplicates} identical duplicates)")
    tail = "\n".join(log.read_text(errors="replace")[-1500:] for log in logs)
    for log in logs:
        text = log.read_text(errors="replace")
        assert "Exception in callback" not in text and "Error in agent" not in text, text[-3000:]
    if known_flaky and not (s_cmp.equal and a_cmp.equal):
        pytest.xfail(f"{known_flaky}: {describe(s_cmp, 'sessions')}; {describe(a_cmp, 'alerts')}")
    assert s_cmp.equal, describe(s_cmp, "sessions") + "\n" + tail
    assert a_cmp.equal, describe(a_cmp, "alerts") + "\n" + tail


@pytest.fixture
def fast_group(monkeypatch):
    for name, value in FAST_GROUP.items():
        monkeypatch.setenv(name, value)  # Faust reads these from the environment


def test_kill9_mid_load_then_restart_equals_uninterrupted_run(kafka_settings, workload, tmp_path,
                                                             fast_group):
    path, records = workload
    settings = isolated(kafka_settings, tmp_path)
    ref = reference(settings, path)
    assert ref.alerts and len(ref.sessions) >= SESSIONS
    produce(settings, settings.topic_spans, records)
    port = free_port()
    first = WorkerProcess(settings, tmp_path / "worker-1.log", metrics_port=port).start()
    second = None
    try:
        first.wait_ready()
        wait_for(lambda: spans_processed([port]) >= 0.4 * len(records), 120, "40% of the spans")
        # Mid-load: sessions and alerts are already out, most spans are not yet read.
        first.kill9()
        second = WorkerProcess(settings, tmp_path / "worker-2.log", metrics_port=free_port()).start()
        second.wait_ready()
        check_equal(settings, ref, [first.log_path, second.log_path], "kill -9 + restart")
        assert second.proc.poll() is None
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_group_member_killed_and_restarted_equals_one_worker(kafka_settings, workload, tmp_path,
                                                             fast_group):
    path, records = workload
    settings = isolated(kafka_settings, tmp_path)
    ref = reference(settings, path)
    produce(settings, settings.topic_spans, records)
    ports = [free_port(), free_port()]
    a = WorkerProcess(settings, tmp_path / "worker-a.log", metrics_port=ports[0]).start()
    b = WorkerProcess(settings, tmp_path / "worker-b.log", metrics_port=ports[1]).start()
    b2 = None
    try:
        a.wait_ready()
        b.wait_ready()
        wait_for(lambda: spans_processed(ports) >= 0.3 * len(records), 120, "30% of the spans")
        b.kill9()  # rebalance 1: a takes every partition once b's session times out
        b2 = WorkerProcess(settings, tmp_path / "worker-b2.log", metrics_port=ports[1]).start()
        b2.wait_ready()  # rebalance 2: the partitions are shared again
        check_equal(settings, ref, [a.log_path, b.log_path, b2.log_path], "group member kill -9")
        assert a.proc.poll() is None and b2.proc.poll() is None
    finally:
        for w in (a, b, b2):
            if w is not None:
                w.stop()

"""Start and stop real Prometheus / Alertmanager / promtool on loopback for tests.

Every server gets a free 127.0.0.1 port, a private temp directory (config, storage, log) and
is killed on exit. Binaries come from the Debian packages the bootstrap installs; outside CI a
missing binary skips the test with a reason, in CI (env ``CI`` set) it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from app.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def binary(name: str) -> str:
    """Path of a required binary; skip (locally) or fail (CI) when it is absent."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} not found on PATH; scripts/bootstrap.sh installs it (Debian package)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    workdir: Path

    def log(self) -> str:
        path = self.workdir / f"{self.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def get_json(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as resp:
            return json.loads(resp.read())

    def post_json(self, path: str, body) -> int:
        req = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status


def wait_ready(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited early:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{server.name} not ready after {timeout}s:\n{server.log()}")


@contextlib.contextmanager
def _run(name: str, argv: list[str], workdir: Path, port: int) -> Iterator[Server]:
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(name, f"http://127.0.0.1:{port}", proc, workdir)
    try:
        wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def prometheus(config: dict, workdir: Path) -> Iterator[Server]:
    """A Prometheus with ``config`` (dict, written as YAML) on a free loopback port."""
    exe = binary("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        exe, f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with _run("prometheus", argv, workdir, port) as server:
        yield server


@contextlib.contextmanager
def alertmanager(config: dict, workdir: Path) -> Iterator[Server]:
    """An Alertmanager (clustering off) with ``config`` on a free loopback port."""
    exe = binary("prometheus-alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        exe, f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=", "--log.level=warn",
    ]
    with _run("alertmanager", argv, workdir, port) as server:
        yield server


def promtool(*args: str, stdin: bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary("promtool"), *args], input=stdin, capture_output=True, cwd=cwd, timeout=60,
    )


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class _RecordingHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = body.decode(errors="replace")
        with self.server.lock:
            self.server.received.append((self.path, doc))
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status":"success","message":"Event processed"}')

    def log_message(self, *args) -> None:
        return None


@contextlib.contextmanager
def recorder(status: int = 200) -> Iterator[Recorder]:
    """A local HTTP endpoint that records every POSTed JSON body (webhook, PagerDuty, AM API)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    server.received, server.lock, server.status = [], threading.Lock(), status
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Recorder(server)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Recorder:
    server: ThreadingHTTPServer

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def bodies(self, path: str | None = None) -> list:
        with self.server.lock:
            return [doc for p, doc in self.server.received if path is None or p == path]


def synthetic_load(metrics, *, sessions: int = 20, t0_ns: int | None = None) -> None:
    """Feed a metrics bundle a small dev-assistant -> support workload: every metric family
    gets samples (histograms for two segments, quantiles, episodes, assumptions, routing,
    pipeline health). Call it repeatedly to make counters move between scrapes."""
    from schemas import METRICS, Segment, SessionShape

    t0_ns = t0_ns or time.time_ns()
    for i in range(sessions):
        for agent, fanout, ctx in (("dev-assistant", 3, 9000), ("support", 11, 60000)):
            shape = SessionShape(
                session_id=f"{agent}-{i}", segment=Segment(agent=agent),
                start_time_unix_nano=t0_ns, end_time_unix_nano=t0_ns + 1, closed_by="session_end",
                spans=fanout * 2, context_utilization=min(ctx / 64000, 1.2), context_tokens=ctx,
                fanout=fanout + i % 3, max_parallel_fanout=fanout // 2, retry_rate=0.05 * (i % 4),
                reflections=i % 2, llm_calls=fanout + 1, depth=3, distinct_tools=fanout // 2 + 1,
                complexity=0.3 if agent == "dev-assistant" else 0.8, truncations=i % 2,
                cache_age_s=30.0 + i, cache_hits=1,
            )
            metrics.observe_session(agent, shape)
            metrics.count_span(t0_ns)
            metrics.count_session_closed("session_end")
    for agent in ("dev-assistant", "support"):
        for metric in METRICS:
            metrics.set_quantiles(agent, metric, 1.0, 2.0, 3.0)
        metrics.set_drift_episode(agent, "fanout", agent == "support")
        metrics.set_assumption(f"{agent}-fanout", agent, agent != "support")
        metrics.count_misroute(agent)
    metrics.set_recalibration_version("default", 2)
    metrics.count_recalibration("default", "auto")
    metrics.count_dead_letter("invalid_json")
    metrics.set_sessions_open(5)
    metrics.count_late_span()
    metrics.set_consumer_lag("agent.spans", 0, 3)
    metrics.count_alert_published("drift")
    metrics.count_alert_forwarded("drift", "ok")
    metrics.count_otlp_skipped()

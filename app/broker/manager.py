"""A local single-node Apache Kafka (KRaft, combined broker+controller) without Docker.

The jars come from Maven Central via ``tools/kafka/pom.xml`` and are cached in
``<kafka_home>/lib`` (git-ignored). Each broker instance lives in
``<kafka_home>/instances/<port>/`` (config, data, logs, pid file), so a test broker on another
port never touches the dev broker.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.broker.probe import wait_for_metadata
from app.settings import PROJECT_ROOT, Settings

POM = PROJECT_ROOT / "tools" / "kafka" / "pom.xml"
KAFKA_MAIN = "kafka.Kafka"


class BrokerError(RuntimeError):
    """A problem the user can act on, stated in one sentence."""


@dataclass(frozen=True)
class BrokerPaths:
    home: Path
    port: int

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    @property
    def instance(self) -> Path:
        return self.home / "instances" / str(self.port)

    @property
    def data(self) -> Path:
        return self.instance / "data"

    @property
    def config(self) -> Path:
        return self.instance / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.instance / "log4j.properties"

    @property
    def pidfile(self) -> Path:
        return self.instance / "broker.pid"

    @property
    def logfile(self) -> Path:
        return self.instance / "server.log"

    @property
    def stdout(self) -> Path:
        return self.instance / "stdout.log"


def check_java() -> str:
    """Path of a Java >= 17, or BrokerError with one clear sentence."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError("Java 17 or newer is required to run Kafka, but `java` is not on PATH "
                          "(Debian: apt-get install openjdk-17-jre-headless).")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    if not match or int(match.group(1)) < 17:
        raise BrokerError(f"Java 17 or newer is required to run Kafka, but `java -version` says: "
                          f"{out.splitlines()[0] if out else 'nothing'}.")
    return java


def fetch_jars(paths: BrokerPaths) -> None:
    """Download Kafka and its runtime dependencies with Maven, once per pom version."""
    stamp = paths.lib / f".pom-{hashlib.sha1(POM.read_bytes()).hexdigest()[:12]}"
    if stamp.exists():
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven is required to fetch the Kafka jars, but `mvn` is not on PATH "
                          "(Debian: apt-get install maven).")
    if paths.lib.exists():
        shutil.rmtree(paths.lib)
    paths.lib.mkdir(parents=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           "-DincludeScope=runtime", f"-DoutputDirectory={paths.lib}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        raise BrokerError(f"Maven could not fetch the Kafka jars ({last[0].strip()}).")
    stamp.touch()


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def render_config(settings: Settings, paths: BrokerPaths, sasl_port: int | None = None) -> str:
    """server.properties; with ``sasl_port`` also a SASL_PLAINTEXT (SCRAM) listener there."""
    host, port, cport = "127.0.0.1", settings.kafka_port, settings.kafka_controller_port
    listeners = f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}"
    advertised = f"PLAINTEXT://{host}:{port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    sasl: list[str] = []
    if sasl_port is not None:
        listeners += f",SASL_PLAINTEXT://{host}:{sasl_port}"
        advertised += f",SASL_PLAINTEXT://{host}:{sasl_port}"
        protocols += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
        sasl = [f"sasl.enabled.mechanisms={','.join(SCRAM_MECHANISMS)}"] + [
            f"listener.name.sasl_plaintext.{m.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            for m in SCRAM_MECHANISMS]
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{cport}",
        f"listeners={listeners}",
        f"advertised.listeners={advertised}",
        "controller.listener.names=CONTROLLER",
        f"listener.security.protocol.map={protocols}",
        *sasl,
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={paths.data}",
        "num.partitions=1",
        "default.replication.factor=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Topics are created explicitly (`loadshape topics create`, Faust's own) so a stray
        # producer cannot create one with the wrong partition count.
        "auto.create.topics.enable=false",
        "log.retention.hours=24",
        "log.segment.bytes=67108864",
        "",
    ])


def render_log4j(paths: BrokerPaths) -> str:
    return "\n".join([
        "log4j.rootLogger=INFO, file",
        "log4j.appender.file=org.apache.log4j.RollingFileAppender",
        f"log4j.appender.file.File={paths.logfile}",
        "log4j.appender.file.MaxFileSize=20MB",
        "log4j.appender.file.MaxBackupIndex=2",
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
        "log4j.logger.kafka.request.logger=WARN",
        "",
    ])


def _cluster_id() -> str:
    """A random KRaft cluster id (URL-safe base64 of 16 bytes). Like Kafka's own
    ``Uuid.randomUuid()``, never one starting with '-': StorageTool would read ``-t -xyz``
    as a missing argument.

    >>> all(not _cluster_id().startswith("-") for _ in range(2000))
    True
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _java_cmd(java: str, paths: BrokerPaths, settings: Settings, main: str) -> list[str]:
    return [java, f"-Xmx{settings.kafka_heap}", "-Xms256m", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", f"-Dlog4j.configuration=file:{paths.log4j}",
            "-cp", f"{paths.lib}/*", main]


def format_storage(java: str, paths: BrokerPaths, settings: Settings,
                   scram_users: Mapping[str, str] | None = None) -> None:
    """Format KRaft storage once (a formatted data dir has meta.properties).

    ``scram_users`` (name -> password) get SCRAM-SHA-256 and -512 credentials; they can only
    be added here, when the storage is formatted."""
    if (paths.data / "meta.properties").exists():
        return
    paths.data.mkdir(parents=True, exist_ok=True)
    cmd = _java_cmd(java, paths, settings, "kafka.tools.StorageTool") + [
        "format", "-t", _cluster_id(), "-c", str(paths.config), "--ignore-formatted"]
    for name, password in (scram_users or {}).items():
        for mechanism in SCRAM_MECHANISMS:
            cmd += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BrokerError(f"Kafka storage format failed: {(proc.stdout + proc.stderr).strip()[-300:]}")


def read_pid(paths: BrokerPaths) -> int | None:
    """PID of our running broker for this port, or None (a stale pid file is removed)."""
    try:
        pid = int(paths.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        paths.pidfile.unlink(missing_ok=True)
        return None
    if KAFKA_MAIN not in cmdline or str(paths.config) not in cmdline:
        paths.pidfile.unlink(missing_ok=True)  # the pid was reused by another process
        return None
    return pid


def log_tail(paths: BrokerPaths, lines: int = 15) -> str:
    text = ""
    for f in (paths.stdout, paths.logfile):
        if f.exists():
            text += "\n".join(f.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    return text


@dataclass(frozen=True)
class UpResult:
    pid: int
    started: bool
    seconds: float


def up(settings: Settings, *, timeout: float = 90.0, sasl_port: int | None = None,
       scram_users: Mapping[str, str] | None = None) -> UpResult:
    """Start the broker unless it already runs; returns once it answers metadata requests.

    ``sasl_port``/``scram_users``: an extra SASL_PLAINTEXT listener with SCRAM users (tests);
    the users are created only when the instance's storage is formatted (a wiped instance)."""
    paths = BrokerPaths(Path(settings.kafka_home), settings.kafka_port)
    pid = read_pid(paths)
    if pid is not None:
        return UpResult(pid=pid, started=False, seconds=0.0)
    java = check_java()
    fetch_jars(paths)
    paths.instance.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(render_config(settings, paths, sasl_port))
    paths.log4j.write_text(render_log4j(paths))
    t0 = time.monotonic()
    format_storage(java, paths, settings, scram_users)
    with open(paths.stdout, "ab") as out:
        proc = subprocess.Popen(_java_cmd(java, paths, settings, KAFKA_MAIN) + [str(paths.config)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=paths.instance)
    paths.pidfile.write_text(f"{proc.pid}\n")
    ok = wait_for_metadata(f"127.0.0.1:{settings.kafka_port}", timeout=timeout,
                           alive=lambda: proc.poll() is None)
    if not ok:
        _stop_pid(proc.pid, paths)
        raise BrokerError(f"Kafka did not answer on 127.0.0.1:{settings.kafka_port} within "
                          f"{timeout:.0f}s; log tail:\n{log_tail(paths)}")
    return UpResult(pid=proc.pid, started=True, seconds=time.monotonic() - t0)


def _stop_pid(pid: int, paths: BrokerPaths, timeout: float = 30.0) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                reaped, _ = os.waitpid(pid, os.WNOHANG)  # our child when started in-process
            except ChildProcessError:
                reaped = 0
            if reaped == pid or not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                paths.pidfile.unlink(missing_ok=True)
                return
            time.sleep(0.1)
    paths.pidfile.unlink(missing_ok=True)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True


def down(settings: Settings) -> int | None:
    """Stop the broker we started for this port (by its PID only); returns that PID."""
    paths = BrokerPaths(Path(settings.kafka_home), settings.kafka_port)
    pid = read_pid(paths)
    if pid is not None:
        _stop_pid(pid, paths)
    return pid


def status(settings: Settings) -> tuple[int | None, bool]:
    """(pid or None, answers metadata requests)."""
    paths = BrokerPaths(Path(settings.kafka_home), settings.kafka_port)
    pid = read_pid(paths)
    answering = pid is not None and wait_for_metadata(
        f"127.0.0.1:{settings.kafka_port}", timeout=3.0, alive=lambda: True)
    return pid, answering


def wipe(settings: Settings) -> None:
    """Stop and delete this port's instance (data included); the jar cache stays."""
    down(settings)
    shutil.rmtree(BrokerPaths(Path(settings.kafka_home), settings.kafka_port).instance,
                  ignore_errors=True)

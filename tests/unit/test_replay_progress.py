"""`loadshape replay` shows a progress line on a terminal, and only there."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from app.commands.replay import _Progress
from app.simulate import iter_records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spans(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "spans.jsonl"
    lines = [orjson.dumps(r) for r in iter_records("steady", seed=3, sessions=1500)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _replay_with_stderr_on_a_terminal(args: list[str]) -> str:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "app", "replay", *args], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = b""
    while True:  # read while it runs: once the child is gone the master reads EIO
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            raise AssertionError(f"replay wrote nothing for 60 s; so far: {out!r}")
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, out
    return out.decode()


def test_a_terminal_gets_a_progress_line(spans, tmp_path):
    err = _replay_with_stderr_on_a_terminal([str(spans), "--alerts-out", str(tmp_path / "a")])
    assert "\rreplay: 4,096 lines (" in err  # the first report, at the first 4,096 lines
    assert "/s)" in err
    assert "sessions" in err.splitlines()[-1]  # the summary starts on a line of its own


def test_quiet_or_not_a_terminal_gets_only_the_summary(spans, tmp_path):
    err = _replay_with_stderr_on_a_terminal(
        [str(spans), "--alerts-out", str(tmp_path / "a"), "--quiet"])
    assert "lines (" not in err and "1500 sessions" in err
    piped = subprocess.run([sys.executable, "-m", "app", "replay", str(spans), "--alerts-out",
                            str(tmp_path / "b")], cwd=ROOT, capture_output=True, check=True)
    assert b"lines (" not in piped.stderr and b"1500 sessions" in piped.stderr


def test_progress_reports_at_most_every_half_second(capsys):
    now = [100.0]
    progress = _Progress(enabled=True, clock=lambda: now[0])
    for lines, t in [(4096, 100.1), (8192, 100.3), (12288, 100.6), (16384, 100.7)]:
        now[0] = t
        progress.tick(lines)
    progress.done()
    err = capsys.readouterr().err
    assert err == "\rreplay: 4,096 lines (40,960/s)\rreplay: 12,288 lines (20,480/s)\n"

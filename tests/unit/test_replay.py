"""`loadshape replay`: malformed lines are dead-lettered (exit 0) and change no alert;
sessions and alerts follow the contracts; bad invocations exit non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from app.cli import main
from app.simulate import iter_records
from schemas import Alert, DeadLetter, SessionShape

MALFORMED = [
    b'{"trace_id": "t", "span_id": ',                                   # truncated JSON
    b"\xff\xfe\x00 not utf-8",                                          # not UTF-8
    b'{"trace_id":"t","span_id":"s","session_id":"x","agent":"a","operation":"chat",'
    b'"attempt":0,"start_time_unix_nano":1,"end_time_unix_nano":2}',    # attempt < 1
    b"[1, 2, 3]",                                                       # not an object
    b'{"trace_id":"t","span_id":"s","session_id":"x","agent":"a","operation":"chat",'
    b'"start_time_unix_nano":9,"end_time_unix_nano":2}',                # ends before it starts
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    lines = [orjson.dumps(r) for r in iter_records("dev-to-support", seed=7, sessions=4000)]
    clean = tmp / "clean.jsonl"
    clean.write_bytes(b"\n".join(lines) + b"\n")
    mixed = tmp / "mixed.jsonl"
    step = len(lines) // (len(MALFORMED) + 1)
    out = []
    for i, line in enumerate(lines):
        if i and i % step == 0 and (i // step) <= len(MALFORMED):
            out.append(MALFORMED[i // step - 1])
        out.append(line)
    mixed.write_bytes(b"\n".join(out) + b"\n")
    return tmp, clean, mixed


def _replay(monkeypatch, path: Path, tmp: Path, tag: str) -> tuple[int, list, list, list]:
    monkeypatch.setenv("LOADSHAPE_BASELINE_SESSIONS", "500")
    alerts, dlq, sessions = tmp / f"{tag}.alerts", tmp / f"{tag}.dlq", tmp / f"{tag}.sessions"
    code = main(["replay", str(path), "--alerts-out", str(alerts), "--dlq-out", str(dlq),
                 "--sessions-out", str(sessions), "--quiet"])
    read = lambda p: [json.loads(x) for x in p.read_text().splitlines()]  # noqa: E731
    return code, read(alerts), read(dlq), read(sessions)


def test_malformed_lines_are_dead_lettered_and_change_nothing(files, monkeypatch):
    tmp, clean, mixed = files
    code_c, alerts_c, dlq_c, sessions_c = _replay(monkeypatch, clean, tmp, "clean")
    code_m, alerts_m, dlq_m, sessions_m = _replay(monkeypatch, mixed, tmp, "mixed")
    assert (code_c, code_m) == (0, 0)
    assert dlq_c == []
    assert len(dlq_m) == len(MALFORMED)
    letters = [DeadLetter.model_validate(d) for d in dlq_m]
    assert sorted(dl.original for dl in letters) == sorted(MALFORMED)
    assert all(dl.line and dl.reason for dl in letters)
    by_code = {dl.reason_code for dl in letters}
    assert {"invalid_json", "invalid_utf8", "invalid_field"} <= by_code
    assert {dl.field for dl in letters} >= {"attempt", "end_time_unix_nano"}
    assert alerts_m == alerts_c and sessions_m == sessions_c
    assert any(a["kind"] == "drift" for a in alerts_c)
    for a in alerts_c:
        Alert.model_validate(a)
    for s in sessions_c[:50]:
        SessionShape.model_validate(s)


def test_missing_file_cannot_run(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_bad_assumptions_file_names_file_and_field(tmp_path, capsys):
    spans = tmp_path / "s.jsonl"
    spans.write_text("")
    bad = tmp_path / "a.yaml"
    bad.write_text("assumptions:\n  - id: x\n    segment: {agent: a}\n    metric: fanout\n"
                   "    stat: p42\n    op: '<='\n    bound: 3\n    why: because\n")
    assert main(["replay", str(spans), "--assumptions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "a.yaml" in err and "stat" in err

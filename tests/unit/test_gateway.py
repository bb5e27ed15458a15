"""Gateway acceptance, guardrails, shadow mode, persistence/restart, Kafka shell, CLI."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest

from app.cli import main
from app.loop.gateway import Gateway, evaluate
from app.loop.gateway_client import GatewayClient, consumer_kwargs, persist_policy
from app.loop.policy import EXAMPLE_POLICY, load_policy
from app.loop.signing import sign
from app.settings import Settings
from schemas import RoutingPolicy

KEY = "test-key"


@pytest.fixture
def policy() -> RoutingPolicy:
    return load_policy(EXAMPLE_POLICY)


def edit(policy: RoutingPolicy, version: int, *, support=None, **top) -> dict:
    """The policy as a dict at ``version`` with the support segment's fields replaced."""
    d = policy.model_dump(mode="json")
    d.update(version=version, **top)
    if support:
        d["segments"][1].update(support)
    return d


def message(policy_dict: dict, key: str | None = KEY, mode: str = "auto", **over) -> bytes:
    msg = {"schema_version": 1, "policy_id": policy_dict["policy_id"],
           "version": policy_dict["version"], "created_at": 1, "mode": mode, "cause": ["a1"],
           "evidence": {}, "policy": policy_dict,
           "changes": [{"segment": {"agent": "support"}, "field": "context_cap", "old": 1, "new": 2}],
           **over}
    return json.dumps(sign(msg, key) if key else msg).encode()


def good(policy, version=2, cap=65536) -> bytes:
    return message(edit(policy, version, support={"context_cap": cap}))


def rejected(gw: Gateway, raw: bytes, reason: str) -> None:
    before = gw.policy
    verdict = gw.offer(raw)
    assert (verdict.accepted, verdict.reason) == (False, reason), verdict.detail
    assert gw.policy is before  # the served policy is unchanged


def test_applies_a_good_message(policy):
    gw = Gateway(policy, KEY)
    verdict = gw.offer(good(policy))
    assert verdict.line() == {"version": 2, "accepted": True, "reason": "ok"}
    assert gw.policy.version == 2 and gw.policy.segments[1].context_cap == 65536
    assert [(c.field, c.old, c.new) for c in verdict.changes] == [("context_cap", 16384, 65536)]
    assert gw.route({"agent": "support", "complexity": 0.9}).context_cap == 65536


def test_forged_signature(policy):
    rejected(Gateway(policy, KEY), message(edit(policy, 2), key="attacker"), "bad_signature")


def test_tampered_body(policy):
    msg = json.loads(good(policy))
    msg["policy"]["segments"][1]["context_cap"] = 200000
    rejected(Gateway(policy, KEY), json.dumps(msg).encode(), "bad_signature")


def test_missing_signature(policy):
    rejected(Gateway(policy, KEY), message(edit(policy, 2), key=None), "missing_signature")


def test_older_version_after_newer(policy):
    gw = Gateway(policy, KEY)
    assert gw.offer(good(policy, version=3)).accepted
    served = gw.policy
    rejected(gw, good(policy, version=2), "stale_version")
    rejected(gw, good(policy, version=3), "stale_version")  # a replay of the same version
    assert gw.policy is served and gw.counters["rejected"] == {"stale_version": 2}


def test_model_outside_catalog(policy):
    d = edit(policy, 2)
    d["models"].append({"name": "gpt-huge", "tier": 9, "capability": 1.0, "context_window": 10**6})
    d["segments"][1]["routes"][1]["model"] = "gpt-huge"
    rejected(Gateway(policy, KEY), message(d), "unknown_model")
    d = edit(policy, 2)
    d["models"][0]["context_window"] = 10**6  # a catalog spec is not the recalibrator's to change
    rejected(Gateway(policy, KEY), message(d), "unknown_model")


@pytest.mark.parametrize("support", [
    {"context_cap": 16384 * 4 + 1},  # more than x4
    {"context_cap": 8191},  # less than /2
    {"retry_budget": 6},  # +4
    {"routes": [{"max_complexity": 0.39, "model": "haiku-s"}, {"max_complexity": 1.0, "model": "opus-l"}]},
    {"routes": [{"max_complexity": 1.0, "model": "opus-l"}]},  # structural change
])
def test_over_large_step(policy, support):
    rejected(Gateway(policy, KEY), message(edit(policy, 2, support=support)), "step_too_large")


def test_steps_at_the_bounds_are_accepted(policy):
    support = {"context_cap": 65536, "retry_budget": 5, "routes": [
        {"max_complexity": 0.4, "model": "haiku-s"}, {"max_complexity": 1.0, "model": "opus-l"}]}
    assert Gateway(policy, KEY).offer(message(edit(policy, 2, support=support))).accepted


def test_removed_segment_wrong_policy_and_cap_above_window(policy):
    d = edit(policy, 2)
    del d["segments"][2]
    rejected(Gateway(policy, KEY), message(d), "step_too_large")
    other = edit(policy, 2, policy_id="other")
    rejected(Gateway(policy, KEY), message(other), "wrong_policy")
    wide = edit(policy, 2)
    wide["segments"][2]["context_cap"] = 262144  # search: x2 is within the step, not the windows
    rejected(Gateway(policy, KEY), message(wide), "cap_above_window")


def test_invalid_schema(policy):
    gw = Gateway(policy, KEY)
    rejected(gw, b"{not json", "invalid_schema")
    rejected(gw, b'"a string"', "invalid_schema")
    rejected(gw, message(edit(policy, 2), changes=[]), "invalid_schema")  # signed but invalid
    mismatch = json.loads(good(policy, version=2))
    mismatch["version"] = 5
    rejected(gw, json.dumps(sign(mismatch, KEY)).encode(), "invalid_schema")


def test_proposals_need_a_human(policy):
    rejected(Gateway(policy, KEY), message(edit(policy, 2), mode="propose"), "proposal_only")
    assert Gateway(policy, KEY, accept_proposals=True).offer(
        message(edit(policy, 2), mode="propose")).accepted


def test_shadow_mode_records_but_keeps_serving(policy):
    gw = Gateway(policy, KEY, shadow=True)
    verdict = gw.offer(good(policy, version=2, cap=65536))
    assert verdict.accepted and verdict.changes and gw.policy is policy
    # The next step is judged against what shadow mode would be serving (cap 65536 now).
    assert gw.offer(good(policy, version=3, cap=200000)).accepted
    assert gw.counters == {"applied": 0, "shadowed": 2, "rejected": {}}


def test_counters_by_reason(policy):
    gw = Gateway(policy, KEY)
    gw.offer(good(policy))
    gw.offer(good(policy))
    gw.offer(b"x")
    assert gw.counters == {"applied": 1, "shadowed": 0,
                           "rejected": {"invalid_schema": 1, "stale_version": 1}}


def test_first_message_bootstraps_without_policy(policy):
    assert evaluate(None, good(policy), KEY).accepted


# --- the shell: persistence, restart, Kafka -------------------------------------------------

def test_restart_resumes_from_persisted_policy(tmp_path, policy):
    path = tmp_path / "gw" / "reference.json"
    first = GatewayClient(policy, KEY, persist_path=path)
    assert "no persisted policy" in first.startup_note
    assert first.offer(good(policy)).accepted
    assert [p.name for p in path.parent.iterdir()] == ["reference.json"]  # no temp left behind
    # A new process: no Kafka at all, it starts from the persisted policy and routes with it.
    second = GatewayClient(policy, KEY, persist_path=path)
    assert second.policy.version == 2 and "resumed" in second.startup_note
    assert second.route({"agent": "support", "complexity": 0.95}).context_cap == 65536
    rejected(second.gateway, good(policy, version=2), "stale_version")


def test_corrupt_persisted_file_falls_back(tmp_path, policy, caplog):
    path = tmp_path / "p.json"
    path.write_text('{"policy_id": "reference", "version": ')
    with caplog.at_level(logging.INFO, logger="loadshape.gateway"):
        gw = GatewayClient(policy, KEY, persist_path=path)
    assert gw.policy == policy and gw.startup_note.startswith("corrupt persisted policy")
    assert "corrupt" in caplog.text
    assert gw.route({"agent": "support", "complexity": 0.1}).model == "haiku-s"


def test_foreign_or_older_persisted_policy_falls_back(tmp_path, policy):
    path = tmp_path / "p.json"
    persist_policy(path, policy.model_copy(update={"policy_id": "other", "version": 9}))
    assert "not 'reference'" in GatewayClient(policy, KEY, persist_path=path).startup_note
    persist_policy(path, policy)
    newer_initial = policy.model_copy(update={"version": 4})
    gw = GatewayClient(newer_initial, KEY, persist_path=path)
    assert gw.policy.version == 4 and "not newer" in gw.startup_note


def test_persist_failure_keeps_serving(tmp_path, policy):
    blocker = tmp_path / "file"
    blocker.write_text("")
    gw = GatewayClient(policy, KEY, persist_path=blocker / "sub" / "p.json")  # parent is a file
    assert gw.offer(good(policy)).accepted and gw.policy.version == 2
    assert gw.counters["persist_errors"] == 1


class FakeConsumer:
    def __init__(self, records, fail_start=False):
        self.records, self.fail_start, self.stopped = records, fail_start, False

    async def start(self):
        if self.fail_start:
            raise ConnectionError("broker down")

    async def stop(self):
        self.stopped = True

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for value in self.records:
            yield SimpleNamespace(value=value)
        await asyncio.sleep(3600)  # a live consumer waits for more


def test_consumer_survives_broker_down_then_applies(policy):
    settings = Settings()
    attempts = []

    def factory(topic, **kwargs):
        attempts.append((topic, kwargs["auto_offset_reset"], kwargs["group_id"]))
        down = len(attempts) < 3
        return FakeConsumer([None, good(policy), b"junk"], fail_start=down)

    async def scenario():
        gw = GatewayClient(policy, KEY)
        await gw.start(settings, consumer_factory=factory, backoff=(0.001, 0.002))
        for _ in range(500):
            if gw.policy.version == 2:
                break
            assert gw.route({"agent": "support"}).model == "haiku-s"  # routes while down
            await asyncio.sleep(0.001)
        await gw.stop()
        return gw

    gw = asyncio.run(scenario())
    assert gw.policy.version == 2
    assert attempts[0] == (settings.topic_recalibrations, "earliest", None) and len(attempts) >= 3
    assert gw.counters["consumer_errors"] == 2
    assert gw.counters["rejected"] == {"invalid_schema": 1}  # the junk record; tombstone skipped


def test_consumer_kwargs_use_broker_client_config():
    kwargs, source = consumer_kwargs(Settings(kafka_port=19092))
    assert source == "app.broker.client_config"
    assert kwargs["bootstrap_servers"] == ["127.0.0.1:19092"] and kwargs["enable_auto_commit"] is False


# --- CLI -------------------------------------------------------------------------------------

def test_cli_check_in_order(tmp_path, policy, capsys, monkeypatch):
    lines = [good(policy, version=3), good(policy, version=2),
             message(edit(policy, 4), key="forged"), message(edit(policy, 5), key=None),
             good(policy, version=6, cap=200000 * 2)]
    path = tmp_path / "recal.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setenv("MY_KEY", KEY)
    code = main(["gateway", "check", str(path), "--policy", str(EXAMPLE_POLICY), "--key-env", "MY_KEY"])
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert out == [
        {"version": 3, "accepted": True, "reason": "ok"},
        {"version": 2, "accepted": False, "reason": "stale_version"},
        {"version": 4, "accepted": False, "reason": "bad_signature"},
        {"version": 5, "accepted": False, "reason": "missing_signature"},
        {"version": 6, "accepted": False, "reason": "step_too_large"},
    ]


def test_cli_check_needs_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LOADSHAPE_RECALIBRATION_KEY", raising=False)
    path = tmp_path / "r.jsonl"
    path.write_text("")
    assert main(["gateway", "check", str(path)]) == 2
    assert "no recalibration key" in capsys.readouterr().err


def test_cli_sign_approve_then_check(tmp_path, policy, capsys, monkeypatch):
    monkeypatch.setenv("LOADSHAPE_RECALIBRATION_KEY", KEY)
    proposal = tmp_path / "proposal.jsonl"
    proposal.write_bytes(message(edit(policy, 2), key=None, mode="propose") + b"\n")
    assert main(["gateway", "sign", str(proposal), "--approve"]) == 0
    signed = tmp_path / "signed.jsonl"
    signed.write_text(capsys.readouterr().out)
    assert main(["gateway", "check", str(signed), "--policy", str(EXAMPLE_POLICY)]) == 0
    assert json.loads(capsys.readouterr().out)["accepted"] is True

"""The gateway against the real broker: Kafka down at start, a corrupt persisted policy, and a
flood of invalid recalibrations. In every case it keeps routing with the last good policy and
says why (startup note, counters by reason, log lines); once Kafka is reachable it applies the
one good recalibration. (tests/unit/test_gateway.py covers the same logic with fakes.)"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time

import pytest
from reliability_data import isolated

from app.loop.gateway_client import GatewayClient
from app.loop.policy import EXAMPLE_POLICY, load_policy
from app.loop.signing import sign
from app.testing import produce

pytestmark = pytest.mark.integration
KEY = "gateway-resilience-key"


def recalibration(policy, version: int, *, cap: int = 65536, key: str | None = KEY, **over) -> bytes:
    body = policy.model_dump(mode="json")
    body["version"] = version
    for seg in body["segments"]:
        if seg["segment"]["agent"] == "support":
            old, seg["context_cap"] = seg["context_cap"], cap
    msg = {"schema_version": 1, "policy_id": body["policy_id"], "version": version, "created_at": 1,
           "mode": "auto", "cause": ["a1"], "evidence": {}, "policy": body,
           "changes": [{"segment": {"agent": "support"}, "field": "context_cap", "old": old, "new": cap}],
           **over}
    return json.dumps(sign(msg, key) if key else msg).encode()


def flood(policy, n: int, seed: int = 3) -> list[bytes]:
    """Invalid recalibrations of every kind the gateway must refuse."""
    rng = random.Random(seed)
    good = recalibration(policy, 7)
    kinds = [
        lambda: recalibration(policy, rng.randint(2, 10**6), key="forged"),  # bad signature
        lambda: recalibration(policy, rng.randint(2, 10**6), key=None),  # unsigned
        lambda: recalibration(policy, rng.randint(2, 10**6), cap=16384 * 64),  # step too large
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))),  # junk
        lambda: good[: rng.randint(0, len(good) - 1)],  # truncated
        lambda: recalibration(policy, rng.randint(2, 10**6), mode="propose"),  # proposal only
    ]
    return [kinds[i % len(kinds)]() for i in range(n)]


class TcpProxy:
    """A port that refuses connections until ``start()``, then forwards to ``target``."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def _pipe(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def copy(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
def policy():
    return load_policy(EXAMPLE_POLICY)


def test_kafka_down_at_start_then_up_with_corrupt_persisted_file(kafka_settings, tmp_path, policy,
                                                                  caplog):
    settings = isolated(kafka_settings, tmp_path)
    produce(settings, settings.topic_recalibrations, [(b"reference", recalibration(policy, 2))])
    persisted = tmp_path / "gw" / "reference.json"
    persisted.parent.mkdir()
    persisted.write_bytes(b'{"policy_id": "reference", "version": 9, "segm')  # torn write
    proxy = TcpProxy(kafka_settings.kafka_port)
    down = settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{proxy.port}"})

    async def scenario():
        gw = GatewayClient(policy, KEY, persist_path=persisted)
        await gw.start(down, backoff=(0.05, 0.2))
        routed = []
        for _ in range(30):  # Kafka is unreachable: route() answers from the initial policy
            routed.append(gw.route({"agent": "support", "complexity": 0.9}).context_cap)
            await asyncio.sleep(0.05)
        errors_while_down, connected_while_down = gw.counters["consumer_errors"], gw.connected
        await proxy.start()  # Kafka reachable
        deadline = time.monotonic() + 60
        while gw.policy.version != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await gw.stop()
        await proxy.stop()
        return gw, routed, errors_while_down, connected_while_down

    with caplog.at_level(logging.INFO, logger="loadshape.gateway"):
        gw, routed, errors, connected = asyncio.run(scenario())
    assert gw.startup_note.startswith("corrupt persisted policy")
    assert set(routed) == {policy.segments[1].context_cap} and not connected and errors >= 2
    assert "gateway consumer error" in caplog.text and "retrying" in caplog.text
    assert gw.policy.version == 2 and gw.route({"agent": "support"}).context_cap == 65536
    assert json.loads(persisted.read_text())["version"] == 2  # the good one replaced the torn file


def test_flood_of_invalid_recalibrations_keeps_the_last_good_policy(kafka_settings, tmp_path,
                                                                    policy, caplog):
    settings = isolated(kafka_settings, tmp_path)
    bad = flood(policy, 3000)
    good = recalibration(policy, 7)
    records = [(b"reference", v) for v in bad[:1500] + [good] + bad[1500:]]
    produce(settings, settings.topic_recalibrations, records)

    async def scenario():
        gw = GatewayClient(policy, KEY, persist_path=tmp_path / "p.json")
        await gw.start(settings, backoff=(0.05, 0.2))
        caps, deadline = set(), time.monotonic() + 90
        while time.monotonic() < deadline:
            caps.add(gw.route({"agent": "support", "complexity": 0.9}).context_cap)  # always answers
            c = gw.counters
            if c["applied"] + sum(c["rejected"].values()) >= len(records):
                break
            await asyncio.sleep(0.01)
        await gw.stop()
        return gw, caps

    with caplog.at_level(logging.WARNING, logger="loadshape.gateway"):
        gw, caps = asyncio.run(scenario())
    c = gw.counters
    print(f"\nflood: applied {c['applied']}, rejected {c['rejected']}")
    assert c["applied"] == 1 and sum(c["rejected"].values()) == len(bad)
    assert {"bad_signature", "missing_signature", "step_too_large", "invalid_schema",
            "proposal_only"} <= set(c["rejected"])
    assert gw.policy.version == 7 and caps <= {policy.segments[1].context_cap, 65536}
    assert caplog.text.count("recalibration rejected") == len(bad)

"""A dedicated real Kafka broker for the integration tests (KRaft, 127.0.0.1).

It runs on its own port (``LOADSHAPE_TEST_KAFKA_PORT``, default 39092) with a fresh data
directory, so it never touches a developer's broker; the jar cache is shared.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from app.broker import manager
from app.broker.topics import TopicSpec, ensure_topics
from app.settings import Settings
from app.testing import isolated_settings


def _test_settings(**overrides) -> Settings:
    port = int(os.environ.get("LOADSHAPE_TEST_KAFKA_PORT", "39092"))
    return Settings(kafka_port=port, bootstrap_servers=f"127.0.0.1:{port}", **overrides)


@pytest.fixture(scope="session")
def kafka_settings():
    settings = _test_settings()
    manager.wipe(settings)
    try:
        manager.up(settings)
    except manager.BrokerError as err:
        pytest.fail(f"could not start the test Kafka broker: {err}")
    asyncio.run(ensure_topics(settings))
    yield settings
    manager.down(settings)


@pytest.fixture
def fresh_topics(kafka_settings):
    """Settings whose topic names are unique to this test (topics created, same partitions)."""
    return isolated_settings(kafka_settings, "loadshape")


def make_topic(settings: Settings, name: str, partitions: int = 1) -> None:
    asyncio.run(ensure_topics(settings, [TopicSpec(name, partitions, {})]))


from sasl_broker import kafka_sasl_settings  # noqa: E402, F401  (session fixture, own broker)

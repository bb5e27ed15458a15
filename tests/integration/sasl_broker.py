"""``kafka_sasl_settings``: a session-scoped broker with a SASL_PLAINTEXT listener and SCRAM
users (SHA-256 and SHA-512), on its own ports below the Linux ephemeral range:
``LOADSHAPE_TEST_SASL_KAFKA_PORT`` (default 28692) for its PLAINTEXT listener, +1 controller,
+2 SASL. The settings it yields connect over SASL/SCRAM-SHA-256 as ``alice`` with a random
password (distinctive, so a leak into logs or dumps is unmistakable).
"""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest

from app.broker import manager
from app.broker.topics import ensure_topics
from app.settings import Settings

SCRAM_USER = "alice"


@pytest.fixture(scope="session")
def kafka_sasl_settings():
    port = int(os.environ.get("LOADSHAPE_TEST_SASL_KAFKA_PORT", "28692"))
    password = "scram-" + secrets.token_hex(12)
    plain = Settings(kafka_port=port, bootstrap_servers=f"127.0.0.1:{port}")
    manager.wipe(plain)
    try:
        manager.up(plain, sasl_port=port + 2, scram_users={SCRAM_USER: password})
    except manager.BrokerError as err:
        pytest.fail(f"could not start the SASL test broker: {err}")
    settings = Settings(kafka_port=port, bootstrap_servers=f"127.0.0.1:{port + 2}",
                        security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                        sasl_username=SCRAM_USER, sasl_password=password)
    asyncio.run(ensure_topics(settings))  # over SASL: the listener and the user work
    yield settings
    manager.wipe(plain)

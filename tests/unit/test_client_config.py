"""Kafka security settings reach every client (producer, consumer, admin, Faust) and never leak."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from app.broker.client_config import (
    aiokafka_kwargs,
    batch_consumer_kwargs,
    batch_producer_kwargs,
    describe,
    faust_broker_kwargs,
    state_reader_kwargs,
)
from app.settings import Settings

SASL_PASSWORD = "sasl-pw-7f3a9c"  # distinctive, so a leak is unmistakable
KEY_PASSWORD = "key-pw-51be02"
SECRETS = (SASL_PASSWORD, KEY_PASSWORD)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed cert (also used as CA) and its passphrase-protected key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=loadshape-test",
         "-passout", f"pass:{KEY_PASSWORD}"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def scram_tls(tls_files):
    cert, key = tls_files
    return Settings(
        bootstrap_servers="k1:9093,k2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="agent-writer",
        sasl_password=SASL_PASSWORD,
        ssl_cafile=cert,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_key_password=KEY_PASSWORD,
    )


def _clients(kwargs):
    """Build (not start) producer, consumer and admin client; return their AIOKafkaClients."""

    async def build():
        producer = AIOKafkaProducer(**kwargs)
        consumer = AIOKafkaConsumer("agent.spans", group_id="g", **kwargs)
        admin = AIOKafkaAdminClient(**kwargs)
        clients = [producer.client, consumer._client, admin._client]
        await consumer.stop()
        await producer.stop()
        await admin.close()
        return clients

    return asyncio.run(build())


def test_scram_over_tls_reaches_producer_consumer_and_admin(scram_tls):
    kwargs = aiokafka_kwargs(scram_tls)
    for client in _clients(kwargs):
        assert client._bootstrap_servers == ["k1:9093", "k2:9093"]
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "agent-writer"
        assert client._sasl_plain_password == SASL_PASSWORD
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert client._ssl_context.get_ca_certs()[0]["subject"] == ((("commonName", "loadshape-test"),),)


def _stage1_clients(settings):
    """Stage 1's batch group consumer, its producer and its state reader, as it builds them."""

    async def build():
        consumer = AIOKafkaConsumer(**batch_consumer_kwargs(settings, group_id="app-stage1",
                                                            session_timeout_s=6))
        producer = AIOKafkaProducer(**batch_producer_kwargs(settings))
        reader = AIOKafkaConsumer(**state_reader_kwargs(settings))
        out = {"consumer": consumer, "producer": producer, "reader": reader}
        for c in (consumer, reader):
            await c.stop()
        await producer.stop()
        return out

    return asyncio.run(build())


def test_scram_over_tls_reaches_stage1_consumer_producer_and_state_reader(scram_tls):
    clients = _stage1_clients(scram_tls)
    for name, built in clients.items():
        client = built.client if name == "producer" else built._client
        assert client._bootstrap_servers == ["k1:9093", "k2:9093"], name
        assert (client._security_protocol, client._sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
        assert client._sasl_plain_username == "agent-writer"
        assert client._sasl_plain_password == SASL_PASSWORD
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
    consumer = clients["consumer"]
    assert consumer._group_id == "app-stage1" and consumer._enable_auto_commit is False
    assert consumer._session_timeout_ms == 6000
    assert clients["reader"]._group_id is None
    assert clients["producer"]._sender._acks == -1  # "all": offsets wait for these acks


def test_tls_only_reaches_stage1_clients(tls_files):
    cert, key = tls_files
    s = Settings(security_protocol="SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key,
                 ssl_key_password=KEY_PASSWORD)
    for kwargs in (batch_consumer_kwargs(s, group_id="g"), batch_producer_kwargs(s),
                   state_reader_kwargs(s)):
        assert not any(k.startswith("sasl") for k in kwargs)
        assert kwargs["security_protocol"] == "SSL"
        assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    for name, built in _stage1_clients(s).items():
        client = built.client if name == "producer" else built._client
        assert client._security_protocol == "SSL" and client._ssl_context is not None, name


def test_scram_without_tls_has_no_ssl_context():
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                 sasl_username="u", sasl_password=SASL_PASSWORD)
    kwargs = aiokafka_kwargs(s)
    assert "ssl_context" not in kwargs
    for client in _clients(kwargs):
        assert (client._security_protocol, client._sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")
        assert client._sasl_plain_password == SASL_PASSWORD


def test_tls_only_reaches_clients_without_sasl(tls_files):
    cert, key = tls_files
    s = Settings(security_protocol="SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key,
                 ssl_key_password=KEY_PASSWORD)
    kwargs = aiokafka_kwargs(s)
    assert not any(k.startswith("sasl") for k in kwargs)
    for client in _clients(kwargs):
        assert client._security_protocol == "SSL"
        assert isinstance(client._ssl_context, ssl.SSLContext)


def test_wrong_key_password_fails_loudly(tls_files):
    cert, key = tls_files
    s = Settings(security_protocol="SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key,
                 ssl_key_password="wrong")
    with pytest.raises(ssl.SSLError):
        aiokafka_kwargs(s)


def test_faust_credentials_give_faust_the_same_security(scram_tls):
    from faust.auth import SASLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    fk = faust_broker_kwargs(scram_tls)
    assert fk["broker"] == "kafka://k1:9093;kafka://k2:9093"
    creds = fk["broker_credentials"]
    assert isinstance(creds, SASLCredentials)
    # what faust's aiokafka driver hands to its consumers and producers
    auth = credentials_to_aiokafka_auth(creds)
    ours = aiokafka_kwargs(scram_tls)
    for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert auth[key] == ours[key], key
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_faust_tls_only_and_plaintext(tls_files):
    from faust.auth import SSLCredentials

    cert, key = tls_files
    tls = Settings(security_protocol="SSL", ssl_cafile=cert)
    assert isinstance(faust_broker_kwargs(tls)["broker_credentials"], SSLCredentials)
    assert faust_broker_kwargs(Settings())["broker_credentials"] is None


def test_faust_app_accepts_the_kwargs(scram_tls):
    import faust

    app = faust.App("loadshape-test-cfg", **faust_broker_kwargs(scram_tls))
    assert [str(u) for u in app.conf.broker] == ["kafka://k1:9093", "kafka://k2:9093"]
    assert app.conf.broker_credentials.mechanism.value == "SCRAM-SHA-512"


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_no_secret_in_settings_dumps_or_descriptions(scram_tls):
    _assert_no_secret(str(scram_tls))
    _assert_no_secret(repr(scram_tls))
    _assert_no_secret(str(scram_tls.masked_dump()))
    _assert_no_secret(describe(aiokafka_kwargs(scram_tls)))
    _assert_no_secret(describe(batch_consumer_kwargs(scram_tls, group_id="g")))
    _assert_no_secret(describe(batch_producer_kwargs(scram_tls)))
    described = describe(faust_broker_kwargs(scram_tls))
    _assert_no_secret(described)
    assert "mechanism='SCRAM-SHA-512'" in described and "username='agent-writer'" in described


def test_secrets_from_environment_are_masked(monkeypatch, tls_files):
    cert, key = tls_files
    monkeypatch.setenv("LOADSHAPE_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LOADSHAPE_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("LOADSHAPE_SASL_USERNAME", "env-user")
    monkeypatch.setenv("LOADSHAPE_SASL_PASSWORD", SASL_PASSWORD)
    monkeypatch.setenv("LOADSHAPE_SSL_CAFILE", str(cert))
    s = Settings()
    assert aiokafka_kwargs(s)["sasl_plain_password"] == SASL_PASSWORD
    _assert_no_secret(repr(s) + str(s) + str(s.masked_dump()) + describe(aiokafka_kwargs(s)))


def test_emitter_logs_never_show_secrets(scram_tls, caplog):
    from app.emitter import SpanEmitter

    async def run():
        emitter = SpanEmitter(scram_tls.model_copy(update={"bootstrap_servers": "127.0.0.1:1"}))
        await emitter.start()
        await asyncio.sleep(0.3)  # at least one failed connection attempt is logged
        await emitter.close(timeout=0.2)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(run())
    assert "span emitter" in caplog.text and "'**********'" in caplog.text
    _assert_no_secret(caplog.text)

"""Kafka client configuration built from ``Settings``: the one place secrets are unwrapped.

``aiokafka_kwargs`` feeds ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and
``AIOKafkaAdminClient`` alike (stage 1's batch clients add their tuning to it:
``batch_consumer_kwargs``, ``batch_producer_kwargs``, ``state_reader_kwargs``);
``faust_broker_kwargs`` feeds ``faust.App``. ``describe``
renders either for logs with every secret masked.

>>> from app.settings import Settings
>>> s = Settings(bootstrap_servers="k1:9092, k2:9092", security_protocol="SASL_PLAINTEXT",
...              sasl_mechanism="SCRAM-SHA-512", sasl_username="agent", sasl_password="hunter2")
>>> kw = aiokafka_kwargs(s)
>>> kw["bootstrap_servers"], kw["sasl_mechanism"], kw["sasl_plain_username"]
(['k1:9092', 'k2:9092'], 'SCRAM-SHA-512', 'agent')
>>> print(describe(kw))  # doctest: +NORMALIZE_WHITESPACE
bootstrap_servers=['k1:9092', 'k2:9092'] sasl_mechanism='SCRAM-SHA-512'
sasl_plain_password='**********' sasl_plain_username='agent' security_protocol='SASL_PLAINTEXT'
>>> faust_broker_kwargs(s)["broker"]
'kafka://k1:9092;kafka://k2:9092'
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from app.settings import Settings

MASK = "**********"
# Key fragments whose values are secrets whatever their type.
_SECRET_KEY_PARTS = ("password", "secret", "token", "credential")


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


def bootstrap_list(settings: Settings) -> list[str]:
    """``host:port`` entries of ``settings.bootstrap_servers``.

    >>> bootstrap_list(Settings(bootstrap_servers="a:1,b:2 ,"))
    ['a:1', 'b:2']
    """
    return [h.strip() for h in settings.bootstrap_servers.split(",") if h.strip()]


def uses_ssl(settings: Settings) -> bool:
    return settings.security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.security_protocol.startswith("SASL_")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS context from the settings' CA/cert/key files, or None when TLS is off."""
    if not uses_ssl(settings):
        return None
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
        password=_reveal(settings.ssl_key_password),
    )


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection/security kwargs common to aiokafka's producer, consumer and admin client.

    >>> sorted(aiokafka_kwargs(Settings(kafka_port=19092)).items())
    [('bootstrap_servers', ['127.0.0.1:19092']), ('security_protocol', 'PLAINTEXT')]
    """
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_list(settings),
        "security_protocol": settings.security_protocol,
    }
    if uses_sasl(settings):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = _reveal(settings.sasl_password)
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    return kwargs


# How long a fetch of stage 2's (Faust's) consumer may wait for data: the longer, the later a
# partition drained meanwhile is fetched again (``app.stream.faust_offsets.shorten_fetch_wait``).
# Faust's is 1500 ms; at 100 ms an idle worker sends ~10 small fetches a second. Stage 1's batch
# consumer keeps aiokafka's 500 ms: it fetches far more than it waits (at 100 ms one bench run
# folded 59,376 spans/s instead of 75,000-81,000).
FETCH_MAX_WAIT_MS = 100


def batch_consumer_kwargs(settings: Settings, *, group_id: str, session_timeout_s: float = 10.0,
                          heartbeat_interval_s: float = 3.0, rebalance_timeout_s: float = 60.0,
                          max_poll_interval_s: float = 300.0) -> dict[str, Any]:
    """Stage 1's batch group consumer: security as every client, manual commits, large fetches.

    >>> kw = batch_consumer_kwargs(Settings(kafka_port=19092), group_id="g", session_timeout_s=6)
    >>> kw["group_id"], kw["enable_auto_commit"], kw["session_timeout_ms"], kw["bootstrap_servers"]
    ('g', False, 6000, ['127.0.0.1:19092'])
    """
    return {
        **aiokafka_kwargs(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 << 20,
        "fetch_max_bytes": 16 << 20,
        "session_timeout_ms": int(session_timeout_s * 1000),
        "heartbeat_interval_ms": int(heartbeat_interval_s * 1000),
        "rebalance_timeout_ms": int(rebalance_timeout_s * 1000),
        "max_poll_interval_ms": int(max_poll_interval_s * 1000),
    }


def state_reader_kwargs(settings: Settings) -> dict[str, Any]:
    """A group-less consumer that reads a state topic from its beginning (restore)."""
    return {**aiokafka_kwargs(settings), "group_id": None, "enable_auto_commit": False,
            "auto_offset_reset": "earliest", "max_partition_fetch_bytes": 8 << 20,
            "fetch_max_bytes": 32 << 20, "fetch_max_wait_ms": 50}


def batch_producer_kwargs(settings: Settings) -> dict[str, Any]:
    """Stage 1's producer (sessions, heartbeats, dead letters, state checkpoints): acks from
    every replica, since offsets are committed only once its records are acknowledged."""
    return {**aiokafka_kwargs(settings), "acks": "all", "linger_ms": 5,
            "max_batch_size": 1 << 20, "max_request_size": 8 << 20}


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    """``broker=`` and ``broker_credentials=`` for ``faust.App(...)``.

    >>> faust_broker_kwargs(Settings(kafka_port=19092))
    {'broker': 'kafka://127.0.0.1:19092', 'broker_credentials': None}
    """
    import faust  # lazily: importing faust is slow and the emitter never needs it

    broker = ";".join(f"kafka://{hostport}" for hostport in bootstrap_list(settings))
    context = ssl_context(settings)
    credentials: Any = None
    if uses_sasl(settings):
        credentials = faust.SASLCredentials(
            username=settings.sasl_username,
            password=_reveal(settings.sasl_password),
            ssl_context=context,  # a context makes faust use SASL_SSL
            mechanism=settings.sasl_mechanism,
        )
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return {"broker": broker, "broker_credentials": credentials}


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in _SECRET_KEY_PARTS) and "username" not in lowered


def _show(key: str, value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, SecretStr):
        return repr(MASK)
    if isinstance(value, ssl.SSLContext):
        return f"<SSLContext verify_mode={value.verify_mode.name}>"
    if hasattr(value, "protocol") and hasattr(value, "__dict__"):  # faust credentials objects
        return _show_credentials(value)
    if _is_secret_key(key):
        return repr(MASK)
    return repr(value)


def _show_credentials(creds: Any) -> str:
    fields = {k: v for k, v in vars(creds).items() if not k.startswith("_")}
    for attr in ("protocol", "mechanism"):  # class-level defaults are not in vars()
        if hasattr(creds, attr):
            fields.setdefault(attr, getattr(creds, attr))
    fields = {k: getattr(v, "value", v) for k, v in fields.items()}
    inner = " ".join(f"{k}={_show(k, v)}" for k, v in sorted(fields.items()))
    return f"<{type(creds).__name__} {inner}>"


def describe(kwargs: Mapping[str, Any]) -> str:
    """One log line for a kwargs dict, secrets masked (also inside faust credentials).

    >>> describe({"sasl_plain_password": "s3cret", "ssl_key_password": None, "x": 1})
    "sasl_plain_password='**********' ssl_key_password=None x=1"
    """
    return " ".join(f"{k}={_show(k, v)}" for k, v in sorted(kwargs.items()))

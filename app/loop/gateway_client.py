"""Gateway client: the thin shell around ``app.loop.gateway.Gateway``.

* persists the last good policy (write temp + fsync + rename) and resumes from it at start;
  a corrupt or foreign persisted file falls back to the initial policy, and ``startup_note``
  says why;
* consumes ``settings.topic_recalibrations`` from the beginning (compacted: the newest
  version per policy survives) in a background task that retries with backoff while the
  broker is down and never raises into the caller;
* ``route(features)`` always answers from the policy in memory, Kafka or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from app.loop.gateway import Features, Gateway, Verdict
from app.loop.guardrails import Guardrails, unknown_models
from app.loop.policy import RouteDecision, load_policy
from app.loop.signing import Key
from schemas.policy import RoutingPolicy
from schemas.validation import decode

log = logging.getLogger("loadshape.gateway")


def persist_policy(path: Path, policy: RoutingPolicy) -> None:
    """Atomically replace ``path`` with ``policy`` as JSON (a crash leaves old or new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(policy.model_dump_json(indent=2).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def resume(path: Path | None, initial: RoutingPolicy) -> tuple[RoutingPolicy, str]:
    """The policy to start from and a sentence saying why."""
    fallback = "serving the initial policy"
    if path is None or not path.exists():
        return initial, f"no persisted policy; {fallback} v{initial.version}"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return initial, f"cannot read persisted policy {path}: {exc}; {fallback}"
    decoded = decode(RoutingPolicy, raw)
    if not decoded.ok:
        return initial, f"corrupt persisted policy {path}: {decoded.reason}; {fallback}"
    p = decoded.value
    if p.policy_id != initial.policy_id:
        return initial, f"persisted policy is {p.policy_id!r}, not {initial.policy_id!r}; {fallback}"
    if unknown := unknown_models(initial, p):
        return initial, f"persisted policy uses models not in the catalog ({', '.join(unknown)}); {fallback}"
    if p.version <= initial.version:
        return initial, f"persisted v{p.version} is not newer than initial v{initial.version}; {fallback}"
    return p, f"resumed persisted policy {p.policy_id} v{p.version} from {path}"


def consumer_kwargs(settings) -> tuple[dict[str, Any], str]:
    """aiokafka consumer kwargs and where the connection config came from."""
    try:
        module = importlib.import_module("app.broker.client_config")
        base, source = dict(module.aiokafka_kwargs(settings)), "app.broker.client_config"
    except ImportError:
        base, source = {"bootstrap_servers": settings.bootstrap_servers}, "bootstrap_servers only"
    # No group: every gateway reads the whole compacted topic and keeps no offsets.
    base.update(group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    return base, source


def _aiokafka_consumer(topic: str, **kwargs):
    from aiokafka import AIOKafkaConsumer  # lazy: the library works without Kafka installed

    return AIOKafkaConsumer(topic, **kwargs)


class GatewayClient:
    """Routing state + persistence + a resilient Kafka subscription."""

    def __init__(
        self,
        initial: RoutingPolicy,
        key: Key,
        *,
        persist_path: Path | None = None,
        shadow: bool = False,
        accept_proposals: bool = False,
        guardrails: Guardrails = Guardrails(),
    ):
        policy, self.startup_note = resume(persist_path, initial)
        log.info("gateway start: %s", self.startup_note)
        self.gateway = Gateway(policy, key, guardrails=guardrails, shadow=shadow,
                               accept_proposals=accept_proposals)
        self.persist_path = persist_path
        self.persist_errors = self.consumer_errors = 0
        self.connected = False
        self._task: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, settings, initial: RoutingPolicy | None = None, **kw) -> GatewayClient:
        if initial is None:
            if settings.policy_file is None:
                raise ValueError("no initial policy: set LOADSHAPE_POLICY_FILE or pass one")
            initial = load_policy(settings.policy_file)
        if settings.recalibration_key is None:
            raise ValueError("LOADSHAPE_RECALIBRATION_KEY is not set: cannot verify recalibrations")
        kw.setdefault("persist_path", Path(settings.state_dir) / "gateway" / f"{initial.policy_id}.json")
        return cls(initial, settings.recalibration_key.get_secret_value(), **kw)

    @property
    def policy(self) -> RoutingPolicy:
        return self.gateway.policy

    @property
    def counters(self) -> dict[str, Any]:
        return {**self.gateway.counters, "persist_errors": self.persist_errors,
                "consumer_errors": self.consumer_errors}

    def route(self, features: Features | Mapping[str, Any]) -> RouteDecision:
        return self.gateway.route(features)

    def offer(self, raw: bytes | str) -> Verdict:
        """Evaluate one message; on apply, persist the new policy (a failed write keeps serving)."""
        verdict = self.gateway.offer(raw)
        line = json.dumps({**verdict.line(), "detail": verdict.detail})
        if not verdict.accepted:
            log.warning("recalibration rejected: %s", line)
        elif self.gateway.shadow:
            changes = [c.model_dump(mode="json") for c in verdict.changes]
            log.info("shadow: would apply %s changes=%s", line, json.dumps(changes))
        else:
            log.info("recalibration applied: %s", line)
            self._persist()
        return verdict

    def _persist(self) -> None:
        if self.persist_path is None:
            return
        try:
            persist_policy(self.persist_path, self.gateway.policy)
        except OSError as exc:
            self.persist_errors += 1
            log.error("could not persist policy to %s: %s", self.persist_path, exc)

    async def start(self, settings, consumer_factory: Callable[..., Any] | None = None,
                    backoff: tuple[float, float] = (0.5, 30.0)) -> None:
        """Start consuming in the background; returns at once."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.consume_forever(settings, consumer_factory, backoff))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def consume_forever(self, settings, consumer_factory=None, backoff=(0.5, 30.0)) -> None:
        """Consume until cancelled; broker/config errors are logged, counted and retried."""
        factory = consumer_factory or _aiokafka_consumer
        delay = backoff[0]
        while True:
            if await self._consume_once(factory, settings):
                delay = backoff[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff[1])

    async def _consume_once(self, factory, settings) -> bool:
        """One connection's lifetime; True if it connected at all."""
        consumer, started = None, False
        try:
            kwargs, source = consumer_kwargs(settings)
            consumer = factory(settings.topic_recalibrations, **kwargs)
            await consumer.start()
            started = self.connected = True
            log.info("gateway consuming %s (config: %s)", settings.topic_recalibrations, source)
            async for record in consumer:
                if record.value is not None:  # None: a compaction tombstone
                    self.offer(record.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # broker down, auth, TLS files: keep serving, retry later
            self.consumer_errors += 1
            log.warning("gateway consumer error (%s): %s; retrying", type(exc).__name__, exc)
        finally:
            self.connected = False
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()
        return started

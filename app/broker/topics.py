"""Create the project's topics with partition counts from settings (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import Settings

COMPACTED = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
             "segment.ms": "600000"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of DESIGN.md with its partitions and config.

    >>> [t.name for t in topic_specs(Settings()) if t.config]
    ['routing.recalibrations', 'loadshape-stage1-state']
    """
    compacted = {settings.topic_recalibrations, settings.stage1_state_topic}
    return [
        TopicSpec(name, parts, COMPACTED if name in compacted else {})
        for name, parts in settings.all_topics().items()
    ]


def stage1_state_spec(settings: Settings) -> TopicSpec:
    """The stage-1 state topic: compacted, one partition per span partition (RF 1)."""
    return TopicSpec(settings.stage1_state_topic, settings.spans_partitions, COMPACTED)


async def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> dict[str, str]:
    """Create missing topics; returns name -> "created" | "exists" | "exists (N partitions)"."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from app.broker.client_config import aiokafka_kwargs

    specs = specs if specs is not None else topic_specs(settings)
    admin = AIOKafkaAdminClient(**aiokafka_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(s.name, s.partitions, 1, topic_configs=s.config)
               for s in specs if s.name not in existing]
        if new:
            resp = await admin.create_topics(new)
            for name, code, message in _topic_errors(resp):
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (a racing creator)
                    raise RuntimeError(f"creating topic {name} failed: error {code} {message}")
        meta = await admin.describe_topics([s.name for s in specs])
        counts = {m["topic"]: len(m["partitions"]) for m in meta}
        return {s.name: _state(s, existing, counts.get(s.name)) for s in specs}
    finally:
        await admin.close()


def _topic_errors(resp) -> list[tuple[str, int, str | None]]:
    out = []
    for err in resp.topic_errors:
        name, code = err[0], err[1]
        out.append((name, code, err[2] if len(err) > 2 else None))
    return out


def _state(spec: TopicSpec, existing: set[str], partitions: int | None) -> str:
    if spec.name not in existing:
        return "created"
    if partitions is not None and partitions != spec.partitions:
        return f"exists ({partitions} partitions, settings say {spec.partitions})"
    return "exists"

"""The Faust application: the thin shell around the pure core.

stage 1 (keyed by session): agent.spans -> live sessions, checkpointed to the stage-1 state
  topic -> loadshape.sessions (key: segment); a batch aiokafka consumer run as a service of
  this app (``app.stream.stage1_batch``), not a Faust agent
stage 2 (keyed by segment): loadshape.sessions -> segment table -> loadshape.alerts
Both hold plain bytes produced by the core (on Kafka, so a restarted worker resumes where it
stopped); folding is idempotent, so a redelivered span changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust

from app.broker.client_config import faust_broker_kwargs
from app.settings import Settings

PRODUCER_BUFFER_MESSAGES = 5000


@dataclass(frozen=True)
class Topics:
    spans: faust.TopicT
    dlq: faust.TopicT
    sessions: faust.TopicT
    alerts: faust.TopicT
    recalibrations: faust.TopicT
    otlp: faust.TopicT


def _raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions)


def make_topics(app: faust.App, settings: Settings) -> Topics:
    s = settings
    return Topics(
        spans=_raw_topic(app, s.topic_spans, s.spans_partitions),
        dlq=_raw_topic(app, s.topic_dlq, s.dlq_partitions),
        sessions=_raw_topic(app, s.topic_sessions, s.sessions_partitions),
        alerts=_raw_topic(app, s.topic_alerts, s.alerts_partitions),
        recalibrations=_raw_topic(app, s.topic_recalibrations, s.recalibrations_partitions),
        otlp=_raw_topic(app, s.topic_otlp, s.otlp_partitions),
    )


def make_app(settings: Settings) -> faust.App:
    (settings.state_dir / settings.app_id).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        **faust_broker_kwargs(settings),
        store="memory://",
        datadir=str(settings.state_dir / settings.app_id),
        web_enabled=False,
        topic_replication_factor=1,
        topic_allow_declare=True,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
        producer_max_batch_size=1_048_576,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=16384,
        # stage 2 holds records unacked until a checkpoint: on shutdown they are simply
        # redelivered, so do not wait for them
        stream_wait_empty=False,
    )
    # Faust pauses every stream whenever more than 100 table/changelog writes are waiting to
    # be produced ("producer buffer full"); let stage 2 and normalisation batch their sends.
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
    return app

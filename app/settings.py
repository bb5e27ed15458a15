"""One frozen settings object; the only place that reads the environment.

Every field can be set as ``LOADSHAPE_<FIELD>`` (upper case). Secrets are ``SecretStr`` and
print masked:

>>> s = Settings(sasl_password="hunter2", recalibration_key="k")
>>> "hunter2" in repr(s) or "hunter2" in str(s)
False
>>> s.bootstrap_servers
'127.0.0.1:9092'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.limits import REORDER_MAX_HELD, SESSION_MAX_OPEN, SESSION_MAX_STATE_BYTES

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TOPIC_FIELDS = ("topic_spans", "topic_dlq", "topic_otlp", "topic_sessions", "topic_alerts",
                "topic_recalibrations")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOADSHAPE_", frozen=True, extra="ignore")

    # --- Kafka connection -------------------------------------------------------------
    bootstrap_servers: str = Field("", description="host:port[,host:port]; default 127.0.0.1:<kafka_port>")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None

    # --- local broker managed by `loadshape kafka` --------------------------------------
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(0, ge=0, le=65535, description="0: kafka_port + 1")
    kafka_home: Path = PROJECT_ROOT / ".kafka"
    kafka_heap: str = "1g"

    # --- topics -----------------------------------------------------------------------
    topic_spans: str = "agent.spans"
    topic_dlq: str = "agent.spans.dlq"
    topic_otlp: str = "otlp_spans"
    topic_sessions: str = "loadshape.sessions"
    topic_alerts: str = "loadshape.alerts"
    topic_recalibrations: str = "routing.recalibrations"
    spans_partitions: int = Field(4, ge=1)
    sessions_partitions: int = Field(4, ge=1)
    alerts_partitions: int = Field(1, ge=1)
    dlq_partitions: int = Field(1, ge=1)
    otlp_partitions: int = Field(4, ge=1)
    recalibrations_partitions: int = Field(1, ge=1)
    topic_stage1_state: str = Field("", description="stage-1 session state (compacted); "
                                    "default: <app_id>-stage1-state")

    # --- stream processing --------------------------------------------------------------
    app_id: str = "loadshape"
    state_dir: Path = PROJECT_ROOT / ".state"
    session_idle_timeout_s: float = Field(300.0, gt=0)
    session_max_state_bytes: int = Field(
        SESSION_MAX_STATE_BYTES, ge=16 * 1024, le=900 * 1024,
        description="an open session's stage-1 state at most (one Kafka record, <= 1 MB); new "
                    "spans of a full session are dead-lettered (session_too_large)")
    session_max_open: int = Field(
        SESSION_MAX_OPEN, ge=1, description="sessions (and tombstones) stage 1 keeps per span partition "
        "(~2.4 KB each); beyond it the least recently active is closed early, as idle")
    reorder_lateness_s: float = Field(30.0, ge=0)
    max_segments_per_partition: int = Field(
        1000, ge=1, description="segments stage 2 tracks per loadshape.sessions partition (each "
        "holds sketches and detectors: ~20 KB live when new, ~680 KB when busy); sessions of "
        "further segments are dead-lettered (segment_limit)")
    reorder_max_held: int = Field(REORDER_MAX_HELD, ge=1, description="sessions a segment's reorder buffer "
                                  "holds at most; beyond it the earliest go on unordered (spilled)")
    source_idle_s: float = Field(300.0, gt=0,
                                 description="a span partition this far behind (event time) is idle")
    source_quiet_s: float = Field(120.0, gt=0, description="... and has sent no heartbeat for "
                                  "this long (Kafka record time; > a group's session timeout)")
    baseline_sessions: int = Field(2000, ge=100, description="sessions per segment in a drift baseline")
    web_port: int = Field(6066, ge=1, le=65535)
    metrics_max_segments: int = Field(20, ge=1)
    otlp_encoding: Literal["auto", "otlp_proto", "otlp_json"] = "auto"
    stage1_checkpoint_s: float = Field(1.0, gt=0, description="stage-1 checkpoint interval (s)")
    stage1_checkpoint_spans: int = Field(20_000, ge=1,
                                         description="stage-1 checkpoint after this many spans "
                                                     "of a partition")

    # --- closed loop --------------------------------------------------------------------
    recalibration_key: SecretStr | None = None
    assumptions_file: Path | None = None
    policy_file: Path | None = None
    recalibration_mode: Literal["propose", "auto"] = "auto"

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        if not self.bootstrap_servers:
            object.__setattr__(self, "bootstrap_servers", f"127.0.0.1:{self.kafka_port}")
        if not self.kafka_controller_port:
            object.__setattr__(self, "kafka_controller_port", self.kafka_port + 1)
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError("sasl_mechanism is required when security_protocol is SASL_*")
        return self

    def isolated(self, suffix: str, app_prefix: str, **update) -> Settings:
        """A copy whose topics and app id (consumer group, tables) are this run's own.

        >>> s = Settings().isolated("r1", "demo")
        >>> s.topic_spans, s.app_id
        ('agent.spans.r1', 'demo-r1')
        """
        topics = {f: f"{getattr(self, f)}.{suffix}" for f in TOPIC_FIELDS}
        if self.topic_stage1_state:
            topics["topic_stage1_state"] = f"{self.topic_stage1_state}.{suffix}"
        return self.model_copy(update={**topics, "app_id": f"{app_prefix}-{suffix}", **update})

    @property
    def stage1_state_topic(self) -> str:
        """Stage 1's compacted state topic; by default named after the app id (like Faust's
        changelogs), so every consumer group has its own.

        >>> Settings().stage1_state_topic, Settings(topic_stage1_state="s1").stage1_state_topic
        ('loadshape-stage1-state', 's1')
        """
        return self.topic_stage1_state or f"{self.app_id}-stage1-state"

    def all_topics(self) -> dict[str, int]:
        """Topic name -> partition count, for bootstrap."""
        return {
            self.topic_spans: self.spans_partitions,
            self.topic_dlq: self.dlq_partitions,
            self.topic_otlp: self.otlp_partitions,
            self.topic_sessions: self.sessions_partitions,
            self.topic_alerts: self.alerts_partitions,
            self.topic_recalibrations: self.recalibrations_partitions,
            self.stage1_state_topic: self.spans_partitions,
        }

    def masked_dump(self) -> dict[str, object]:
        """Settings as plain data with every secret shown as '**********'."""
        out: dict[str, object] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = "**********"
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out

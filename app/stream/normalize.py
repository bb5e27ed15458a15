"""OTLP normalisation: otlp_spans (Collector kafka exporter) -> agent.spans, keyed by session.

One record is one ExportTraceServiceRequest holding many sessions' spans; each mapped span
is re-published as SpanEvent JSON under its session id, so stage 1 sees OTel-instrumented
agents exactly like native emitters. Non-GenAI spans are skipped and counted; undecodable
records and spans that fail validation are dead-lettered with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from app.otlp import OtlpDecodeError, map_record
from app.stream.deadletter import dead_letter, guarded
from schemas.validation import Decoded

log = logging.getLogger(__name__)

class Normalize:
    def __init__(self, app, settings, topics, metrics, context_windows: Mapping[str, int]) -> None:
        self.settings, self.topics, self.metrics = settings, topics, metrics
        self.context_windows = dict(context_windows)
        app.agent(topics.otlp, name="otlp-normalize")(self.run)

    async def run(self, stream) -> None:
        async for event in stream.events():
            await guarded(self.handle, event, dlq_topic=self.topics.dlq, metrics=self.metrics,
                          source=self.settings.topic_otlp, log=log)

    async def handle(self, key, raw: bytes, partition: int, offset: int) -> None:
        batch = map_record(raw or b"", self.settings.otlp_encoding, self.context_windows)
        where = {"source": self.settings.topic_otlp, "partition": partition, "offset": offset}
        if isinstance(batch, OtlpDecodeError):
            await self._dead_letter(raw, Decoded(reason=batch.reason, field=batch.field, code=batch.code),
                                    key, where)
            return
        for rej in batch.rejected:
            await self._dead_letter(rej.span_json or raw, Decoded(reason=rej.reason, field=rej.field,
                                                                  code=rej.code), key, where)
        if batch.skipped_non_genai:
            self.metrics.count_otlp_skipped(batch.skipped_non_genai)
        for span in batch.spans:
            await self.topics.spans.send(key=span.session_id.encode(), value=span.model_dump_json().encode())

    async def _dead_letter(self, raw: bytes, rejected: Decoded, key, where) -> None:
        self.metrics.count_dead_letter(rejected.code)
        dl = dead_letter(raw, rejected, **where)
        await self.topics.dlq.send(key=key, value=dl.model_dump_json().encode())


def catalog_windows(settings) -> dict[str, int]:
    """Model -> context window from the routing policy's catalog (for spans without a limit)."""
    if settings.policy_file is None:
        return {}
    from app.loop.policy import load_policy

    return {m.name: m.context_window for m in load_policy(settings.policy_file).models}

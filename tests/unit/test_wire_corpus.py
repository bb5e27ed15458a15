"""The wire fuzz corpus (>= 10,000 records) through the pure decoders: nothing raises, every
record is accepted or rejected with a reason, and a rejected one makes a dead letter that
carries the original bytes and fits in a Kafka record. The same corpus goes through a live
worker in tests/integration/test_wire_fuzz.py."""

from __future__ import annotations

from collections import Counter

from wire_corpus import expect_otlp, otlp_corpus, span_corpus

from app.core.stage1 import SessionStep
from app.core.stage2 import SegmentStep
from app.otlp import OtlpDecodeError, map_record
from app.replay import Replayer
from app.settings import Settings
from app.stream.deadletter import dead_letter
from schemas.validation import decode_span

CODES = {"invalid_json", "invalid_utf8", "invalid_field", "missing_field"}
KAFKA_MAX = 1_000_000  # bytes: the broker's default message.max.bytes is about 1 MB


def test_corpus_is_large_and_varied():
    spans, otlp = span_corpus(), otlp_corpus()
    assert len(spans) + len(otlp) >= 12_000
    assert len(set(spans)) + len(set(otlp)) >= 10_000
    codes = Counter(decode_span(raw).code or "ok" for raw in spans)
    assert set(codes) == CODES | {"ok"} and min(codes.values()) > 300, codes
    assert max(map(len, spans)) > 100_000  # huge fields are in


def test_every_span_record_is_accepted_or_dead_lettered_with_reason():
    for raw in span_corpus():
        decoded = decode_span(raw)
        if decoded.ok:
            assert decoded.value.session_id
            continue
        assert decoded.code in CODES and decoded.reason, raw[:200]
        letter = dead_letter(raw, decoded, source="agent.spans", partition=0, offset=1)
        assert letter.original == raw
        assert len(letter.model_dump_json()) < KAFKA_MAX


def test_every_otlp_record_is_mapped_or_rejected():
    outcomes = Counter()
    for raw in otlp_corpus():
        batch = map_record(raw, "auto")
        if isinstance(batch, OtlpDecodeError):
            assert batch.reason and batch.code, raw[:100]
            outcomes["rejected"] += 1
            continue
        for rej in batch.rejected:
            assert rej.reason and rej.code
        outcomes["mapped"] += 1
        outcomes["spans"] += len(batch.spans)
        assert expect_otlp(raw).spans == len(batch.spans)
    assert outcomes["rejected"] > 500 and outcomes["spans"] > 100, outcomes


def test_replay_of_the_corpus_accounts_for_every_record():
    spans = span_corpus()
    replayer = Replayer(SessionStep(idle_timeout_ns=300 * 10**9),
                        SegmentStep.from_settings(Settings()))
    for no, raw in enumerate(spans, start=1):
        replayer.feed_raw(raw, source="fuzz", line=no)
    result = replayer.finish()
    assert result.spans + result.dead_letters == len(spans)
    assert result.spans == sum(decode_span(raw).ok for raw in spans)

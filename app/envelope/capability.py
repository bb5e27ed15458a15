"""``--add-capability NAME=LIKE_SEGMENT[:SHARE]``: a new segment shaped like a recorded one.

The new segment's sessions are copies of the source segment's, so its distributions are the
source's. It *adds* traffic (existing segments keep theirs): with SHARE it makes up that
share of the new total, without it as many sessions as the source has. Copies are drawn by
systematic resampling (copy j of n is source session ``j * n_source // n``, sources in
session-id order), so every source session is used ``n // n_source`` or one more times and
the result is deterministic.

>>> parse_capability("billing=support:0.25")
Capability(name='billing', like='support', share=0.25)
>>> parse_capability("billing/refunds=support")
Capability(name='billing/refunds', like='support', share=None)
>>> clone_counts({"a": 30, "b": 10}, [Capability("c", "b"), Capability("d", "a", 0.5)])
[10, 50]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.envelope.recording import RecordedSession
from schemas.common import Segment

_LABEL_MAX = 128  # schemas.common.Label


@dataclass(frozen=True, slots=True)
class Capability:
    name: str  # segment key of the new capability, "agent" or "agent/task_type"
    like: str  # segment key of the recorded segment it is shaped like
    share: float | None = None  # of total traffic after adding; None: as much as ``like``


def parse_capability(text: str) -> Capability:
    """Parse ``NAME=LIKE_SEGMENT[:SHARE]``; ``ValueError`` says what is wrong.

    >>> parse_capability("x=support:1.5")
    Traceback (most recent call last):
    ...
    ValueError: --add-capability 'x=support:1.5': SHARE must be a number in (0, 1), got '1.5'
    """
    name, eq, rest = text.partition("=")
    like, colon, share_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
    bad = f"--add-capability {text!r}"
    if not eq or not _is_key(name) or not _is_key(like):
        raise ValueError(f"{bad}: expected NAME=LIKE_SEGMENT[:SHARE] with segment keys "
                         "'agent' or 'agent/task_type'")
    if not colon:
        return Capability(name, like)
    try:
        share = float(share_text)
    except ValueError:
        share = math.nan
    if not 0.0 < share < 1.0:  # NaN fails this too
        raise ValueError(f"{bad}: SHARE must be a number in (0, 1), got {share_text!r}")
    return Capability(name, like, share)


def _is_key(key: str) -> bool:
    agent, slash, task_type = key.partition("/")
    parts = [agent, task_type] if slash else [agent]
    return all(0 < len(p) <= _LABEL_MAX and p.strip() == p and "/" not in p for p in parts)


def check_capabilities(caps: Sequence[Capability], segments: Mapping[str, int]) -> None:
    """``ValueError`` unless every LIKE is recorded, every NAME is new and shares sum < 1."""
    names = [c.name for c in caps]
    for c in caps:
        if c.like not in segments:
            known = ", ".join(segments) or "(none)"
            raise ValueError(f"--add-capability {c.name}={c.like}: unknown LIKE_SEGMENT "
                             f"{c.like!r}; recorded segments: {known}")
        if c.name in segments:
            raise ValueError(f"--add-capability {c.name}={c.like}: segment {c.name!r} "
                             "already exists in the recording")
        if names.count(c.name) > 1:
            raise ValueError(f"--add-capability: {c.name!r} is added more than once")
    if sum(c.share or 0.0 for c in caps) >= 1.0:
        raise ValueError("--add-capability: the SHAREs must sum to less than 1")


def clone_counts(segments: Mapping[str, int], caps: Sequence[Capability]) -> list[int]:
    """Sessions to add per capability, so each SHARE is of the new total traffic."""
    fixed = sum(segments[c.like] for c in caps if c.share is None)
    total = (sum(segments.values()) + fixed) / (1.0 - sum(c.share or 0.0 for c in caps))
    return [segments[c.like] if c.share is None else max(1, round(c.share * total)) for c in caps]


def with_capabilities(
    sessions: Sequence[RecordedSession], caps: Sequence[Capability]
) -> tuple[RecordedSession, ...]:
    """The recorded sessions followed by each capability's copies (validated first)."""
    by_segment: dict[str, list[RecordedSession]] = {}
    for s in sessions:
        by_segment.setdefault(s.shape.segment.key, []).append(s)
    sizes = {k: len(v) for k, v in by_segment.items()}
    check_capabilities(caps, sizes)
    out = list(sessions)
    for cap, n in zip(caps, clone_counts(sizes, caps), strict=True):
        source = by_segment[cap.like]
        out += [_copy(source[j * len(source) // n], cap.name, j) for j in range(n)]
    return tuple(out)


def _copy(src: RecordedSession, name: str, j: int) -> RecordedSession:
    shape = src.shape.model_copy(update={"session_id": f"{name}#{j}",
                                         "segment": Segment.from_key(name)})
    return RecordedSession(shape, src.calls, src.llm_output_tokens, src.other_tokens)

"""Telling a session stage 1 published again from a new one (stage 2, per segment entry).

Stage 1 folds spans again from its last durable checkpoint after a crash or a rebalance, so
it may close, and publish, a session a second time at a new offset. Stage 2 drops the copy:

* with the record's ``loadshape-closed-wm`` header (``schemas.closed_wm``): by the sessions of
  that span partition it still remembers, those closed at or above the partition's last
  durable checkpoint watermark (``Heartbeat.ck``), however many sessions came between;
* else, or as well: if the first copy waits in the reorder buffer, or is among the latest
  ``RECENT_SESSIONS`` the segment released.

The functions change the entry in place (its ``may_repeat`` and ``recent``); the entry is
``app.core.stage2.SegmentEntry``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from app.core import reorder

# Released sessions per segment remembered to drop one that stage 1 published twice (a buffered
# one is found in the buffer): after a crash or a rebalance stage 1 folds spans again from its
# last checkpoint (``stage1_checkpoint_spans`` or ``stage1_checkpoint_s`` back) and may close,
# and publish, a session again at a new offset. Counted at release, not arrival: while a span
# partition is down its heartbeats stop and the segment releases (almost) nothing, so the
# sessions other partitions send meanwhile do not push the first copy out.
RECENT_SESSIONS = 1024
# Sessions per span partition (per segment) remembered because stage 1 may still publish them
# again: those closed above that partition's last durable checkpoint (``schemas.closed_wm``).
# Checkpoints come every second or so, so this stays small; the bound only guards memory.
MAY_REPEAT_MAX = 1024


def repeated(entry, shape, origin: tuple[int, int], checkpointed: Mapping[int, int]) -> bool:
    """True if ``shape`` is a session of that span partition still remembered (after
    forgetting what its durable checkpoints have passed)."""
    for source, held in list(entry.may_repeat.items()):
        ck = checkpointed.get(source)
        while held and ck is not None and next(iter(held.values()))[1] < ck:
            held.popitem(last=False)  # closed below a durable checkpoint: never sent again
        if not held:
            del entry.may_repeat[source]
    held = entry.may_repeat.get(origin[0])
    return held is not None and held.get(shape.session_id, (None,))[0] == shape.end_time_unix_nano


def remember_origin(entry, shape, origin: tuple[int, int],
                    checkpointed: Mapping[int, int]) -> None:
    """Remember an accepted session its stage 1 may still publish again."""
    source, closed_at = origin
    if checkpointed.get(source, -1) > closed_at:
        return  # a durable checkpoint has passed it
    held = entry.may_repeat.setdefault(source, OrderedDict())
    held.pop(shape.session_id, None)
    held[shape.session_id] = (shape.end_time_unix_nano, closed_at)
    if len(held) > MAY_REPEAT_MAX:
        held.popitem(last=False)


def may_repeat_doc(may_repeat: dict[int, OrderedDict[str, tuple[int, int]]]) -> dict:
    """The stored form, left out while empty (replay's entries: their bytes stay as they were)."""
    if not may_repeat:
        return {}
    return {"may_repeat": {str(src): [[sid, end, at] for sid, (end, at) in held.items()]
                           for src, held in may_repeat.items()}}


def may_repeat_of(doc: dict) -> dict[int, OrderedDict[str, tuple[int, int]]]:
    """``may_repeat`` from a stored entry's document (``may_repeat_doc``'s form; none there:
    empty)."""
    return {int(src): OrderedDict((sid, (end, at)) for sid, end, at in held)
            for src, held in doc.get("may_repeat", {}).items()}


def duplicate(entry, shape) -> bool:
    """True if ``shape`` (same session id and end time) is buffered or was released recently."""
    sid, end = shape.session_id, shape.end_time_unix_nano
    return entry.recent.get(sid) == end or reorder.holds(entry.buffer, (end, sid))

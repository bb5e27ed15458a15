"""Heartbeat: how far one span partition has come in event time (stage 1 -> stage 2).

Heartbeats travel on ``loadshape.sessions`` between the SessionShapes, under the record key
``WATERMARK_KEY``, one copy to every partition of that topic. Stage 2 releases a segment's
sessions only once every span partition's heartbeat has passed them (``app.core.watermarks``).
A consumer of ``loadshape.sessions`` that wants sessions only skips records with this key
whose value is a heartbeat (an agent may be called ``__watermark__``: its sessions carry the
same key, and stage 2 folds them as sessions).

``ck`` (optional) is the watermark of that partition's last durable stage-1 checkpoint: a
session stage 1 closed at a lower watermark (the ``loadshape-closed-wm`` header of its record,
``schemas.closed_wm``) is never published again, so stage 2 may forget it.

>>> Heartbeat(src=1, wm=5).encode()
b'{"src":1,"wm":5}'
>>> Heartbeat(src=1, wm=5, ck=3).encode()
b'{"src":1,"wm":5,"ck":3}'
>>> Heartbeat.model_validate_json(b'{"src":1,"wm":5}') == Heartbeat(src=1, wm=5)
True
"""

from __future__ import annotations

import orjson
from pydantic import Field

from schemas.common import Contract, UnixNano

WATERMARK_KEY = b"__watermark__"


class Heartbeat(Contract):
    src: int = Field(ge=0, le=2**31 - 1, description="the agent.spans partition it reports on")
    wm: UnixNano = Field(description="that partition's event-time watermark: the latest span "
                         "end time folded (ns since the Unix epoch)")
    ck: UnixNano | None = Field(None, description="the watermark of that partition's last "
                                "durable stage-1 checkpoint (absent: none yet)")

    def encode(self) -> bytes:
        if self.ck is None:
            return orjson.dumps({"src": self.src, "wm": self.wm})
        return orjson.dumps({"src": self.src, "wm": self.wm, "ck": self.ck})

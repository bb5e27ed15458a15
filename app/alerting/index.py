"""What the forwarder posted per alert id, so a ``resolved`` alert repeats exactly the labels
(hence the Alertmanager fingerprint) of the alert it resolves.

Bounded: the oldest entries are forgotten first. A resolution whose opening alert is not
known (forgotten, or posted before a restart) falls back to labels derived from the
resolution itself, which match as long as the producer keeps the episode's severity.

>>> idx = PostedIndex(capacity=2)
>>> idx.remember("a", {"labels": {"alertname": "X"}})
>>> idx.remember("b", {}); idx.remember("c", {})
>>> idx.get("a") is None, idx.get("c")
(True, {})
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from app.alerting.payload import Postable


@dataclass(slots=True)
class PostedIndex:
    capacity: int = 10_000
    posted: OrderedDict[str, Postable] = field(default_factory=OrderedDict)

    def remember(self, alert_id: str, payload: Postable) -> None:
        self.posted[alert_id] = payload
        self.posted.move_to_end(alert_id)
        while len(self.posted) > self.capacity:
            self.posted.popitem(last=False)

    def get(self, alert_id: str | None) -> Postable | None:
        return None if alert_id is None else self.posted.get(alert_id)

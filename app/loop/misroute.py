"""Was a session misrouted? A model it used cannot handle its complexity.

>>> from schemas.common import Segment
>>> from schemas.session import SessionShape
>>> shape = SessionShape(session_id="s", segment=Segment(agent="support"), start_time_unix_nano=0,
...                      end_time_unix_nano=1, closed_by="session_end", spans=3, complexity=0.8,
...                      models=["haiku-s", "opus-l"])
>>> misrouted(shape, {"haiku-s": 0.55, "opus-l": 1.0})
True
>>> misrouted(shape, {"opus-l": 1.0})     # a model outside the catalog is not judged
False
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.policy import RoutingPolicy
from schemas.session import SessionShape


def capabilities(policy: RoutingPolicy) -> dict[str, float]:
    return {m.name: m.capability for m in policy.models}


def misrouted(shape: SessionShape, capability: Mapping[str, float]) -> bool:
    return any(capability.get(m, 1.0) < shape.complexity for m in shape.models)

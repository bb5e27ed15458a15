"""Alert episodes of one (segment, metric): when a drift alert opens and when it resolves.

One ``drift`` alert per episode; while it is open no further drift alert for the pair.
What we chose, phase by phase (``n`` counts the metric's values, time is event time):

* ``warmup``: the first ``baseline_n`` values become the baseline. No detection.
* ``watch``: detectors run against the frozen baseline. A confirmed drift opens an episode
  (publish ``drift``) and starts re-baselining.
* ``rebaseline`` (episode open): the new shape becomes the baseline. The confirmed
  post-change sample seeds it; values are added until it holds ``rebaseline_n``. No
  detection (there is nothing to compare with yet).
* ``settle`` (episode open): detectors run against the new baseline. A confirmed drift here
  means the shape is still moving: re-baseline again, silently (same episode). After
  ``settle_n`` values without one, the new baseline is established and stable: the episode
  ends with a ``resolved`` alert.
* ``cooldown``: no new episode for ``cooldown_n`` values *and* ``cooldown_ns`` of event
  time after a resolution. Detectors keep running; a drift confirmed meanwhile is held and
  judged again when the cool-down is over (so a real change is late, not lost).

>>> cfg = EpisodeConfig(settle_n=2, cooldown_n=1, cooldown_ns=0)
>>> ep = baseline_frozen(EpisodeState(), n=10, ns=100)
>>> ep.phase, may_open(ep)
('watch', True)
>>> ep, opened = confirmed(ep, n=15, ns=150, alert_id="a1", detector="adwin",
...                       severity="page", old={"n": 10})
>>> opened, ep.phase
(True, 'rebaseline')
>>> ep = baseline_frozen(ep, n=20, ns=200)
>>> ep, closed = tick(ep, n=22, ns=220, cfg=cfg)
>>> closed.alert_id, ep.phase, ep.alert_id
('a1', 'cooldown', None)
>>> tick(ep, n=23, ns=230, cfg=cfg)[0].phase
'watch'
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

WARMUP, WATCH, REBASELINE, SETTLE, COOLDOWN = "warmup", "watch", "rebaseline", "settle", "cooldown"
PHASES = (WARMUP, WATCH, REBASELINE, SETTLE, COOLDOWN)
TICKING = (SETTLE, COOLDOWN)  # the phases in which ``tick`` may change anything


@dataclass(frozen=True, slots=True)
class EpisodeConfig:
    settle_n: int = 500
    cooldown_n: int = 250
    cooldown_ns: int = 300 * 10**9


@dataclass(frozen=True, slots=True)
class EpisodeState:
    phase: str = WARMUP
    since_n: int = 0  # metric value count when the phase began
    since_ns: int = 0  # event time when the phase began
    # the open episode (alert_id None when there is none)
    alert_id: str | None = None
    detector: str | None = None
    severity: str | None = None
    opened_ns: int = 0
    old: dict[str, Any] | None = None  # summary of the baseline the episode left
    rebaselines: int = 0

    @property
    def is_open(self) -> bool:
        return self.alert_id is not None

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpisodeState:
        if d.get("phase") not in PHASES:
            raise ValueError(f"unknown episode phase {d.get('phase')!r}")
        return cls(**d)


_FIELDS = tuple(f.name for f in fields(EpisodeState))


def collecting(ep: EpisodeState) -> bool:
    """A baseline is being collected (no detection)."""
    return ep.phase in (WARMUP, REBASELINE)


def may_open(ep: EpisodeState) -> bool:
    """A confirmed drift acts now (opens an episode, or re-baselines an open one)."""
    return ep.phase in (WATCH, SETTLE)


def _enter(ep: EpisodeState, phase: str, n: int, ns: int, **kw: Any) -> EpisodeState:
    return replace(ep, phase=phase, since_n=n, since_ns=ns, **kw)


def confirmed(ep: EpisodeState, *, n: int, ns: int, alert_id: str, detector: str,
              severity: str, old: dict[str, Any]) -> tuple[EpisodeState, bool]:
    """A drift was confirmed at value ``n``: returns the new state and whether it opened an
    episode (publish the drift alert) rather than re-baselining an open one."""
    if not may_open(ep):
        raise ValueError(f"a drift cannot be acted on in phase {ep.phase!r}")
    if ep.is_open:
        return _enter(ep, REBASELINE, n, ns, rebaselines=ep.rebaselines + 1), False
    return _enter(ep, REBASELINE, n, ns, alert_id=alert_id, detector=detector,
                  severity=severity, opened_ns=ns, old=old, rebaselines=1), True


def baseline_frozen(ep: EpisodeState, *, n: int, ns: int) -> EpisodeState:
    """The baseline being collected is complete."""
    if ep.phase == WARMUP:
        return _enter(ep, WATCH, n, ns)
    if ep.phase == REBASELINE:
        return _enter(ep, SETTLE, n, ns)
    raise ValueError(f"no baseline is collected in phase {ep.phase!r}")


def tick(ep: EpisodeState, *, n: int, ns: int,
         cfg: EpisodeConfig) -> tuple[EpisodeState, EpisodeState | None]:
    """Advance time to value ``n`` / event time ``ns``. Returns the new state and, when an
    episode just ended, the closed episode (publish ``resolved``). ``ep`` itself when nothing
    changed, and nothing changes outside the ``TICKING`` phases."""
    if ep.phase == SETTLE and n - ep.since_n >= cfg.settle_n:
        closed = ep
        return _enter(ep, COOLDOWN, n, ns, alert_id=None, detector=None, severity=None,
                      old=None, rebaselines=0), closed
    if (ep.phase == COOLDOWN and n - ep.since_n >= cfg.cooldown_n
            and ns - ep.since_ns >= cfg.cooldown_ns):
        return _enter(ep, WATCH, n, ns), None
    return ep, None

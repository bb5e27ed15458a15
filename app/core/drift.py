"""Drift detectors of one metric's per-session values, behind one small protocol.

A detector is a river-style object: ``update(x) -> Signal | None`` and ``to_state()`` (plain
data; ``detector_from_state`` rebuilds it). Detectors only say *that* something changed; the
gate (``app.core.gate``) then estimates where and by how much. Two kinds:

* ``AdwinDetector``: river's ``drift.ADWIN`` with ``clock=1`` (a change is looked for after
  every value, so it fires no later than a plain ``ADWIN(clock=1)``; the default clock of 32
  can be up to 31 sessions late). Watches the mean, both ways. ``Signal.age`` is ADWIN's
  width after the cut: often far more than the post-change part (river drops only enough
  of the old window to pass its test). State: the pickled river object.
  Note river's ADWIN is not scale-free: its bound carries a range term for values in [0, 1]
  and otherwise scales with the window variance, so on ratios (retry_rate, utilisation) it
  is slow, and on large heavy-tailed values (tokens) a single outlier can trip it.
* ``QuantileCusum``: Bernoulli CUSUMs, one per *level*, of "this session fell above (or
  below) the baseline's bucket of p50 / p95 / p99 / max". Null rate p0 = the baseline's
  own rate, raised by ~2 sigma of its sampling error (a baseline that undershot its tail
  must not make the stationary stream look drifted); alternative: ``odds`` times the odds.
  A fatter tail under an unchanged median moves the mean little against its own noise,
  but takes the P99 exceedance rate from 1% to 5-20%, which these accumulate at ~0.1-0.3
  nats per session; comparing bucket keys makes them rank tests, free of scale and shape. ``Signal.age`` =
  sessions since the CUSUM last stood at zero.

>>> det = AdwinDetector()
>>> [i for i in range(400) if det.update(3.0 if i < 300 else 11.0)]
[302]
"""

from __future__ import annotations

import base64
import math
import pickle
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from river import drift

from app.core.reference import LEVEL_NAMES, Reference, conservative_rate
from app.core.sketch import ZERO_KEY, bucket_key, inverse_log_gamma

# (detector name, baseline level, direction, odds ratio of the alternative): location both
# ways, upper tail; beyond the baseline max only a large odds ratio is worth a signal
DEFAULT_LEVELS = (("median_up", "p50", 1, 4.0), ("median_down", "p50", -1, 4.0),
                  ("tail_p95", "p95", 1, 4.0), ("tail_p99", "p99", 1, 4.0),
                  ("tail_max", "max", 1, 10.0))


@dataclass(frozen=True, slots=True)
class Signal:
    detector: str  # e.g. "adwin", "tail_p99"
    age: int  # the detector's own guess of the post-change sample size (see each kind)


class Detector(Protocol):
    name: str

    def update(self, x: float) -> Signal | None: ...

    def to_state(self) -> dict[str, Any]: ...


class AdwinDetector:
    """river ``ADWIN`` (clock=1) on the raw values."""

    name = "adwin"
    __slots__ = ("_adwin",)

    def __init__(self, delta: float = 0.002, clock: int = 1, grace_period: int = 10,
                 min_window_length: int = 5) -> None:
        self._adwin = drift.ADWIN(delta=delta, clock=clock, grace_period=grace_period,
                                  min_window_length=min_window_length)

    def update(self, x: float) -> Signal | None:
        a = self._adwin
        if _DIRECT:  # ADWIN.update without its wrappers (once per value of every metric)
            if a._drift_detected:
                a._reset()
            hit = a._drift_detected = a._helper.update(x)
            return Signal("adwin", int(a._helper.get_width())) if hit else None
        a.update(x)
        if a.drift_detected:
            return Signal(self.name, int(a.width))
        return None

    @property
    def estimation(self) -> float:
        return self._adwin.estimation

    def to_state(self) -> dict[str, Any]:
        raw = pickle.dumps(self._adwin, protocol=pickle.HIGHEST_PROTOCOL)
        return {"kind": "adwin", "pickle": base64.b64encode(raw).decode("ascii")}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> AdwinDetector:
        det = cls.__new__(cls)
        det._adwin = pickle.loads(base64.b64decode(d["pickle"]))  # our own state, not input
        return det


_EMPTY_BAND = (1, 0)  # no key is in it
# A CUSUM at rest: its s is this very 0.0 object and its run 0. Only a level put at rest by
# this code is known to be (a loaded 0.0 or -0.0 is another object: walked as usual).
_AT_REST = 0.0


class QuantileCusum:
    """Bernoulli CUSUMs of exceedances of baseline quantile buckets (one per level).

    Levels are ``(name, level, direction)``, e.g. ``("tail_p99", "p99", +1)`` counts
    sessions above the baseline P99 bucket, ``("median_down", "p50", -1)`` sessions below
    the baseline median bucket.
    """

    name = "quantile_cusum"
    __slots__ = ("_inv_ln", "levels", "h", "s", "run", "_band", "quiet_lo", "quiet_hi", "_walk")

    def __init__(self, levels: list[tuple[str, int, int, float, float]], h: float,
                 inv_ln: float) -> None:
        # levels: (name, bucket key, direction, llr of a hit, llr of a miss)
        self.levels, self.h, self._inv_ln = levels, h, inv_ln
        self.s = [_AT_REST] * len(levels)
        self.run = [0] * len(levels)
        # derived, never stored: (index, name, key, upper?, hit, miss) per level, in order
        self._walk = tuple((i, n, key, d > 0, hit, miss)
                           for i, (n, key, d, hit, miss) in enumerate(levels))
        # Keys in ``_band`` miss at every level; while every CUSUM stands at zero such a key
        # changes nothing, as a miss only pulls a CUSUM down (the band is empty if some miss
        # would not). [quiet_lo, quiet_hi] is that band while all stand at zero, else empty:
        # keys in it change nothing now (a caller may skip ``update_key``). Derived, never stored.
        if all(miss <= 0.0 for *_, miss in levels):
            self._band = (max((key for _, key, d, *_ in levels if d < 0), default=ZERO_KEY),
                          min((key for _, key, d, *_ in levels if d > 0), default=2**63))
        else:
            self._band = _EMPTY_BAND
        self.quiet_lo, self.quiet_hi = self._band

    @classmethod
    def from_reference(cls, ref: Reference, specs=DEFAULT_LEVELS, *,
                       h: float = 10.0) -> QuantileCusum:
        levels, seen = [], set()
        for name, level, direction, odds in specs:
            i = LEVEL_NAMES.index(level)
            key = ref.keys[i]
            if (key, direction) in seen or (direction < 0 and key == ZERO_KEY):
                continue  # discrete data: levels may share a bucket; nothing is below zero
            seen.add((key, direction))
            k = ref.above[i] if direction > 0 else ref.below50
            p0 = conservative_rate(k, ref.n)
            p1 = odds * p0 / (1.0 - p0 + odds * p0)
            levels.append((name, key, direction, math.log(p1 / p0),
                           math.log((1.0 - p1) / (1.0 - p0))))
        return cls(levels, h, inverse_log_gamma(ref.rel_acc))

    def update(self, x: float) -> Signal | None:
        return self.update_key(bucket_key(x, self._inv_ln))

    def update_key(self, k: int) -> Signal | None:
        """``update(x)`` given ``x``'s bucket key under this detector's mapping (``_inv_ln``)."""
        if self.quiet_lo <= k <= self.quiet_hi:  # changes nothing (see __init__)
            return None
        # Per level: s + (hit or miss), back to rest at <= 0, a signal (and rest) at >= h; the
        # signal is the first level's (in index order) that fired.
        out = None
        s_, run, h = self.s, self.run, self.h
        rests = self._band is not _EMPTY_BAND  # no miss is positive: a miss keeps a level at rest
        for i, name, key, upper, hit, miss in self._walk:
            s = s_[i]
            if (k > key) if upper else (k < key):
                s += hit
            elif rests and s is _AT_REST:
                continue  # 0.0 + miss <= 0: back to rest, i.e. unchanged
            else:
                s += miss
            if s <= 0.0:
                s_[i], run[i] = _AT_REST, 0
            elif s >= h:
                if out is None:
                    out = Signal(name, run[i] + 1)
                s_[i], run[i] = _AT_REST, 0
            else:
                s_[i], run[i] = s, run[i] + 1
        self.quiet_lo, self.quiet_hi = _EMPTY_BAND if any(s_) else self._band
        return out

    def to_state(self) -> dict[str, Any]:
        return {"kind": "quantile_cusum", "ln": self._inv_ln, "h": self.h,
                "levels": [list(lv) for lv in self.levels], "s": self.s, "run": self.run}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> QuantileCusum:
        det = cls([tuple(lv) for lv in d["levels"]], d["h"], d["ln"])
        det.s, det.run = list(d["s"]), list(d["run"])
        if any(det.s) or any(det.run):
            det.quiet_lo, det.quiet_hi = _EMPTY_BAND
        return det


def _adwin_is_direct() -> bool:
    """river's ``ADWIN.update`` is ``if drift_detected: _reset()`` then ``_drift_detected =
    _helper.update(x)`` (river 0.26); ``AdwinDetector.update`` does the same without the
    wrappers when the attributes are there (``tests/unit/test_stage2_fastpaths.py`` checks it
    against ``ADWIN.update``)."""
    probe = drift.ADWIN()
    return (hasattr(probe, "_helper") and hasattr(probe, "_reset")
            and hasattr(probe._helper, "update") and hasattr(probe._helper, "get_width")
            and probe.__dict__.get("_drift_detected") is False)


_DIRECT = _adwin_is_direct()

KINDS = MappingProxyType({"adwin": AdwinDetector, "quantile_cusum": QuantileCusum})


def detector_from_state(d: dict[str, Any]) -> Detector:
    """Rebuild any detector from its ``to_state()`` data."""
    return KINDS[d["kind"]].from_state(d)

"""Configuration of the stage-2 segment monitor (windows, detectors, gate, episodes).

The defaults are tuned for zero alerts over 1,000,000 stationary sessions of every metric
shape we use (Poisson counts, lognormal tokens, ratios, mostly-zero counts, constants;
``bench/bench_detection.py``) while a step like fan-out 3 -> 11 is alerted within a few
dozen sessions. Why each default:

* ``window_n`` 1024: the *current* distribution (gauges, assumption checks) - about the
  last quarter hour of a busy segment, and enough sessions for a stable P99.
* ``baseline_n`` 2000 / ``rebaseline_n`` 1000: a baseline P99 rests on ~20 / ~10
  exceedances; fewer and its own sampling error dominates the tail tests.
* ``adwin_clock`` 1: check after every value, so never later than a plain ``ADWIN(clock=1)``.
* ``cusum_h`` 10 nats: a CUSUM of P99 exceedances needs ~8 of them close together; false
  triggers are a few per 10^6 sessions (the gate rejects them), and a tail 3x fatter
  (P99 exceedance rate ~10-20%) fires in ~20-70 sessions.
* gate: ``min_nats`` 24 for a 20-session window, falling as 1/n to ``long_nats`` 18 for
  windows of 27+ sessions (scanned up to ``max_post_n`` 512); ``min_rel_location`` 15%,
  ``min_rel_tail`` 50%: statistically *and* materially different; detectors propose, the
  gate disposes. At 25% the practical test, not the evidence, held back a gradual ramp
  (``context-creep``: its context metrics had 18 nats ~340 sessions into the ramp but a 25%
  move only at 398-486); at 15% they alert at 339-342, with no false alarm on 4 x
  1,000,000 steady sessions (seeds 11-14) or in the hinted runs below. The gate scans
  windows whenever a trigger is pending, so its threshold must hold over a whole stream,
  not one look. Measured (``bench/bench_detection.py``,
  1,000,000 resampled steady sessions x 36 (segment, metric) streams, seeds 11 and 12):
  a flat 12 nats gave 2 false alarms per seed, 16 gave 1 (a mostly-zero ratio's P95 share
  over 192 sessions; a 30-session dip of a small count), 18 gave none; short windows are
  where a handful of discrete values fakes a large G, hence 24 there. Windows of 4-19
  sessions are judged by the exact binomial tail instead (``short_nats`` 18): with it,
  still no false alarm on the same two 1,000,000-session runs, and the ``dev-to-support``
  metrics alert a median 15 sessions after the step instead of 22. The price: a change
  must carry ~18 nats before it pages (the golden retry share 10% -> 40% in
  ``tests/unit/test_drift.py`` alerts 31 sessions after the change), and a 3% sub-population
  far out in the tail (~0.07 nats a session) needs a few hundred sessions (~470 in the
  ``tail-only`` simulation); that is why windows up to 512 are scanned.
* ``log_location_nats`` 24: where no quantile share passes, a continuous baseline (no
  sketch bucket with 5% of it) also gets a scanning test of the mean of log(1 + x)
  (``app.core.log_location``). At 18 nats it raised a false pair of alerts (support's
  context tokens and utilization) in 1 of 4 runs of 1,000,000 steady sessions; at 24, none
  in 6 (seeds 11-16) nor in the hinted runs; ``context-creep``'s context metrics then
  alert 298-305 sessions into the ramp instead of 339-342, and ``tail-only`` finds 6 of 6
  changed metrics instead of 5 (median 232 sessions instead of 472).
* ``corroborate_nats`` 12: once a drift is confirmed on one metric, the segment's other
  metrics are judged on the window since the change began (its start given, not searched
  for) for ``patience`` values, at every value. Under no change, G >= 12 nats is a ~1e-6
  event per look (chi-square, 1 dof), and the looks on one growing window are strongly
  correlated. ``bench/bench_detection.py`` measures it: steady sessions whose metrics are
  all hinted every 300 sessions of their segment, as if a change had been confirmed, must
  raise no alert. 10 nats raised one (LLM calls) in 3,561 such metric-periods (100,000
  sessions, seed 13) and one in 37,974 (1,000,000, seed 6); 12 raised none in either
  (3,566 and 38,045 metric-periods).
  In ``retry-storm``, fan-out / max parallel fan-out / LLM calls then follow retry_rate
  after a median 52 sessions instead of 96 (seeds 7-9).
* ``check_every`` 8 / ``patience`` 256: how often a pending trigger is re-judged as
  post-change sessions accumulate, and for how long after the last trigger.
* episodes: ``settle_n`` 500 values of the new baseline without drift before
  ``resolved``; then a cool-down of 250 values and 5 minutes of event time.
* severity: ``page`` when a tail aspect or a context / fan-out metric moved by a factor
  >= ``page_factor`` (2x), else ``warning``.

>>> cfg = MonitorConfig(baseline_n=500)
>>> cfg.gate.min_nats, cfg.gate.long_nats, cfg.episodes.settle_n, cfg.window_n
(24.0, 18.0, 500, 1024)
>>> MonitorConfig(window_n=100)
Traceback (most recent call last):
...
ValueError: gate.max_post_n must fit in the window (window_n)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.drift import DEFAULT_LEVELS
from app.core.episodes import EpisodeConfig
from app.core.gate import GateConfig

PAGE_METRICS = frozenset({"context_utilization", "context_tokens", "truncations", "fanout",
                          "max_parallel_fanout"})


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    rel_acc: float = 0.01  # sketch relative accuracy
    max_buckets: int = 2048
    window_n: int = 1024
    baseline_n: int = 2000
    rebaseline_n: int = 1000
    adwin_delta: float = 0.002
    adwin_clock: int = 1
    cusum_h: float = 10.0
    cusum_levels: tuple = DEFAULT_LEVELS
    gate: GateConfig = field(default_factory=GateConfig)
    check_every: int = 8
    patience: int = 256
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    page_factor: float = 2.0
    page_metrics: frozenset[str] = PAGE_METRICS

    def __post_init__(self) -> None:
        if self.gate.max_post_n > self.window_n:
            raise ValueError("gate.max_post_n must fit in the window (window_n)")
        if min(self.baseline_n, self.rebaseline_n) < 100:
            raise ValueError("baselines need at least 100 values")
        if self.check_every < 1 or self.patience < self.check_every:
            raise ValueError("need 1 <= check_every <= patience")
        if self.adwin_clock < 1:
            raise ValueError("adwin_clock must be >= 1")

"""Log-location test: has the typical magnitude of a *continuous* metric moved?

The gate's aspects count sessions on one side of a baseline bucket (above the median, the
P95, ...): robust for every metric shape, but blind to *how far* each value moved. A gradual
ramp (context demand creeping from 6K to 20K tokens) moves every session a little, and the
shares reach the evidence an alert needs late: ~340 sessions into the ramp of the
``context-creep`` simulation, where ADWIN's median detection was 305. This test compares
the mean of ``log(1 + x)`` over windows ending now (``min_n``..all of ``values``) with the
baseline's, z^2 / 2 in nats, and keeps the strongest window, as the gate's scan does.

It is used only where a z-test is calibrated: a baseline with no bucket holding
``MAX_MODE_SHARE`` of its values or more (token counts, utilization; not small counts such
as fan-out, or mostly-zero metrics, where a handful of nonzero values fakes a large z). Its
threshold (``GateConfig.log_location_nats``) is higher than the shares' 18 nats: at 18 one
false pair of alerts came in 4 x 1,000,000 steady sessions (``bench/bench_detection.py``).

>>> from app.core.sketch import Sketch
>>> import random
>>> rng = random.Random(1)
>>> loc = LogLocation.of(Sketch.of([rng.lognormvariate(8.7, 0.4) for _ in range(2000)]))
>>> round(loc.mean, 1), round(loc.sd, 1)
(8.7, 0.4)
>>> same = [rng.lognormvariate(8.7, 0.4) for _ in range(300)]
>>> loc.scan(same, 20)[0] < 10
True
>>> higher = [rng.lognormvariate(9.0, 0.4) for _ in range(300)]  # +35% in magnitude
>>> nats, length, direction = loc.scan(same + higher, 20)
>>> nats > 24, direction
(True, 1)
>>> LogLocation.of(Sketch.of([3, 3, 4, 2, 3, 5] * 300)) is None  # a count: 3 holds 50%
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from app.core.sketch import Sketch

MAX_MODE_SHARE = 0.05  # a baseline bucket holding this share or more: not continuous enough


@dataclass(frozen=True, slots=True)
class LogLocation:
    mean: float  # of log(1 + x) over the baseline
    sd: float
    n: int  # baseline values

    @classmethod
    def of(cls, sketch: Sketch) -> LogLocation | None:
        """The baseline's log-location, or None where the test is not calibrated. Derived from
        the sketch in key order with exact sums, so a restored state gets the same floats."""
        n = sketch.count
        if n == 0 or max(sketch.zeros, max(sketch.bins.values(), default=0)) >= MAX_MODE_SHARE * n:
            return None
        weighted = [(math.log1p(sketch.value_of(k)), sketch.bins[k]) for k in sketch.sorted_keys()]
        mean = math.fsum(y * c for y, c in weighted) / n  # zeros add log1p(0) = 0
        var = (math.fsum((y - mean) ** 2 * c for y, c in weighted) + sketch.zeros * mean ** 2) / n
        return None if var <= 0.0 else cls(mean, math.sqrt(var), n)

    def scan(self, values: Sequence[float], min_n: int) -> tuple[float, int, int]:
        """(nats, length, direction) of the window ending now, ``min_n`` values or longer, whose
        mean log moved most from the baseline's (z^2 / 2; direction +1 up, -1 down)."""
        sums = list(accumulate(map(math.log1p, reversed(values))))  # newest first
        if len(sums) < min_n:
            return 0.0, 0, 0
        mean, inv_n0 = self.mean, 1.0 / self.n
        # z^2 * sd^2 per length, as one comprehension: judged at every look of the gate
        scores = [(s / i - mean) ** 2 / (1.0 / i + inv_n0)
                  for i, s in enumerate(sums[min_n - 1:], start=min_n)]
        top = max(scores)
        i = len(scores) - 1 - scores[::-1].index(top)  # ties: the longer window
        n = i + min_n
        return top / (2.0 * self.sd * self.sd), n, 1 if sums[n - 1] / n > mean else -1

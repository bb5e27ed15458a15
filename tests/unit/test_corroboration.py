"""A drift confirmed on one metric dates the change for the rest of its segment.

``metricwatch.hint`` tells the segment's other metrics where the change began;
``gate.corroborate`` then judges each on the window since then with less evidence than a
searched-for change needs. A partner that moved is alerted sooner; one that did not stays
quiet; the hint is state and survives a restart.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.core.aspects import aspect_hits
from app.core.gate import GateConfig, corroborate
from app.core.metricwatch import SEGMENT_CHANGE, MetricState, hint
from app.core.monitor_config import MonitorConfig
from app.core.reference import Reference
from app.core.segment import SegmentMonitor, SegmentState
from app.core.sketch import Sketch
from schemas.common import Segment
from schemas.session import SessionShape

T0 = 1_700_000_000 * 10**9
SEG = Segment(agent="search")
CHANGE = 2200


def shapes(seed: int, fanout_after: float, llm_after: float, n: int = 2600) -> list[SessionShape]:
    """Fan-out Poisson(3) and LLM calls 1 + Poisson(4), each switched at ``CHANGE``; one
    generator per metric, so a metric's values do not depend on the other's shift."""
    rng_fan, rng_llm = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    fan, llm = rng_fan.poisson(3.0, n), 1 + rng_llm.poisson(4.0, n)
    fan[CHANGE:] = rng_fan.poisson(fanout_after, n - CHANGE)
    llm[CHANGE:] = 1 + rng_llm.poisson(llm_after, n - CHANGE)
    proto = SessionShape(session_id="s", segment=SEG, start_time_unix_nano=T0,
                         end_time_unix_nano=T0, closed_by="session_end", spans=9)
    return [proto.model_copy(update={"session_id": f"s{i}", "end_time_unix_nano": T0 + i * 10**9,
                                     "fanout": int(f), "llm_calls": int(k)})
            for i, (f, k) in enumerate(zip(fan.tolist(), llm.tolist(), strict=True))]


def drifts(seq: list[SessionShape], snapshot_every: int = 0) -> dict[str, tuple[int, str]]:
    """metric -> (sessions after the change, detector) of its drift alert."""
    mon = SegmentMonitor()
    state, out = mon.initial(SEG), {}
    for i, shape in enumerate(seq):
        if snapshot_every and i % snapshot_every == 0:  # as the stage-2 shell stores it
            state = SegmentState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
        state, alerts = mon.fold(state, shape)
        for a in alerts:
            if a.kind == "drift":
                out.setdefault(a.metric, ((a.detected_at - T0) // 10**9 - CHANGE, a.detector))
    return out


@pytest.mark.parametrize("seed", range(10))
def test_a_partner_that_moved_is_alerted_sooner_and_one_that_did_not_stays_quiet(seed):
    both = drifts(shapes(seed, fanout_after=11.0, llm_after=5.5))
    alone = drifts(shapes(seed, fanout_after=3.0, llm_after=5.5))
    only_fanout = drifts(shapes(seed, fanout_after=11.0, llm_after=4.0))
    assert set(both) == {"fanout", "llm_calls"} and set(alone) == {"llm_calls"}
    assert both["llm_calls"][0] < alone["llm_calls"][0]  # same values, sooner
    assert set(only_fanout) == {"fanout"}  # the hint found nothing in an unchanged partner


def test_the_hint_is_state_and_survives_a_restart():
    seq = shapes(7, fanout_after=11.0, llm_after=5.5)
    plain = drifts(seq)
    assert plain["llm_calls"][1] == SEGMENT_CHANGE  # this seed: only the hint found it
    assert drifts(seq, snapshot_every=7) == plain


def test_a_state_written_before_hints_existed_still_loads():
    d = MetricState.initial(MonitorConfig()).to_dict()
    assert d.pop("hint") is None
    assert MetricState.from_dict(d).change_hint is None


def test_corroborate_wants_a_full_window_and_a_material_change():
    ref = Reference.from_sketch(Sketch.of([3.0, 2.0, 4.0, 3.0, 1.0, 5.0, 3.0, 2.0] * 250))
    higher = [4.0, 3.0, 5.0, 4.0, 6.0, 4.0, 2.0, 5.0] * 4
    assert corroborate(higher, ref).passed
    assert not corroborate(higher[:GateConfig().min_post_n - 1], ref).passed
    assert not corroborate([3.0, 2.0, 4.0, 3.0, 1.0, 5.0, 3.0, 2.0] * 4, ref).passed


def test_the_hits_kept_up_to_date_are_those_of_the_window_since_the_hint():
    mon = SegmentMonitor()
    state = mon.initial(SEG)
    seq = shapes(3, fanout_after=3.0, llm_after=4.0)  # nothing changes: the hint runs out
    for shape in seq[:CHANGE]:
        state, _ = mon.fold(state, shape)
    ms = state.metrics["llm_calls"]
    hint(ms, 0)
    for shape in seq[CHANGE:CHANGE + 200]:
        state, _ = mon.fold(state, shape)
        since = ms.n - ms.change_hint
        assert ms.hint_hits == (ms.n, aspect_hits(ms.window.last(since), ms.ref))

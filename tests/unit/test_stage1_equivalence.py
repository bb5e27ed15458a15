"""The flattened stage-1 fold and the cycle-free tree-depth fast path give exactly what the
code before them gave (a frozen copy), on random sessions, replays and parent cycles."""

from __future__ import annotations

import legacy_session as old
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_session import random_session

from app.core import session as core
from schemas.fastspan import SpanRecord


def fold_with(mod, spans):
    state = None
    for sp in spans:
        state = mod.fold(state, sp)
    return state


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fold_and_close_unchanged(data):
    spans = data.draw(random_session(acyclic=data.draw(st.booleans())))
    spans = data.draw(st.permutations(spans + data.draw(st.lists(st.sampled_from(spans), max_size=4))))
    new, ref = fold_with(core, spans), fold_with(old, spans)
    assert new.to_bytes() == ref.to_bytes()
    assert core.close(new, "idle") == old.close(ref, "idle")
    # the compiled decoder's records fold alike
    records = [SpanRecord(**sp.model_dump(exclude={"schema_version"})) for sp in spans]
    assert fold_with(core, records).to_bytes() == ref.to_bytes()


parent_maps = st.dictionaries(
    st.sampled_from([f"s{i}" for i in range(12)]),
    st.sampled_from(["", "ghost"] + [f"s{i}" for i in range(12)]), max_size=12)


@settings(max_examples=500, deadline=None)
@given(parent_maps)
def test_tree_depth_fast_path_unchanged(parents):
    assert core.tree_depth(parents) == old.tree_depth(parents)
    assert core.tree_depth(parents) == core.tree_depth(dict(reversed(list(parents.items()))))

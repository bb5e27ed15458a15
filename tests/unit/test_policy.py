"""Policy loading (file/field errors) and routing decisions."""

from __future__ import annotations

import json

import pytest
import yaml

from app.loop.fileload import LoadError
from app.loop.policy import EXAMPLE_POLICY, load_policy, policy_diff, route
from schemas import Segment


@pytest.fixture
def policy():
    return load_policy(EXAMPLE_POLICY)


def test_example_policy_is_the_reference_scenario(policy):
    small, large = policy.model("haiku-s"), policy.model("opus-l")
    assert small.context_window == 131072 and small.capability == 0.55
    assert large.context_window >= 128_000 and large.capability == 1.0
    support = policy.for_segment(Segment(agent="support"))
    assert support.context_cap == 16384 and support.retry_budget == 2
    assert [(r.max_complexity, r.model) for r in support.routes] == [(0.7, "haiku-s"), (1.0, "opus-l")]
    # ~80% of calls go to haiku-s, which handles less than its rule sends it: the misroute gap.
    assert support.routes[0].max_complexity > small.capability
    assert policy.for_segment(Segment(agent="search")).context_cap == 131072
    assert {s.segment.agent for s in policy.segments} == {"dev-assistant", "support", "search"}


def test_json_and_yaml_load_the_same(tmp_path, policy):
    data = yaml.safe_load(EXAMPLE_POLICY.read_text())
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    assert load_policy(path) == policy


def test_errors_name_file_and_field(tmp_path):
    data = yaml.safe_load(EXAMPLE_POLICY.read_text())
    data["segments"][1]["routes"][0]["model"] = "gpt-huge"
    data["segments"][2]["context_cap"] = -5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LoadError) as err:
        load_policy(path)
    msg = str(err.value)
    assert f"{path}: segments[2].context_cap: Input should be greater than 0" in msg
    data["segments"][2]["context_cap"] = 1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(LoadError, match=r"segments\[1\]\.routes: model 'gpt-huge' is not in models"):
        load_policy(path)
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(LoadError, match="not valid JSON"):
        load_policy(tmp_path / "x.json")
    with pytest.raises(LoadError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")


@pytest.mark.parametrize("complexity,model,rule", [
    (0.0, "haiku-s", "support:routes[0]"), (0.7, "haiku-s", "support:routes[0]"),
    (0.71, "opus-l", "support:routes[1]"), (1.0, "opus-l", "support:routes[1]"),
])
def test_route_by_complexity(policy, complexity, model, rule):
    d = route(policy, Segment(agent="support"), complexity)
    assert (d.model, d.rule, d.retry_budget, d.version) == (model, rule, 2, 1)


def test_context_cap_never_above_model_window(policy):
    raised = policy.model_copy(update={"segments": [
        s.model_copy(update={"context_cap": 200_000}) for s in policy.segments]})
    seg = Segment(agent="support")
    assert route(raised, seg, 0.3).context_cap == 131072  # small model's window
    assert route(raised, seg, 0.9).context_cap == 200_000
    # A task that needs more context than the small model has goes to a model that fits.
    wide = route(raised, seg, 0.3, context_demand=150_000)
    assert (wide.model, wide.context_cap, wide.rule) == ("opus-l", 200_000, "support:routes[0]+window")
    # Under the original 16K cap there is nothing wider to gain: stay on the small model.
    assert route(policy, seg, 0.3, context_demand=150_000).model == "haiku-s"


def test_task_type_falls_back_to_agent_and_unknown_to_default(policy):
    assert route(policy, Segment(agent="support", task_type="refund"), 0.9).rule == "support:routes[1]"
    d = route(policy, Segment(agent="billing"), 0.7)
    assert (d.model, d.rule, d.context_cap) == ("opus-l", "default", 200000)


def test_policy_diff(policy):
    seg = policy.segments[1]
    new_seg = seg.model_copy(update={"context_cap": 65536, "routes": [
        seg.routes[0].model_copy(update={"max_complexity": 0.55}), seg.routes[1]]})
    new = policy.model_copy(update={"segments": [policy.segments[0], new_seg]})
    changes = [(c.segment.key, c.field, c.old, c.new) for c in policy_diff(policy, new)]
    assert ("support", "context_cap", 16384, 65536) in changes
    assert ("support", "routes[0].max_complexity", 0.7, 0.55) in changes
    assert ("search", "segment") == changes[-1][:2] and changes[-1][3] is None

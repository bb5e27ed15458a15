"""The signature recipe, byte for byte, and verification failures."""

from __future__ import annotations

import hashlib
import hmac
import json

from app.loop.policy import EXAMPLE_POLICY, load_policy
from app.loop.signing import canonical, sign, sign_recalibration, verify
from schemas import PolicyChange, RoutingRecalibration, Segment


def recalibration() -> RoutingRecalibration:
    policy = load_policy(EXAMPLE_POLICY)
    new = policy.model_copy(update={"version": 2})
    change = PolicyChange(segment=Segment(agent="support"), field="context_cap", old=1, new=2)
    return RoutingRecalibration(policy_id=policy.policy_id, version=2, created_at=5, mode="auto",
                                changes=[change], policy=new, evidence={"note": "naïve ✓"})


def test_recipe_matches_the_contract():
    rec = sign_recalibration(recalibration(), "secret")
    body = rec.model_dump(mode="json")
    sig = body.pop("signature")
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert sig == hmac.new(b"secret", blob.encode("utf-8"), hashlib.sha256).hexdigest()
    assert "naïve ✓".encode() in canonical(body)  # UTF-8, not \\u escapes


def test_wire_round_trip_verifies():
    wire = sign_recalibration(recalibration(), b"secret").model_dump_json()
    assert verify(json.loads(wire), "secret")


def test_forged_tampered_and_missing():
    msg = sign(recalibration().model_dump(mode="json", exclude={"signature"}), "secret")
    assert verify(msg, "secret")
    assert not verify(msg, "wrong key")
    assert not verify({**msg, "version": 3}, "secret")
    assert not verify({**msg, "signature": msg["signature"].upper()}, "secret")
    assert not verify({k: v for k, v in msg.items() if k != "signature"}, "secret")
    assert not verify({**msg, "signature": 12}, "secret")


def test_signature_ignores_key_order():
    a = sign({"b": 1, "a": [1, {"y": 2, "x": 1}]}, "k")
    b = sign({"a": [1, {"x": 1, "y": 2}], "b": 1}, "k")
    assert a["signature"] == b["signature"]

"""HMAC-SHA256 signatures over the canonical JSON of a recalibration message.

Recipe (any language can reproduce it): take the message as a JSON object, drop the
``signature`` key, serialise with sorted keys, no whitespace, non-ASCII kept as UTF-8, and
HMAC-SHA256 the bytes with the shared key; ``signature`` is the lowercase hex digest.

>>> msg = sign({"policy_id": "p", "version": 2, "note": "café"}, "k")
>>> msg["signature"] == hmac_hex(b'{"note":"caf\\xc3\\xa9","policy_id":"p","version":2}', b"k")
True
>>> verify(msg, "k"), verify(msg, "other"), verify({**msg, "version": 3}, "k")
(True, False, False)
>>> verify({"policy_id": "p"}, "k")
False
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from schemas.recalibration import RoutingRecalibration

Key = str | bytes


def canonical(msg: dict[str, Any]) -> bytes:
    """Canonical bytes of ``msg`` without its ``signature``."""
    body = {k: v for k, v in msg.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def hmac_hex(data: bytes, key: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _key(key: Key) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def sign(msg: dict[str, Any], key: Key) -> dict[str, Any]:
    """A copy of ``msg`` with ``signature`` set."""
    return {**msg, "signature": hmac_hex(canonical(msg), _key(key))}


def verify(msg: dict[str, Any], key: Key) -> bool:
    """True if ``msg["signature"]`` matches (constant-time compare)."""
    sig = msg.get("signature")
    if not isinstance(sig, str):
        return False
    return hmac.compare_digest(sig.encode("utf-8"), hmac_hex(canonical(msg), _key(key)).encode())


def sign_recalibration(rec: RoutingRecalibration, key: Key) -> RoutingRecalibration:
    """``rec`` with its signature over ``model_dump(mode="json")`` minus ``signature``."""
    body = rec.model_dump(mode="json", exclude={"signature"})
    return RoutingRecalibration.model_validate(sign(body, key))

"""``loadshape gateway``: the gateway's acceptance logic, offline.

``check FILE`` runs recalibration messages (JSON lines) through the same acceptance a live
gateway uses, in order, so an older version after a newer one is rejected. One JSON line per
message: ``{"version": ..., "accepted": ..., "reason": ...}``. Exit 0 if all were accepted,
1 if any was rejected, 2 on a usage error.

``sign FILE`` signs messages (JSON lines) with the key, e.g. to approve a ``propose``-mode
proposal as ``auto`` after review.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("gateway", help="routing gateway: check or sign recalibration messages")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    c = verbs.add_parser("check", help="run gateway acceptance over a JSON-lines file")
    c.add_argument("file", type=Path)
    c.add_argument("--policy", type=Path, default=None,
                   help="served policy to start from (default: LOADSHAPE_POLICY_FILE; else the "
                        "first verified message is taken as-is)")
    c.add_argument("--shadow", action="store_true", help="shadow mode: never apply")
    c.add_argument("--accept-proposals", action="store_true", help="apply mode=propose too")
    c.add_argument("-v", "--verbose", action="store_true", help="add detail and changes")
    s = verbs.add_parser("sign", help="sign JSON-lines messages (prints them signed)")
    s.add_argument("file", type=Path)
    s.add_argument("--approve", action="store_true", help="set mode to 'auto' before signing")
    for q in (c, s):
        q.add_argument("--key-env", metavar="VAR", default=None,
                       help="read the HMAC key from env VAR (default: LOADSHAPE_RECALIBRATION_KEY)")
    p.set_defaults(handler=run)


def _key(args, settings) -> str | None:
    if args.key_env:
        return os.environ.get(args.key_env)
    return None if settings.recalibration_key is None else settings.recalibration_key.get_secret_value()


def run(args, settings) -> int:
    key = _key(args, settings)
    if not key:
        print("loadshape: no recalibration key (LOADSHAPE_RECALIBRATION_KEY or --key-env)",
              file=sys.stderr)
        return 2
    try:
        return _check(args, settings, key) if args.verb == "check" else _sign(args, key)
    except OSError as exc:
        print(f"loadshape: {exc}", file=sys.stderr)
        return 2


def _check(args, settings, key: str) -> int:
    from app.loop.fileload import LoadError
    from app.loop.gateway import Gateway
    from app.loop.policy import load_policy

    path = args.policy or settings.policy_file
    try:
        policy = None if path is None else load_policy(path)
    except LoadError as exc:
        print(f"loadshape: {exc}", file=sys.stderr)
        return 2
    gw = Gateway(policy, key, shadow=args.shadow, accept_proposals=args.accept_proposals)
    all_ok = True
    with args.file.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            verdict = gw.offer(line)
            all_ok &= verdict.accepted
            out = verdict.line()
            if args.verbose:
                out["detail"] = verdict.detail
                out["changes"] = [c.model_dump(mode="json") for c in verdict.changes]
            print(json.dumps(out), flush=True)
    return 0 if all_ok else 1


def _sign(args, key: str) -> int:
    from app.loop.signing import sign

    with args.file.open("rb") as f:
        for no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError as exc:
                print(f"loadshape: {args.file}:{no}: not JSON: {exc}", file=sys.stderr)
                return 2
            if args.approve:
                msg["mode"] = "auto"
            print(json.dumps(sign(msg, key), ensure_ascii=False), flush=True)
    return 0

"""``loadshape settings``: print the effective settings with secrets masked."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("settings", help="print the effective settings (secrets masked)")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    print(json.dumps(settings.masked_dump(), indent=2, default=str))
    return 0

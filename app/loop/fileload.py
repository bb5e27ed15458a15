"""Read a YAML/JSON document and explain validation errors by file, entry and field.

>>> where(("segments", 1, "routes", 0, "model"))
'segments[1].routes[0].model'
>>> where(())
'(document)'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class LoadError(ValueError):
    """A config file is unreadable or invalid; the message names file, entry and field."""


def where(loc: Sequence[str | int]) -> str:
    """Render a pydantic error location as ``a[1].b``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def read_document(path: str | Path) -> Any:
    """Parse ``path`` as JSON (``.json``) or YAML (anything else); raise ``LoadError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"{path}: cannot read: {exc}") from exc
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise LoadError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc


def explain(source: str, err: ValidationError, prefix: Sequence[str | int] = ()) -> str:
    """One line per bad field: ``source: a[1].b: message``."""
    lines = []
    for e in err.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {where((*prefix, *e['loc']))}: {msg}")
    return "\n".join(lines)

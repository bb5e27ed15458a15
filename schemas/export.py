"""Write JSON Schema files for producers in other languages: ``python -m schemas.export``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas import CONTRACTS

JSON_DIR = Path(__file__).resolve().parent / "json"


def render() -> dict[str, str]:
    """File name -> JSON Schema text for every contract."""
    out = {}
    for name, model in CONTRACTS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"loadshape/{name}.schema.json"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def stale() -> list[str]:
    """Names of committed schema files that differ from the models (or are missing)."""
    return [f for f, text in render().items()
            if not (JSON_DIR / f).exists() or (JSON_DIR / f).read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        bad = stale()
        for f in bad:
            print(f"schemas/json/{f} is stale: run `python -m schemas.export`", file=sys.stderr)
        return 1 if bad else 0
    JSON_DIR.mkdir(exist_ok=True)
    for fname, text in render().items():
        (JSON_DIR / fname).write_text(text, encoding="utf-8")
        print(JSON_DIR / fname)
    return 0


if __name__ == "__main__":
    sys.exit(main())

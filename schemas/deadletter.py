"""DeadLetter: a record we could not accept, with the reason and the original bytes."""

from __future__ import annotations

import base64
from typing import Literal

from pydantic import ConfigDict, Field

from schemas.common import Contract, Label, NonNegInt, Text


class DeadLetter(Contract):
    model_config = ConfigDict(strict=False, allow_inf_nan=False, extra="allow", frozen=True)

    schema_version: Literal[1] = 1
    reason: Text
    reason_code: Label = Field(description="short machine label, e.g. invalid_json, invalid_field")
    field: Text | None = None
    source: Label = Field(description="topic name or file path the record came from")
    partition: NonNegInt | None = None
    offset: NonNegInt | None = None
    line: NonNegInt | None = None
    original_b64: str

    @classmethod
    def of(cls, original: bytes, *, reason: str, reason_code: str, source: str, **where) -> DeadLetter:
        return cls(
            reason=reason[:4096], reason_code=reason_code, source=source[:128],
            original_b64=base64.b64encode(original).decode("ascii"), **where,
        )

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)

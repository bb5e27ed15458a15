"""Read OTLP/JSON lines as the OpenTelemetry Collector's file exporter writes them.

One ``ExportTraceServiceRequest`` per line, ids in hex, enums as integers, int64 as
strings (see ``app.otlp.decode``). Blank lines are skipped; a bad line yields an
``OtlpDecodeError`` carrying the line bytes and never stops the iteration.
Compressed files and the exporter's ``format: proto`` are not read here.

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as d:
...     path = pathlib.Path(d, "traces.jsonl")
...     _ = path.write_bytes(b'{"resourceSpans": []}\\n\\nnot json\\n')
...     results = list(iter_otlp_json_lines(path))
>>> [(n, type(r).__name__) for n, r in results]
[(1, 'MappedBatch'), (3, 'OtlpDecodeError')]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from os import PathLike
from types import MappingProxyType

from app.otlp.decode import OtlpDecodeError
from app.otlp.mapping import MappedBatch, map_record

_NO_WINDOWS: Mapping[str, int] = MappingProxyType({})


def iter_otlp_json_lines(
    path: str | PathLike[str], context_windows: Mapping[str, int] = _NO_WINDOWS,
) -> Iterator[tuple[int, MappedBatch | OtlpDecodeError]]:
    """(1-based line number, mapped batch or decode error) for each non-blank line."""
    with open(path, "rb") as lines:
        yield from map_json_lines(lines, context_windows)


def map_json_lines(
    lines: Iterable[bytes], context_windows: Mapping[str, int] = _NO_WINDOWS,
) -> Iterator[tuple[int, MappedBatch | OtlpDecodeError]]:
    """Like ``iter_otlp_json_lines`` over any iterable of byte lines (a file, a socket).

    >>> [(n, r.reason) for n, r in map_json_lines([b"[]\\n"])]
    [(1, 'OTLP/JSON record is not a JSON object')]
    """
    for line_no, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line_no, map_record(line, "otlp_json", context_windows)

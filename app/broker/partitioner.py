"""Which partition a key goes to: what our producers (aiokafka's default partitioner) do."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner


def partition_of(key: bytes, partitions: int) -> int:
    """The partition our producers put ``key`` in, of ``partitions``.

    >>> partition_of(b"sess-1", 4) == partition_of(b"sess-1", 4)
    True
    """
    every = list(range(partitions))
    return DefaultPartitioner()(key, every, every)

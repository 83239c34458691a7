"""Kafka's default key partitioner (murmur2 of the key, as the Java client computes it), faster. Pure.

Statuses are keyed by message id, so every status is hashed; aiokafka's own murmur2 reads the key byte by
byte and was a tenth of the service's CPU on large batches. This one reads four bytes at a time and gives
the same partition for every key, so a message's statuses land where any Kafka client would put them.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from functools import lru_cache

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


@lru_cache(maxsize=256)
def _words(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}I")


def murmur2(data: bytes) -> int:
    """MurmurHash2 (32 bit, seed 0x9747b28c) of `data`, as `org.apache.kafka.common.utils.Utils.murmur2`
    computes it, as an unsigned 32-bit value."""
    length = len(data)
    h = _SEED ^ length
    m, mask = _M, _MASK
    # Masking distributes over XOR: one mask per step instead of three (a tenth faster on a UUID).
    for k in _words(length >> 2).unpack_from(data):
        k = k * m & mask
        h = (h * m ^ (k ^ k >> 24) * m) & mask
    rest = length & 3
    if rest:
        tail = length & ~3
        if rest == 3:
            h ^= data[tail + 2] << 16
        if rest >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of a key among `partitions` (sorted by id), as Kafka's default partitioner picks it."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


class KeyPartitioner:
    """A drop-in for aiokafka's `DefaultPartitioner` (the producer's `partitioner` option)."""

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return partition_for(key, all_partitions)

"""The workflow IDs aiodurable makes: UUIDs of version 7 (RFC 9562), ordered by creation time.

A version 7 UUID starts with the millisecond it was made, so IDs made one after another sort
together: new rows land side by side at the end of the indexes keyed by workflow ID (the
workflows, their journal, messages and events) instead of on random pages all over them, which
keeps the pages written to a small, cached set however many finished workflows a database
holds. The rest is random (74 bits), so IDs made in the same millisecond by any number of
processes still do not collide.
"""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["new_workflow_id"]

_VERSION = 0x7
_VARIANT = 0b10


def new_workflow_id() -> str:
    """A new workflow ID: a time-ordered UUID (version 7) as its usual 36-character text."""
    millis = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    rand_a = (random_bits >> 62) & 0xFFF  # 12 bits
    rand_b = random_bits & ((1 << 62) - 1)  # 62 bits
    value = (
        (millis & ((1 << 48) - 1)) << 80 | _VERSION << 76 | rand_a << 64 | _VARIANT << 62 | rand_b
    )
    return str(uuid.UUID(int=value))

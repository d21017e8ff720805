"""Retention over a :class:`MemoryState`: a base of ``MemoryStore``."""

from __future__ import annotations

from ._memory_state import MemoryState

__all__ = ["MemoryRetention"]


class MemoryRetention:
    """The store's garbage collection members, in memory."""

    state: MemoryState

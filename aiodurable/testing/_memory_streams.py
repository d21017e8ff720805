"""Streams over a :class:`MemoryState`: a base of ``MemoryStore``."""

from __future__ import annotations

from ._memory_state import MemoryState

__all__ = ["MemoryStreams"]


class MemoryStreams:
    """The store's stream members, in memory."""

    state: MemoryState

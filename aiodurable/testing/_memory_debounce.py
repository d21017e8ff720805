"""Debouncing over a :class:`MemoryState`: a base of ``MemoryStore``."""

from __future__ import annotations

from ._memory_state import MemoryState

__all__ = ["MemoryDebounce"]


class MemoryDebounce:
    """The store's debouncing members, in memory."""

    state: MemoryState

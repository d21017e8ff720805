"""Schedules over a :class:`MemoryState`: a base of ``MemoryStore``."""

from __future__ import annotations

from ._memory_state import MemoryState

__all__ = ["MemorySchedules"]


class MemorySchedules:
    """The store's schedule members, in memory."""

    state: MemoryState

"""The rows of workflow streams, as plain frozen dataclasses (see :mod:`._records`).

Kept apart from the store so that the engine, the console and the in-memory store use them
without importing the real store. Times are POSIX seconds; the table holds epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StreamItem", "StreamPage", "StreamSummary"]


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One row of a stream: a value at ``offset``, or (``value`` None) the marker
    ``close_stream`` wrote after the last value."""

    offset: int
    format: str | None
    value: bytes | None
    created_at: float = 0.0
    clipped: bool = False  # (the console's reads: the value was cut)

    @property
    def closes(self) -> bool:
        """Whether this row is the close marker."""
        return self.value is None


@dataclass(frozen=True, slots=True)
class StreamPage:
    """What one read of a stream found: the workflow's status and the stream's rows from the
    offset asked for, in offset order (at most the number asked for), read together."""

    status: str
    items: tuple[StreamItem, ...]


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """One stream of a workflow (for the console): how many values it holds, whether it was
    closed, and its last few values (clipped), oldest first."""

    key: str
    count: int
    closed: bool
    last: tuple[StreamItem, ...]

"""Streams: the values a workflow writes under a key, read in order by anyone."""

from __future__ import annotations

from ._base import StoreBase

__all__ = ["StreamsPart"]


class StreamsPart(StoreBase):
    """Write, close and read workflow streams."""

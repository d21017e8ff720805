"""Debouncing: the open burst of calls per key, and the arguments of its last call."""

from __future__ import annotations

from ._base import StoreBase

__all__ = ["DebouncePart"]


class DebouncePart(StoreBase):
    """Join or open a burst, and close it."""

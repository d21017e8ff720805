"""Retention: deleting finished workflows with everything they recorded, in batches."""

from __future__ import annotations

from ._base import StoreBase

__all__ = ["RetentionPart"]


class RetentionPart(StoreBase):
    """Garbage collection of finished workflows."""

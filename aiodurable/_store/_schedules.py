"""Schedules: cron schedules stored in the database, and the ticks they have started."""

from __future__ import annotations

from ._base import StoreBase

__all__ = ["SchedulesPart"]


class SchedulesPart(StoreBase):
    """Create, list, pause, resume and delete schedules."""

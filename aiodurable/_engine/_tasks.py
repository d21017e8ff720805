"""``TaskGroup``: the one owner of an engine's background work.

Every task an engine starts (its supervised loops, each workflow's task, deadline timers,
ownership proofs, relaunches) is spawned here, so that closing the engine cancels and awaits all of
them in one place, and a task that fails with nobody awaiting it is logged rather than lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from .._logging import LOGGER_NAME

__all__ = ["TaskGroup"]

logger = logging.getLogger(LOGGER_NAME)


class TaskGroup:
    """The tasks of one engine: spawned, tracked until done, cancelled and awaited on close."""

    __slots__ = ("_quiet", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._quiet: set[asyncio.Task[Any]] = set()

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str, report: bool = True
    ) -> asyncio.Task[Any]:
        """Run ``coro`` in a task of the group. Its failure is logged, unless ``report`` is False:
        for a task whose awaiters receive its exception themselves."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        if not report:
            self._quiet.add(task)
        task.add_done_callback(self._done)
        return task

    def __contains__(self, task: object) -> bool:
        return task in self._tasks

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task in self._quiet:
            self._quiet.discard(task)
            if not task.cancelled():
                task.exception()  # retrieved: its awaiters raise it
            return
        if not task.cancelled() and task.exception() is not None:
            logger.error("aiodurable task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Cancel every task of the group and wait until all have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

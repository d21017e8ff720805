"""Gates: workflows park at one until the test releases them, and say when they arrive.

Each test module makes its own ``Gates()``; keys are workflow IDs.
"""

from __future__ import annotations

import asyncio

import aiodurable


class Gates:
    """Per-key events: an arrival the workflow sets, a gate the test opens."""

    def __init__(self) -> None:
        self._gates: dict[str, asyncio.Event] = {}
        self._arrivals: dict[str, asyncio.Event] = {}

    def gate(self, key: str) -> asyncio.Event:
        """The event that lets ``key`` through."""
        return self._gates.setdefault(key, asyncio.Event())

    def arrival(self, key: str) -> asyncio.Event:
        """The event ``key`` sets when it reaches its gate."""
        return self._arrivals.setdefault(key, asyncio.Event())

    async def park(self, key: str | None = None) -> None:
        """In a workflow or step: say it arrived, then wait for the gate (default key: the
        current workflow's ID)."""
        key = key or aiodurable.current_workflow_id()
        self.arrival(key).set()
        await self.gate(key).wait()

    async def arrived(self, key: str) -> None:
        """Wait until ``key`` has reached its gate."""
        await self.arrival(key).wait()

    def release(self, key: str) -> None:
        """Let ``key`` through its gate (now, or whenever it arrives)."""
        self.gate(key).set()

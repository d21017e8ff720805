"""Debouncing over a :class:`MemoryState`: a base of ``MemoryStore``."""

from __future__ import annotations

import uuid

from .._records import DEBOUNCE_QUEUE
from .._signals import Signal
from ._memory_state import Burst, MemoryState, StoredWorkflow, ms

__all__ = ["MemoryDebounce"]


class MemoryDebounce:
    """The store's debouncing members, in memory (see ``aiodurable._store.DebouncePart``)."""

    state: MemoryState

    async def join_burst(
        self,
        name: str,
        key: str,
        workflow_id: str,
        fmt: str,
        inputs: bytes,
        now: float,
        period: float,
        max_wait: float | None,
    ) -> str:
        """Join the open burst of ``(name, key)`` or open one (see the PostgreSQL store)."""
        state = self.state
        burst = state.debounces.get((name, key))
        if burst is not None:
            wf = state.workflows.get(burst.workflow_id)
            if wf is not None and wf.status == "ENQUEUED":
                burst.last_at = max(burst.last_at, ms(now))
                wf.format, wf.inputs, wf.updated_at = fmt, inputs, ms(now)
                return burst.workflow_id
            del state.debounces[(name, key)]  # its workflow was cancelled: start afresh
        if workflow_id in state.workflows:
            workflow_id = str(uuid.uuid4())
        at = ms(now)
        state.workflows[workflow_id] = StoredWorkflow(
            workflow_id=workflow_id,
            status="ENQUEUED",
            name=name,
            format=fmt,
            inputs=inputs,
            created_at=at,
            updated_at=at,
            app_version="",
            executor_id="",
            queue_name=DEBOUNCE_QUEUE,
        )
        state.debounces[(name, key)] = Burst(
            workflow_id, at, at, ms(period), None if max_wait is None else ms(max_wait)
        )
        state.notify(Signal.DEBOUNCE)
        state.notify(Signal.WORKFLOW, workflow_id, "ENQUEUED")
        return workflow_id

    async def close_due_bursts(self, now: float) -> list[str]:
        """Close the bursts due by ``now``; their workflows become PENDING and claimable."""
        state = self.state
        closed = []
        for name_key, burst in list(state.debounces.items()):
            if burst.due_at > ms(now):
                continue
            del state.debounces[name_key]
            wf = state.workflows.get(burst.workflow_id)
            if wf is None or wf.status != "ENQUEUED":
                continue
            wf.status, wf.executor_id, wf.app_version = "PENDING", "", ""
            wf.queue_name, wf.updated_at = None, ms(now)
            state.notify(Signal.WORKFLOW, wf.workflow_id, wf.status)
            state.notify(Signal.CLAIMABLE, wf.workflow_id)
            closed.append(wf.workflow_id)
        return closed

    async def next_burst_due(self) -> float | None:
        """When the next open burst closes, or None."""
        dues = [burst.due_at for burst in self.state.debounces.values()]
        return min(dues) / 1000 if dues else None

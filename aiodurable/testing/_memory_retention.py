"""Retention over a :class:`MemoryState`: a base of ``MemoryStore``."""

from __future__ import annotations

from collections.abc import Set
from typing import TypeVar

from .._store._retention import RetentionKey
from ._memory_state import MemoryState, StoredWorkflow, ms

__all__ = ["MemoryRetention"]

_FINISHED = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})
_UNFINISHED = frozenset({"PENDING", "ENQUEUED"})

K = TypeVar("K", bound=tuple[str, object])
V = TypeVar("V")


def _key(wf: StoredWorkflow) -> RetentionKey:
    return (wf.updated_at, wf.workflow_id)


def _forget(table: dict[K, V], ids: Set[str]) -> None:
    """Delete from ``table`` every row whose key begins with one of ``ids``."""
    for key in [key for key in table if key[0] in ids]:
        del table[key]


class MemoryRetention:
    """The store's garbage collection members, in memory (see
    ``aiodurable._store.RetentionPart``)."""

    state: MemoryState

    def _finished(self) -> list[StoredWorkflow]:
        """The finished workflows, oldest key first."""
        return sorted((w for w in self.state.workflows.values() if w.status in _FINISHED), key=_key)

    async def retention_bound(self, before: float | None, keep: int | None) -> RetentionKey | None:
        """The key below which finished workflows are collected (see the PostgreSQL store)."""
        bound: RetentionKey = (2**63 - 1, "") if before is None else (ms(before), "")
        if keep:
            finished = self._finished()
            if len(finished) < keep:
                return None
            bound = min(bound, _key(finished[-keep]))
        return bound

    async def collect_finished(
        self, after: RetentionKey, bound: RetentionKey, limit: int
    ) -> tuple[int, RetentionKey | None]:
        """Delete up to ``limit`` finished workflows keyed strictly between ``after`` and
        ``bound`` with every row keyed by them (see the PostgreSQL store)."""
        state = self.state
        doomed: list[StoredWorkflow] = []
        for wf in self._finished():
            if len(doomed) == limit or not _key(wf) < bound:
                break
            parent = state.workflows.get(wf.parent_workflow_id or "")
            if after < _key(wf) and (parent is None or parent.status not in _UNFINISHED):
                doomed.append(wf)
        ids = {wf.workflow_id for wf in doomed}
        for wid in ids:
            del state.workflows[wid]
            state.steps.pop(wid, None)
            state.event_history.pop(wid, None)
        _forget(state.messages, ids)
        _forget(state.message_keys, ids)
        _forget(state.events, ids)
        _forget(state.streams, ids)
        _forget(state.waits, ids)
        return len(doomed), _key(doomed[-1]) if doomed else None

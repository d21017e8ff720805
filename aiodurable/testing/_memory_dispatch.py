"""``MemoryDispatch``: how work moves between runtimes, in memory: executors and queues.

The part of :class:`~aiodurable.testing._memory_store.MemoryStore` that decides which runtime
runs what: heartbeats, the takeover of a silent executor's workflows, unassigned work claimed by
any live runtime, and the queues with their concurrency, per-executor concurrency, priority and
rate limit (of each partition, for a partitioned queue), each as the statement of
:class:`aiodurable._store.Store` of the same name.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .._exceptions import DuplicateWorkflowError
from .._partitions import PartitionLoad, most_per_partition, share
from .._records import Dequeued, DequeueRequest, NewWorkflow, WorkflowRow, check_new_workflow
from .._signals import Signal
from ._memory_state import Executor, MemoryState, StoredWorkflow, ms

__all__ = ["MemoryDispatch"]

_CLAIM_BATCH = 500


def _rate_window_opens(rate_limit: tuple[int, float] | None, recent: list[int]) -> float | None:
    """When the rate limit next admits a start, given the starts within its period (epoch ms,
    newest first); None when it has room now."""
    if rate_limit is None or len(recent) < rate_limit[0]:
        return None
    limit, period = rate_limit
    return recent[limit - 1] / 1000 + period


class MemoryDispatch:
    """Executors and queues over a :class:`MemoryState`; the base of ``MemoryStore``."""

    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def _status_changed(self, wf: StoredWorkflow) -> None:
        """Announce ``wf``'s status, and that it is claimable when PENDING on no executor."""
        self.state.notify(Signal.WORKFLOW, wf.workflow_id, wf.status)
        if wf.status == "PENDING" and wf.executor_id == "":
            self.state.notify(Signal.CLAIMABLE, wf.workflow_id)

    # -- executors ---------------------------------------------------------------------------

    async def heartbeat(self, executor_id: str, host: str, pid: int, app_version: str) -> bool:
        """Record that ``executor_id`` is alive now (the "database" clock: this machine's);
        return whether its row was there already (a takeover deletes it)."""
        existed = executor_id in self.state.executors
        self.state.executors[executor_id] = Executor(host, pid, app_version, ms(time.time()))
        return existed

    async def not_owned(self, workflow_ids: Sequence[str], executor_id: str) -> dict[str, str]:
        """Of ``workflow_ids``, those no longer PENDING on ``executor_id``, with where they are
        now, in words."""
        moved: dict[str, str] = {}
        for wid in workflow_ids:
            wf = self.state.workflows.get(wid)
            if wf is None or (wf.status == "PENDING" and wf.executor_id == executor_id):
                continue
            moved[wid] = (
                f"executor {wf.executor_id!r}"
                if wf.status == "PENDING"
                else f"{wf.status} (by executor {wf.executor_id!r})"
            )
        return moved

    async def silent_executors(self, app_version: str, lease: float, me: str) -> list[str]:
        """Executors of ``app_version`` silent for longer than ``lease`` seconds, counted from
        the state's creation at the earliest (as from the server's start)."""
        cutoff = ms(time.time()) - round(lease * 1000)
        silent = [
            (ex.last_seen, eid)
            for eid, ex in self.state.executors.items()
            if ex.app_version == app_version
            and eid != me
            and max(ex.last_seen, self.state.started_at) < cutoff
        ]
        return [eid for _, eid in sorted(silent)]

    async def executor_alive(self, executor_id: str) -> bool:
        """Whether a live runtime holds ``executor_id``'s lock."""
        return executor_id in self.state.holds

    async def take_over(
        self, dead: str, executor_id: str, app_version: str, names: Sequence[str], now: float
    ) -> list[WorkflowRow] | None:
        """Move a gone executor's PENDING workflows (of these names and this version) to
        ``executor_id``; None when its lock is held (it is alive after all)."""
        if dead in self.state.holds:
            return None
        rows = []
        for wf in self.state.select(status="PENDING", executor_id=dead, app_version=app_version):
            if wf.name in names:
                wf.executor_id, wf.updated_at = executor_id, ms(now)
                wf.recovery_attempts += 1
                rows.append(wf.row())
        self.state.executors.pop(dead, None)
        return rows

    async def claim_unassigned(
        self, names: Sequence[str], executor_id: str, app_version: str, now: float
    ) -> list[WorkflowRow]:
        """Take the PENDING workflows no executor runs, of these names and of this application
        version (or of none), for ``executor_id``."""
        rows: list[WorkflowRow] = []
        for wf in self.state.select(status="PENDING", executor_id=""):
            if (
                len(rows) < _CLAIM_BATCH
                and wf.name in names
                and wf.app_version in ("", app_version)
            ):
                wf.executor_id, wf.app_version, wf.updated_at = executor_id, app_version, ms(now)
                rows.append(wf.row())
        return rows

    async def release_executor(self, executor_id: str, now: float) -> list[str]:
        """Hand the PENDING workflows of a gone executor to any live runtime of their version."""
        released = []
        for wf in self.state.select(status="PENDING", executor_id=executor_id):
            wf.executor_id, wf.updated_at = "", ms(now)
            self._status_changed(wf)
            released.append(wf.workflow_id)
        return released

    # -- queues ------------------------------------------------------------------------------

    async def enqueue(self, w: NewWorkflow) -> bool:
        """Record an ENQUEUED workflow and wake the queue's dispatchers; False if its ID is
        taken; :class:`DuplicateWorkflowError` if its deduplication ID is queued or running."""
        check_new_workflow(w)
        if w.workflow_id in self.state.workflows:
            return False
        if w.deduplication_id is not None and await self.deduplicated(
            w.queue_name or "", w.deduplication_id
        ):
            raise DuplicateWorkflowError(
                f"deduplication ID {w.deduplication_id!r} is already queued or running on queue"
                f" {w.queue_name!r}; wait for that workflow, or pass on_duplicate='return' to get"
                " its handle"
            )
        wf = StoredWorkflow.new(w, status="ENQUEUED", executor_id="", queued=True)
        self.state.workflows[w.workflow_id] = wf
        self.state.notify(Signal.QUEUE, w.queue_name or "")
        return True

    async def deduplicated(self, queue_name: str, deduplication_id: str) -> str | None:
        """The ID of the queued or running workflow holding a deduplication ID."""
        for wf in self.state.select(queue_name=queue_name, deduplication_id=deduplication_id):
            if wf.status in ("ENQUEUED", "PENDING"):
                return wf.workflow_id
        return None

    async def dequeue(self, request: DequeueRequest) -> Dequeued:
        """Start as many ENQUEUED workflows of a queue as its limits allow, for the request's
        executor: global and per-executor concurrency, then the rate limit, in dispatch order."""
        if request.partitioned:
            return self._dequeue_partitions(request)
        q = request
        queue = list(self.state.select(queue_name=q.queue_name))
        running = [wf for wf in queue if wf.status == "PENDING"]
        free = q.batch
        if q.concurrency is not None:
            free = min(free, q.concurrency - len(running))
        if q.worker_concurrency is not None:
            here = sum(1 for wf in running if wf.executor_id == q.executor_id)
            free = min(free, q.worker_concurrency - here)
        recent: list[int] = []
        if q.rate_limit is not None:
            limit, period = q.rate_limit
            since = ms(q.now - period)
            starts = (wf.started_at for wf in queue if wf.started_at is not None)
            recent = sorted((at for at in starts if at > since), reverse=True)[:limit]
            free = min(free, limit - len(recent))
        if free <= 0:
            return Dequeued([], _rate_window_opens(q.rate_limit, recent))
        waiting = [
            wf
            for wf in queue
            if wf.status == "ENQUEUED"
            and wf.name in q.names
            and wf.app_version in ("", q.app_version)
        ]
        waiting.sort(key=lambda wf: (wf.priority if q.priority_enabled else 0, wf.created_at))
        rows = []
        for wf in waiting[:free]:
            wf.status, wf.executor_id, wf.app_version = "PENDING", q.executor_id, q.app_version
            wf.started_at = wf.updated_at = ms(q.now)
            rows.append(wf.row())
        recent = [ms(q.now)] * len(rows) + recent
        return Dequeued(rows, _rate_window_opens(q.rate_limit, recent))

    def _dequeue_partitions(self, q: DequeueRequest) -> Dequeued:
        """:meth:`dequeue` for a partitioned queue: the limits hold for each partition key, and
        the pass is shared between the partitions by :func:`aiodurable._partitions.share`."""
        queue = [wf for wf in self.state.select(queue_name=q.queue_name) if wf.partition_key]
        since = ms(q.now - (0 if q.rate_limit is None else q.rate_limit[1]))
        limit = 0 if q.rate_limit is None else q.rate_limit[0]
        cap = most_per_partition(q)

        def order(wf: StoredWorkflow) -> tuple[int, int]:
            # Without priority_enabled every priority is 0: this is the workflows' age.
            return (wf.priority, wf.created_at)

        parts: dict[str, list[StoredWorkflow]] = {}
        for wf in queue:
            parts.setdefault(wf.partition_key or "", []).append(wf)
        loads: list[PartitionLoad] = []
        runnable: dict[str, list[StoredWorkflow]] = {}
        for key, part in parts.items():
            queued = [wf for wf in part if wf.status == "ENQUEUED"]
            if not queued:
                continue
            running = [wf for wf in part if wf.status == "PENDING"]
            starts = (wf.started_at for wf in part if wf.started_at is not None)
            recent = sorted((at for at in starts if at > since), reverse=True)[:limit]
            runnable[key] = sorted(
                (
                    wf
                    for wf in queued
                    if wf.name in q.names and wf.app_version in ("", q.app_version)
                ),
                key=order,
            )
            head = min(queued, key=order)
            loads.append(
                PartitionLoad(
                    key=key,
                    head=(head.priority, head.created_at),
                    running=len(running),
                    here=sum(1 for wf in running if wf.executor_id == q.executor_id),
                    recent=tuple(recent),
                    waiting=min(cap, len(runnable[key])),
                )
            )
        plan = share(q, loads, ms(q.now))
        rows = []
        for key, take in plan.takes.items():
            for wf in runnable[key][:take]:
                wf.status, wf.executor_id, wf.app_version = "PENDING", q.executor_id, q.app_version
                wf.started_at = wf.updated_at = ms(q.now)
                rows.append(wf.row())
        return Dequeued(rows, plan.retry_at)

    async def queue_positions(self, queue_name: str) -> dict[str, int]:
        """The position (1 = next) of each ENQUEUED workflow of a queue, in dispatch order."""
        waiting = self.state.select(queue_name=queue_name, status="ENQUEUED")
        ordered = sorted(waiting, key=lambda wf: (wf.priority, wf.created_at))
        return {wf.workflow_id: i for i, wf in enumerate(ordered, 1)}

"""Queues: run workflows in the background within limits that hold across processes.

``q.enqueue(fn, *args)`` records the workflow as ENQUEUED and notifies; every open runtime with
the function registered dispatches the queue (``_engine._dispatch``), claiming queued workflows in
one transaction under a per-queue advisory lock, so the global ``concurrency`` and the rate limit
hold across every process sharing the database, while ``worker_concurrency`` bounds each process.
A partitioned queue applies those limits to each partition key on its own, and shares each
dispatch pass fairly between its partitions (:mod:`._partitions`). A ``@step`` function enqueued
runs as a one-step workflow (:func:`._workflow.queueable`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from ._context import (
    current_workflow,
    in_step,
    take_assigned_id,
    workflow_timeout,
)
from ._current import current_engine
from ._exceptions import DuplicateWorkflowError
from ._handle import WorkflowHandle
from ._ids import new_workflow_id
from ._options import take_shorthand
from ._records import AUTO_KEY_PREFIX, DEBOUNCE_QUEUE, NewWorkflow
from ._serde import return_hint
from ._validate import check_id, check_priority
from ._workflow import WorkflowDef, queueable

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["EnqueueOptions", "Queue", "RateLimit", "registered_queues"]

P = ParamSpec("P")
R = TypeVar("R")

OnDuplicate = Literal["raise", "return"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` workflows leave the queue in any ``period`` seconds."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"RateLimit(limit={self.limit!r}) must be an int >= 1")
        if (
            isinstance(self.period, bool)
            or not isinstance(self.period, int | float)
            or not math.isfinite(self.period)
            or self.period <= 0
        ):
            raise ValueError(f"RateLimit(period={self.period!r}) must be a number of seconds > 0")


def _limit(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"Queue({name}={value!r}) must be an int >= 1, or None for no limit")
    return value


# Queues declared in this process, by name: filled as modules are imported, like the workflow
# registry. A name declared again must carry the same settings.
_queues: dict[str, Queue] = {}


def registered_queues() -> list[Queue]:
    """Every queue declared in this process."""
    return list(_queues.values())


class Queue:
    """A named queue of workflows with flow control.

    ``concurrency`` bounds the workflows of this queue running at once across all processes;
    ``worker_concurrency`` bounds them in each process; ``limiter`` is a :class:`RateLimit`;
    with ``priority_enabled``, lower ``priority`` values leave the queue first (else FIFO).
    With ``partitioned``, every enqueue names a partition key
    (``q.with_options(partition_key="tenant-7").enqueue(fn)``) and the limits apply to each
    partition on its own, every partition with queued work progressing at once.
    Declaring the same name twice in a process with other settings raises ``ValueError``.
    """

    __slots__ = (
        "concurrency",
        "limiter",
        "name",
        "partitioned",
        "priority_enabled",
        "worker_concurrency",
    )

    def __init__(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        worker_concurrency: int | None = None,
        limiter: RateLimit | None = None,
        priority_enabled: bool = False,
        partitioned: bool = False,
    ) -> None:
        self.name: str = check_id("queue name", name)
        if name.startswith(AUTO_KEY_PREFIX):
            raise ValueError(
                f"queue names starting with {AUTO_KEY_PREFIX!r} are aiodurable's own (debounced"
                f" workflows wait on {DEBOUNCE_QUEUE!r}); choose another name than {name!r}"
            )
        self.concurrency: int | None = _limit("concurrency", concurrency)
        self.worker_concurrency: int | None = _limit("worker_concurrency", worker_concurrency)
        if limiter is not None and not isinstance(limiter, RateLimit):
            raise TypeError(f"Queue(limiter=) takes an aiodurable.RateLimit, not {limiter!r}")
        if (
            concurrency is not None
            and worker_concurrency is not None
            and worker_concurrency > concurrency
        ):
            raise ValueError(
                f"Queue({name!r}): worker_concurrency={worker_concurrency} exceeds"
                f" concurrency={concurrency}"
            )
        self.limiter: RateLimit | None = limiter
        self.priority_enabled: bool = bool(priority_enabled)
        self.partitioned: bool = bool(partitioned)
        existing = _queues.get(name)
        if existing is not None and existing._settings() != self._settings():
            raise ValueError(
                f"queue {name!r} is already declared with other settings"
                f" ({existing._describe()}); declare each queue once, or use another name"
            )
        _queues[name] = self

    def _settings(self) -> tuple[object, ...]:
        return (
            self.concurrency,
            self.worker_concurrency,
            self.limiter,
            self.priority_enabled,
            self.partitioned,
        )

    def _describe(self) -> str:
        return (
            f"concurrency={self.concurrency}, worker_concurrency={self.worker_concurrency},"
            f" limiter={self.limiter}, priority_enabled={self.priority_enabled},"
            f" partitioned={self.partitioned}"
        )

    def __repr__(self) -> str:
        return f"aiodurable.Queue({self.name!r}, {self._describe()})"

    def enqueue(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]:
        """Record ``fn(*args, **kwargs)`` as ENQUEUED on this queue and return its handle.

        ``fn`` is a workflow, or a ``@step`` function, which runs as a one-step workflow whose
        result is the step's. For options, use :meth:`with_options`; for a function without
        parameters of those names, ``workflow_id=``, ``priority=``, ``deduplication_id=``,
        ``on_duplicate=`` and ``partition_key=`` keywords are taken as options too. Inside a
        workflow it enqueues a child.
        """
        names = ("workflow_id", "priority", "deduplication_id", "on_duplicate", "partition_key")
        options: dict[str, Any] = take_shorthand(queueable(fn).fn, kwargs, names)
        return self.with_options(**options).enqueue(fn, *args, **kwargs)

    def with_options(
        self,
        *,
        workflow_id: str | None = None,
        priority: int = 0,
        deduplication_id: str | None = None,
        on_duplicate: OnDuplicate = "raise",
        partition_key: str | None = None,
    ) -> EnqueueOptions:
        """Enqueue options: ``q.with_options(priority=1).enqueue(fn, *args)``.

        ``priority``: lower first (a 32-bit int; needs ``priority_enabled``).
        ``deduplication_id``: while a workflow with it is queued or running on this queue,
        enqueueing another raises :class:`DuplicateWorkflowError` (``on_duplicate="raise"``) or
        returns the existing workflow's handle (``on_duplicate="return"``).
        ``partition_key``: the partition to queue in; required by a ``partitioned`` queue, and
        refused by any other.
        """
        return EnqueueOptions(
            self, workflow_id, priority, deduplication_id, on_duplicate, partition_key
        )


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """A queue with options for the next enqueue; see :meth:`Queue.with_options`."""

    queue: Queue
    workflow_id: str | None = None
    priority: int = 0
    deduplication_id: str | None = None
    on_duplicate: OnDuplicate = "raise"
    partition_key: str | None = None

    def __post_init__(self) -> None:
        if self.workflow_id is not None:
            check_id("workflow ID", self.workflow_id)
        if self.deduplication_id is not None:
            check_id("deduplication ID", self.deduplication_id)
        check_priority(self.priority)
        if self.priority != 0 and not self.queue.priority_enabled:
            raise ValueError(
                f"queue {self.queue.name!r} does not order by priority; declare it with"
                " priority_enabled=True to pass priority="
            )
        if self.on_duplicate not in ("raise", "return"):
            raise ValueError(f"on_duplicate must be 'raise' or 'return', not {self.on_duplicate!r}")
        name = self.queue.name
        if self.partition_key is None:
            if self.queue.partitioned:
                raise ValueError(
                    f"queue {name!r} is partitioned: every enqueue names its partition; write"
                    " q.with_options(partition_key=...).enqueue(fn, ...) (e.g. a tenant's ID)"
                )
        elif not self.queue.partitioned:
            raise ValueError(
                f"queue {name!r} is not partitioned, so it takes no partition_key; declare it"
                f" Queue({name!r}, ..., partitioned=True) to apply its limits per partition"
            )
        else:
            check_id("partition key", self.partition_key)

    def enqueue(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]:
        """Record ``fn(*args, **kwargs)`` as ENQUEUED with these options; return its handle.
        ``fn`` is a workflow or a ``@step`` function (run as a one-step workflow)."""
        wdef = queueable(fn)
        engine = current_engine()
        assigned = self.workflow_id or take_assigned_id()
        parent = current_workflow()
        if parent is not None and not in_step() and parent.engine is engine:
            function_id = parent.next_function_id()
            parent_id = parent.workflow_id

            def enqueue(child_id: str) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
                return self._enqueue(engine, wdef, args, kwargs, child_id, parent_id)

            return engine.starter.attach_child(parent, function_id, wdef.name, assigned, enqueue)
        return self._enqueue(engine, wdef, args, kwargs, assigned, None)

    async def _enqueue(
        self,
        engine: Engine,
        wdef: WorkflowDef,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        workflow_id: str | None,
        parent_id: str | None,
    ) -> WorkflowHandle[Any]:
        wid = workflow_id or new_workflow_id()
        inputs = engine.codec.encode_inputs(wdef, args, kwargs)
        timeout = workflow_timeout()
        now = engine.clock.now()
        new = NewWorkflow(
            workflow_id=wid,
            name=wdef.name,
            format=engine.serializer.name,
            inputs=inputs,
            created_at=now,
            app_version=engine.app_version,
            executor_id="",
            parent_workflow_id=parent_id,
            deadline_at=None if timeout is None else now + timeout,
            status="ENQUEUED",
            queue_name=self.queue.name,
            priority=self.priority,
            deduplication_id=self.deduplication_id,
            partition_key=self.partition_key,
        )
        try:
            await engine.store.enqueue(new)
        except DuplicateWorkflowError:
            if self.on_duplicate == "return" and self.deduplication_id is not None:
                existing = await engine.store.deduplicated(self.queue.name, self.deduplication_id)
                if existing is not None:
                    return engine.handle(existing, wdef.name)
            raise
        engine.dispatcher.wake()
        return WorkflowHandle(engine, wid, hint=return_hint(wdef.fn))

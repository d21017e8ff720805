"""Recovery and failover: who runs which workflow, and proof that it still does.

:class:`Ownership` holds this executor's ID (its session lock on the LISTEN connection, so that
no two live runtimes run as one executor), its heartbeat, and the proofs that it still owns its
workflows; a workflow taken over while this runtime was paused or cut off stops here.
:class:`Recovery` launches recorded PENDING workflows: this executor's own when it opens (and now
and then, for any that nothing here runs), those no executor runs (the claimer), and those of
executors that fell silent past their lease (liveness).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._exceptions import DurableError, SerializationError
from .._logging import LOGGER_NAME
from .._records import WorkflowRow
from .._workflow import lookup, registered_names

if TYPE_CHECKING:
    from . import Engine

__all__ = ["MAX_EXECUTOR_SUFFIX", "RECOVERY_BATCH", "Ownership", "Recovery"]

logger = logging.getLogger(LOGGER_NAME)

RECOVERY_BATCH = 500
"""The most workflows claimed and launched together (one journal query for all)."""
MAX_EXECUTOR_SUFFIX = 100
"""How far a runtime looks for a free executor ID (``ID-2`` ... ``ID-100``)."""


class Ownership:
    """This executor's ID, lock and heartbeat, and the proofs that it owns its workflows."""

    def __init__(self, engine: Engine, executor_id: str) -> None:
        self._engine = engine
        self.executor_id: str = executor_id
        self._settled = False
        self._session: Any = None  # the LISTEN connection, which holds the executor lock
        # The monotonic time of the last proof that this runtime still owns its workflows (a
        # heartbeat that found its executor row), and the proof in progress.
        self._proved_at = -float("inf")
        self._proving: asyncio.Future[None] | None = None

    async def on_listen_connect(self, session: Any) -> None:
        """Called on each (re)connection of the LISTEN session: the executor ID's session lock
        goes down with the connection, so take it back (the first time, during open, the store
        is not there yet: :meth:`settle` takes it once it is)."""
        self._session = session
        if not self._settled:
            return
        engine = self._engine
        # The lock was down with the connection: prove ownership before the next step.
        self._proved_at = -float("inf")
        # Notifications sent meanwhile are lost: look for queued and unassigned work now.
        if engine.begun:
            engine.recovery.wake_claimer()
            engine.dispatcher.wake()
            self._start_proof()
        if not await engine.store.try_hold_executor(session, self.executor_id):
            logger.error(
                "executor ID %r was taken by another runtime while the connection was"
                " down; both may now run its workflows",
                self.executor_id,
            )

    async def settle(self) -> None:
        """Hold this executor ID's session lock on the LISTEN connection: one live runtime per
        executor ID, so that no two run (or recover) the same executor's workflows.

        When the ID is held by another live runtime, this one runs as ``ID-2`` (or ``-3``...):
        the next free one, which a restart in the same order takes again. After a reconnect,
        :meth:`on_listen_connect` takes back the lock of the ID it runs as."""
        if self._session is None:
            raise DurableError("the backend opened no LISTEN session to hold the executor lock on")
        store = self._engine.store
        base = self.executor_id
        for n in range(1, MAX_EXECUTOR_SUFFIX + 1):
            candidate = base if n == 1 else f"{base}-{n}"
            if await store.try_hold_executor(self._session, candidate):
                if candidate != base:
                    logger.warning(
                        "executor ID %r is held by another live runtime; this one runs as %r."
                        " Give each process its own AIODURABLE_EXECUTOR_ID to choose.",
                        base,
                        candidate,
                    )
                self.executor_id = candidate
                self._settled = True
                return
        raise DurableError(
            f"executor IDs {base!r} to {base}-{MAX_EXECUTOR_SUFFIX} are all held by live"
            " runtimes; set AIODURABLE_EXECUTOR_ID to a unique value per process"
        )

    async def heartbeat(self) -> None:
        """Record this executor's heartbeat. It proves ownership too: a takeover deletes the
        gone executor's row, so finding ours missing means our workflows may have moved."""
        engine = self._engine
        started = time.monotonic()
        existed = await engine.store.heartbeat(
            self.executor_id, socket.gethostname(), os.getpid(), engine.app_version
        )
        if not existed and engine.executor.running:
            await self._drop_taken_over()
        self._proved_at = max(self._proved_at, started)

    def fresh(self) -> bool:
        """Whether this runtime proved, recently enough, that it owns its workflows: within
        most of its lease since the last heartbeat, no other executor can have taken it over."""
        return time.monotonic() - self._proved_at < 0.8 * self._engine.options.executor_lease

    async def confirm(self) -> None:
        """Prove that this runtime still owns its workflows before a step runs, when its last
        proof is too old (after a pause, or while PostgreSQL was out of reach): one heartbeat,
        shared by every workflow waiting for it, which stops the workflows taken over since."""
        if self.fresh():
            return
        await asyncio.shield(self._start_proof())

    def _start_proof(self) -> asyncio.Future[None]:
        """The proof of ownership in progress, started if there is none."""
        if self._proving is None or self._proving.done():
            # Its failure is not logged: the steps awaiting it raise it.
            self._proving = self._engine.tasks.spawn(
                self._prove(), name="aiodurable ownership proof", report=False
            )
        return self._proving

    async def _prove(self) -> None:
        started = time.monotonic()
        await self.heartbeat()
        await self._drop_taken_over()
        self._proved_at = max(self._proved_at, started)

    async def _drop_taken_over(self) -> None:
        """Stop, here, the workflows that another executor owns now."""
        running = self._engine.executor.running
        if not running:
            return
        moved = await self._engine.store.not_owned(list(running), self.executor_id)
        for workflow_id, where in moved.items():
            self.stop_lost(workflow_id, where)

    def on_fenced(self, workflow_id: str) -> None:
        """The store refused a journal write of ``workflow_id``: another executor owns it."""
        self.stop_lost(workflow_id, "another executor")

    def stop_lost(self, workflow_id: str, holder: str) -> None:
        """A workflow this runtime runs was taken over: stop it here, writing nothing more; its
        waiters here follow it to where it runs now (the outcome is not final)."""
        executor = self._engine.executor
        running = executor.running.get(workflow_id)
        if running is None or running.ctx.cancelled:
            return
        logger.warning(
            "workflow %s was taken over while this runtime (executor %r) was paused or cut off"
            " from PostgreSQL for longer than its %g s lease; it is now %s, and stops here",
            workflow_id,
            self.executor_id,
            self._engine.options.executor_lease,
            holder,
        )
        executor.cancel_local(workflow_id)


class Recovery:
    """Launches recorded PENDING workflows: recovered, claimed, or taken over."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._claim_wanted = asyncio.Event()
        self._reported_unknown: set[str] = set()

    async def recover(self) -> list[str]:
        """Resume the PENDING workflows of this executor on this application version from their
        last completed step; return their IDs (see :meth:`aiodurable.Runtime.recover`)."""
        engine = self._engine
        executor = engine.executor
        ids: list[str] = []
        for wid, name in await engine.store.pending_workflows(
            engine.executor_id, engine.app_version
        ):
            if wid in executor.running or wid in executor.launching:
                continue
            if lookup(name) is None:
                if wid in self._reported_unknown:
                    continue
                self._reported_unknown.add(wid)
                logger.error(
                    "cannot recover workflow %s: no workflow named %r is registered in this"
                    " program (import the module that defines it); it stays PENDING",
                    wid,
                    name,
                )
                continue
            ids.append(wid)
        recovered: list[str] = []
        for start in range(0, len(ids), RECOVERY_BATCH):
            recovered.extend(await self._recover_batch(ids[start : start + RECOVERY_BATCH]))
        if recovered:
            logger.info("recovered %d workflow(s)", len(recovered))
        return recovered

    async def _recover_batch(self, ids: list[str]) -> Iterable[str]:
        engine = self._engine
        claimed = await engine.store.claim_for_recovery(ids, engine.clock.now())
        return await self.launch_rows(claimed)

    async def launch_rows(self, rows: list[WorkflowRow]) -> list[str]:
        """Launch recorded PENDING workflows with their journals (one query for all)."""
        launching = self._engine.executor.launching
        ids = {r.workflow_id for r in rows}
        launching |= ids
        try:
            return await self._launch_loaded(rows)
        finally:
            launching -= ids

    async def _launch_loaded(self, rows: list[WorkflowRow]) -> list[str]:
        engine = self._engine
        executor = engine.executor
        journals = await engine.store.load_journals([r.workflow_id for r in rows])
        recovered: list[str] = []
        for row in rows:
            wdef = lookup(row.name)
            assert wdef is not None
            if row.workflow_id in executor.running:
                continue
            if row.deadline_at is not None and row.deadline_at <= engine.clock.now():
                await executor.cancel_for_deadline(row.workflow_id)
                continue
            if row.recovery_attempts > wdef.max_recovery_attempts:
                logger.error(
                    "workflow %s was recovered %d times (max_recovery_attempts=%d); it is"
                    " marked MAX_RECOVERY_ATTEMPTS_EXCEEDED and no longer recovered",
                    row.workflow_id,
                    row.recovery_attempts,
                    wdef.max_recovery_attempts,
                )
                await engine.store.set_status(
                    row.workflow_id,
                    "MAX_RECOVERY_ATTEMPTS_EXCEEDED",
                    only_from=["PENDING"],
                    now=engine.clock.now(),
                )
                continue
            try:
                args, kwargs = engine.codec.decode_inputs(row, wdef)
            except SerializationError as exc:
                logger.error(
                    "cannot recover workflow %s: %s; it stays PENDING", row.workflow_id, exc
                )
                continue
            executor.launch(
                wdef, row.workflow_id, args, kwargs, journals[row.workflow_id], row.deadline_at
            )
            recovered.append(row.workflow_id)
        return recovered

    # -- claiming unassigned work ------------------------------------------------------------

    def wake_claimer(self) -> None:
        """Look for PENDING workflows that no executor runs (see :mod:`aiodurable._manage`)."""
        self._claim_wanted.set()

    async def claim_loop(self) -> None:
        """Launch the PENDING workflows that no executor runs, when woken."""
        engine = self._engine
        self.wake_claimer()  # at each (re)start: a wake-up may have been missed meanwhile
        while True:
            await self._claim_wanted.wait()
            self._claim_wanted.clear()
            while True:
                rows = await engine.store.claim_unassigned(
                    registered_names(), engine.executor_id, engine.app_version, engine.clock.now()
                )
                if not rows:
                    break
                running = engine.executor.running
                for row in rows:
                    if row.workflow_id in running:  # a cancelled run of it is still stopping
                        await engine.executor.relaunch(row)
                fresh = [row for row in rows if row.workflow_id not in running]
                for wid in await self.launch_rows(fresh):
                    logger.info("took over workflow %s", wid)

    # -- liveness and maintenance ------------------------------------------------------------

    async def liveness_loop(self) -> None:
        """Record this executor's heartbeat; take over the PENDING workflows of executors of
        this application version that fell silent past the lease."""
        engine = self._engine
        while True:
            await asyncio.sleep(engine.options.heartbeat_interval)
            await engine.ownership.heartbeat()
            await self._take_over_silent()

    async def _take_over_silent(self) -> None:
        engine = self._engine
        lease = engine.options.executor_lease
        silent = await engine.store.silent_executors(engine.app_version, lease, engine.executor_id)
        for dead in silent:
            rows = await engine.store.take_over(
                dead, engine.executor_id, engine.app_version, registered_names(), engine.clock.now()
            )
            if rows is None:
                continue  # its session lock is held: alive, only slow
            if rows:
                logger.warning(
                    "executor %r has been silent for over %g s; took over %d workflow(s)",
                    dead,
                    lease,
                    len(rows),
                )
                await self.launch_rows(rows)

    async def maintain(self) -> None:
        """Now and then: look for unassigned and queued work, in case a notification was
        missed; pick up workflows recorded for this executor that nothing here runs (a dispatch
        whose answer was lost with its connection, say); forget old idempotency keys of the
        runtime's own."""
        engine = self._engine
        while True:
            await asyncio.sleep(engine.options.notify_fallback)
            self.wake_claimer()
            engine.dispatcher.wake()
            await engine.store.forget_auto_keys(engine.clock.now() - 86400)
            await self.recover()

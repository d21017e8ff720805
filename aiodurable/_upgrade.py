"""Replay-verified adoption: the current code takes over other versions' unfinished workflows.

A workflow runs only on the application version that recorded it, since changed code may take
another path through a recorded journal. But whether it does can be checked: :func:`upgrade`
replays each PENDING or ENQUEUED workflow of another version against the current code (no step
runs, nothing waits; see :func:`~aiodurable._engine._hooks.replay_mismatch`) and adopts those
whose every recorded call the code makes again, in order. The others stay where they are, each
reported with its reason: the first mismatch, a name this program does not register, or an
executor of the old version still running it.

Adopting a workflow is one conditional UPDATE of its row (its version, and its executor while
PENDING), which holds only while the row is as read: a crash at any moment leaves each workflow
either adopted or untouched. A PENDING workflow moves to this runtime, which runs it at once, when
this runtime runs workflows; else (the command line) to no executor, and a live runtime of the
current version claims it. An ENQUEUED one waits in its queue for the current version's
dispatchers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._engine._hooks import replay_mismatch
from ._exceptions import SerializationError
from ._logging import LOGGER_NAME
from ._models import WorkflowStatus
from ._records import StepRow, WorkflowRow, storable
from ._workflow import lookup

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["UPGRADE_BATCH", "UpgradeReport", "log_report", "upgrade"]

logger = logging.getLogger(LOGGER_NAME)

UPGRADE_BATCH = 500
"""The most candidates read, replayed and adopted together (one journal query for all)."""

CHANGED = "changed while upgrading (it finished, moved or was adopted elsewhere); run again"
_LOGGED = 10  # incompatible workflows named in the log; the rest are counted


@dataclass(frozen=True, slots=True)
class UpgradeReport:
    """What :func:`aiodurable.upgrade_workflows` did, or in a dry run would do.

    - ``adopted``: the IDs of the workflows moved to the current application version (oldest
      first); they resume on the current code from their last completed step.
    - ``incompatible``: workflow ID -> why it stays on its own version, in words: the first
      call that differs from its journal (the step recorded and the step the code calls now),
      a workflow name this program does not register, or a live executor still running it.
    """

    adopted: list[str] = dataclasses.field(default_factory=list)
    incompatible: dict[str, str] = dataclasses.field(default_factory=dict)


async def upgrade(
    engine: Engine,
    *,
    from_version: str | None = None,
    workflow_ids: Sequence[str] | None = None,
    dry_run: bool = False,
) -> UpgradeReport:
    """Adopt into ``engine``'s application version every PENDING or ENQUEUED workflow of another
    version (of ``from_version`` only, and among ``workflow_ids`` only, when given) whose
    journal replays cleanly against the current code; report the others. ``dry_run`` writes
    nothing and reports what would be adopted."""
    engine.check_open()
    _check_version(from_version)
    ids = _checked_ids(workflow_ids)
    run = _Upgrade(engine, dry_run)
    after: tuple[float, str] | None = None
    while True:
        page = await engine.store.upgrade_candidates(
            engine.app_version, from_version, ids, after, UPGRADE_BATCH
        )
        if page:
            await run.page(page)
        if len(page) < UPGRADE_BATCH:
            return run.report
        after = (page[-1].created_at, page[-1].workflow_id)


def log_report(report: UpgradeReport, app_version: str) -> None:
    """Log an upgrade done as a runtime opened: INFO with how many workflows it adopted, one
    WARNING naming those it could not (with their reasons)."""
    if report.adopted:
        logger.info(
            "adopted %d workflow(s) of other application versions into %r",
            len(report.adopted),
            app_version,
        )
    if not report.incompatible:
        return
    named = list(report.incompatible.items())[:_LOGGED]
    listing = "; ".join(f"{wid}: {reason}" for wid, reason in named)
    more = len(report.incompatible) - len(named)
    logger.warning(
        "%d workflow(s) of other application versions cannot be adopted by this code (%r) and"
        " stay on their own version: %s%s",
        len(report.incompatible),
        app_version,
        listing,
        f"; and {more} more (see 'aiodurable workflow upgrade --dry-run')" if more else "",
    )


def _check_version(from_version: object) -> None:
    if from_version is not None and (
        not isinstance(from_version, str) or not storable(from_version)
    ):
        raise ValueError(
            f"from_version must be an application version (a string), not {from_version!r:.80}"
        )


def _checked_ids(workflow_ids: Sequence[str] | None) -> list[str] | None:
    """The IDs to limit the upgrade to; those no row can have (text PostgreSQL cannot hold)
    match nothing and are dropped."""
    if workflow_ids is None:
        return None
    if isinstance(workflow_ids, str):
        raise TypeError(
            f"workflow_ids must be a sequence of workflow IDs, not one string;"
            f" pass [{workflow_ids!r:.80}]"
        )
    for wid in workflow_ids:
        if not isinstance(wid, str):
            raise ValueError(f"a workflow ID must be a string, not {wid!r:.80}")
    return [wid for wid in workflow_ids if storable(wid)]


class _Upgrade:
    """One upgrade in progress: the report so far, and which executors were found alive."""

    def __init__(self, engine: Engine, dry_run: bool) -> None:
        self._engine = engine
        self._dry_run = dry_run
        self._alive: dict[str, bool] = {}
        self.report = UpgradeReport()

    async def page(self, rows: list[WorkflowRow]) -> None:
        """Check a page of candidates, then adopt those that passed (unless a dry run)."""
        engine = self._engine
        journals = await engine.store.load_journals([r.workflow_id for r in rows])
        problems = await asyncio.gather(
            *(self._replay_problem(r, journals.get(r.workflow_id, {})) for r in rows)
        )
        adoptable: list[WorkflowRow] = []
        for row, problem in zip(rows, problems, strict=True):
            if problem is None and row.status == WorkflowStatus.PENDING:
                problem = await self._liveness_problem(row)
            if problem is None:
                adoptable.append(row)
            else:
                self.report.incompatible[row.workflow_id] = problem
        if self._dry_run:
            self.report.adopted.extend(r.workflow_id for r in adoptable)
        elif adoptable:
            await self._adopt(adoptable)

    async def _replay_problem(self, row: WorkflowRow, journal: dict[int, StepRow]) -> str | None:
        """Why the current code cannot take ``row`` over from its journal, or None."""
        if lookup(row.name) is None:
            return (
                f"no workflow named {row.name!r} is registered in this program; import the"
                " module that defines it"
            )
        try:
            mismatch = await replay_mismatch(self._engine, row, journal)
        except SerializationError as exc:
            return f"its inputs cannot be decoded by this program: {exc}"
        return None if mismatch is None else str(mismatch)

    async def _liveness_problem(self, row: WorkflowRow) -> str | None:
        """Why a PENDING workflow must stay with its executor (a live one runs it), or None."""
        executor = row.executor_id
        # This runtime holds its own executor's lock: a row left on that ID was left by an
        # earlier process of the same ID (a restart with new code, the usual deploy).
        if not executor or executor == self._engine.executor_id:
            return None
        alive = self._alive.get(executor)
        if alive is None:
            alive = self._alive[executor] = await self._engine.store.executor_alive(executor)
        if not alive:
            return None
        return (
            f"still running on live executor {executor!r} (version {row.app_version!r});"
            " upgrade again once it has stopped"
        )

    async def _adopt(self, rows: list[WorkflowRow]) -> None:
        """Adopt ``rows`` (one conditional update each, group-committed) and launch here those
        that this runtime now owns."""
        engine = self._engine
        version = engine.app_version
        owner = engine.executor_id if engine.begun else ""
        owners = [owner if r.status == WorkflowStatus.PENDING else "" for r in rows]
        # Marked as launching before they become this executor's, so that recovery, which
        # may look at this moment, leaves them to the launch below.
        mine = {r.workflow_id for r, o in zip(rows, owners, strict=True) if o}
        launching = engine.executor.launching
        launching |= mine
        try:
            now = engine.clock.now()
            done = await asyncio.gather(
                *(
                    engine.store.adopt(
                        r.workflow_id, r.app_version, r.status, r.executor_id, version, o, now
                    )
                    for r, o in zip(rows, owners, strict=True)
                )
            )
            launch: list[WorkflowRow] = []
            for row, new_owner, adopted in zip(rows, owners, done, strict=True):
                if not adopted:
                    self.report.incompatible[row.workflow_id] = CHANGED
                    continue
                self.report.adopted.append(row.workflow_id)
                if new_owner:
                    launch.append(
                        dataclasses.replace(row, app_version=version, executor_id=new_owner)
                    )
            if launch:
                await engine.recovery.launch_rows(launch)
        finally:
            launching -= mine

"""Between the tables and the records: epoch milliseconds, statement arguments, rows read back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

from .._records import NewWorkflow, StepRow, WorkflowRow

__all__ = [
    "Finish",
    "enqueue_args",
    "first_claims",
    "insert_args",
    "ms",
    "step_args",
    "step_row",
    "workflow_row",
]


def ms(seconds: float) -> int:
    """A POSIX time in seconds as the epoch milliseconds the tables store."""
    return round(seconds * 1000)


class Finish(NamedTuple):
    """A final status to write: the arguments of ``Statements.finish``, in order."""

    workflow_id: str
    status: str
    format: str
    output: bytes | None
    error: bytes | None
    at: int


def insert_args(w: NewWorkflow) -> tuple[object, ...]:
    """The arguments of ``Statements.insert_workflow`` for ``w``."""
    return (
        w.workflow_id,
        w.status,
        w.name,
        w.format,
        w.inputs,
        ms(w.created_at),
        w.app_version,
        w.executor_id,
        w.parent_workflow_id,
        None if w.deadline_at is None else ms(w.deadline_at),
        w.queue_name,
    )


def enqueue_args(w: NewWorkflow) -> tuple[object, ...]:
    """The arguments of ``Statements.enqueue`` for ``w``."""
    return (
        w.workflow_id,
        w.name,
        w.format,
        w.inputs,
        ms(w.created_at),
        w.app_version,
        w.parent_workflow_id,
        None if w.deadline_at is None else ms(w.deadline_at),
        w.queue_name,
        w.priority,
        w.deduplication_id,
        w.partition_key,
    )


def step_args(workflow_id: str, step: StepRow) -> tuple[object, ...]:
    """The nine arguments that write ``step`` into ``workflow_id``'s journal."""
    return (
        workflow_id,
        step.function_id,
        step.name,
        step.format,
        step.output,
        step.error,
        step.child_workflow_id,
        ms(step.started_at),
        ms(step.completed_at),
    )


def first_claims(workflow_ids: Sequence[str], inserted: set[str]) -> list[bool]:
    """Which rows of a batch took their workflow ID: of two callers in one batch with the same
    new ID, only the first, so the workflow is launched once."""
    claims: list[bool] = []
    for wid in workflow_ids:
        claims.append(wid in inserted)
        inserted.discard(wid)
    return claims


def workflow_row(r: asyncpg.Record) -> WorkflowRow:
    """A row of ``workflows`` (read with ``WF_COLUMNS``) as a record."""
    deadline = r["deadline_at"]
    return WorkflowRow(
        workflow_id=r["workflow_id"],
        status=r["status"],
        name=r["name"],
        format=r["format"],
        inputs=r["inputs"],
        output=r["output"],
        error=r["error"],
        created_at=r["created_at"] / 1000,
        updated_at=r["updated_at"] / 1000,
        app_version=r["app_version"],
        executor_id=r["executor_id"],
        recovery_attempts=r["recovery_attempts"],
        queue_name=r["queue_name"],
        parent_workflow_id=r["parent_workflow_id"],
        deadline_at=None if deadline is None else deadline / 1000,
        priority=r["priority"],
        deduplication_id=r["deduplication_id"],
        partition_key=r.get("partition_key"),
    )


def step_row(r: asyncpg.Record) -> StepRow:
    """A row of ``steps`` (read with ``STEP_COLUMNS``) as a record."""
    return StepRow(
        function_id=r["function_id"],
        name=r["name"],
        format=r["format"],
        output=r["output"],
        error=r["error"],
        child_workflow_id=r["child_workflow_id"],
        started_at=r["started_at"] / 1000,
        completed_at=r["completed_at"] / 1000,
    )

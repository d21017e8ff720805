"""The one I/O seam: every SQL statement aiodurable runs lives in this package.

The store speaks to PostgreSQL through an asyncpg pool and hands back frozen dataclasses
(:mod:`aiodurable._records`), never asyncpg records. It knows nothing of replay, retries or
scheduling; that policy is pure code elsewhere. Its texts are in :mod:`._statements`; its methods
are grouped by responsibility into parts that :class:`Store` composes; what the rest of
aiodurable may call is :class:`StoreProtocol`.

Cost model: a *checkpoint* (one journal write) is one statement in autocommit, one round trip.
Writes that may be repeated after a dropped connection are written to be idempotent
(``ON CONFLICT DO NOTHING``, ``WHERE status = 'PENDING'``), so the store retries them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._records import (
    AUTO_KEY_PREFIX,
    Dequeued,
    DequeueRequest,
    NewWorkflow,
    StepRow,
    WorkflowQuery,
    WorkflowRow,
    storable,
)
from ._admin import AdminPart
from ._base import APPLICATION_NAME, TRANSIENT, Conn, redact_url
from ._debounce import DebouncePart
from ._executors import ExecutorsPart
from ._journal import JournalPart
from ._messaging import MessagingPart
from ._protocol import StoreProtocol
from ._queues import QueuesPart
from ._retention import RetentionPart
from ._rows import ms
from ._schedules import SchedulesPart
from ._statements import Statements
from ._streams import StreamsPart
from ._workflows import WorkflowsPart

__all__ = [
    "APPLICATION_NAME",
    "AUTO_KEY_PREFIX",
    "TRANSIENT",
    "Conn",
    "DequeueRequest",
    "Dequeued",
    "NewWorkflow",
    "Statements",
    "StepRow",
    "Store",
    "StoreProtocol",
    "WorkflowQuery",
    "WorkflowRow",
    "ms",
    "redact_url",
    "storable",
]


class Store(
    WorkflowsPart,
    JournalPart,
    MessagingPart,
    StreamsPart,
    SchedulesPart,
    DebouncePart,
    QueuesPart,
    ExecutorsPart,
    AdminPart,
    RetentionPart,
):
    """SQL over an asyncpg pool, in one schema."""


if TYPE_CHECKING:

    def _implements(store: Store) -> StoreProtocol:
        return store  # (mypy checks here that Store has every member of StoreProtocol)

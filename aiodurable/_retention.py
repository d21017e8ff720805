"""Retention: garbage collection of finished workflows, on request and periodically.

A finished workflow (SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED) is collected
with everything recorded under its ID: its journal, events and their history, streams, the
messages sent to it (received or not) and their idempotency keys, and its wait deadlines. A
PENDING or ENQUEUED workflow never is.

Which finished workflows go: each argument of :func:`garbage_collect` *keeps* some, and a
workflow goes only when none keeps it: ``older_than`` keeps those last updated (for a finished
workflow: finished, or cancelled) within that time, ``keep_latest`` the newest that many by last
update. Two exceptions: a finished child whose parent is still PENDING or ENQUEUED stays (the
parent reads its outcome, on every replay too) until the parent finishes; a finished parent
goes even while a child of its runs (the child's row stands alone).

Workflows go oldest first in batches of :data:`BATCH`, each one statement in a transaction of
its own that locks only the rows it deletes and passes over any row another transaction holds
(``SKIP LOCKED``): running workflows are never blocked, and several collections at once (one per
runtime) share the work. After each batch a collection pauses as long as the batch took
(:data:`REST`), so that running workflows keep their latency. The boundary is fixed when a
collection begins, so workflows finishing meanwhile wait for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from ._current import current_runtime
from ._logging import LOGGER_NAME
from ._store._retention import RetentionKey

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = [
    "BATCH",
    "REST",
    "check_collect",
    "check_retention",
    "collect",
    "garbage_collect",
    "interval",
    "start_retention",
]

logger = logging.getLogger(LOGGER_NAME)

BATCH = 500
"""Workflows deleted per statement (and transaction): about 20 ms of work for a statement, so
a workflow's checkpoint never queues long behind one (1,000 doubled W1's p99 beside it in
``bench/retention.py``; 250 was no better than 500, and slower)."""

REST = 1.0
"""After each batch, a collection pauses this many times as long as the batch took: it keeps
its share of the database (WAL writes, above all, which every commit waits for) to half, and
running workflows their latency (flat out, W1's median was six times its usual; paced, within a
fifth of it, at 10,000 workflows/s still)."""

_FIRST: RetentionKey = (-(2**63), "")  # below every key
_LONGEST_INTERVAL = 3600.0
_SHORTEST_INTERVAL = 1.0


def check_collect(older_than: object, keep_latest: object) -> None:
    """Raise ``ValueError`` naming the fix unless the arguments of :func:`garbage_collect` are
    a non-negative ``timedelta`` and a non-negative ``int``, at least one of them given."""
    if older_than is None and keep_latest is None:
        raise ValueError(
            "garbage_collect() needs older_than= (a timedelta: finished workflows last updated"
            " longer ago are deleted), keep_latest= (an int: all finished workflows but the"
            " newest that many are deleted), or both (a workflow is deleted when neither keeps"
            " it); for example garbage_collect(older_than=timedelta(days=30))"
        )
    if older_than is not None and (
        not isinstance(older_than, timedelta) or older_than < timedelta(0)
    ):
        raise ValueError(
            "older_than= must be a timedelta of zero or more, such as timedelta(days=30),"
            f" not {older_than!r}"
        )
    if keep_latest is not None and (
        isinstance(keep_latest, bool)
        or not isinstance(keep_latest, int)
        or not 0 <= keep_latest < 2**63
    ):
        raise ValueError(
            f"keep_latest= must be a whole number of workflows, 0 or more, not {keep_latest!r}"
        )


def check_retention(retention: object) -> None:
    """Raise ``ValueError`` naming the fix unless ``retention`` (the :class:`Runtime` option)
    is None or a positive ``timedelta``."""
    if retention is not None and (
        not isinstance(retention, timedelta) or retention <= timedelta(0)
    ):
        raise ValueError(
            "Runtime(retention=) must be a positive timedelta, such as timedelta(days=30)"
            f" (finished workflows are kept that long), or None to keep them all; not"
            f" {retention!r}"
        )


async def collect(
    engine: Engine,
    older_than: timedelta | None,
    keep_latest: int | None,
    *,
    batch: int = BATCH,
    rest: float = REST,
) -> int:
    """Delete the finished workflows that neither ``older_than`` nor ``keep_latest`` keeps,
    in batches of ``batch``, pausing ``rest`` times as long as each took after it; return how
    many were deleted. See :func:`garbage_collect`."""
    check_collect(older_than, keep_latest)
    engine.check_open()
    store = engine.store
    before = None if older_than is None else engine.clock.now() - older_than.total_seconds()
    bound = await store.retention_bound(before, keep_latest)
    total = 0
    after = _FIRST
    while bound is not None:
        began = time.perf_counter()
        deleted, last = await store.collect_finished(after, bound, batch)
        if rest:  # (real time: pacing is about the database's load, not durable time)
            await asyncio.sleep((time.perf_counter() - began) * rest)
        total += deleted
        if deleted < batch or last is None:
            break  # (fewer than a batch: nothing left in range but rows held elsewhere)
        after = last
    return total


async def garbage_collect(
    *, older_than: timedelta | None = None, keep_latest: int | None = None
) -> int:
    """Delete finished workflows (SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED)
    with everything recorded under their IDs (journal, events, streams, messages); return how
    many were deleted. PENDING and ENQUEUED workflows are never touched.

    Each argument keeps some finished workflows, and one is deleted only when neither keeps it:
    ``older_than`` (a ``timedelta``) keeps those last updated more recently than that,
    ``keep_latest`` (an ``int``) the newest that many by last update. Give at least one
    (``ValueError`` otherwise). A finished child stays while its parent is PENDING or ENQUEUED.

    Deletion runs in short batches that never block running workflows; concurrent collections
    (say, one per runtime) are safe. See :meth:`Runtime.garbage_collect`, and ``retention=`` of
    :class:`Runtime` to run it periodically."""
    check_collect(older_than, keep_latest)
    return await current_runtime().garbage_collect(older_than=older_than, keep_latest=keep_latest)


def interval(retention: timedelta) -> float:
    """Seconds between two collections of a runtime with ``retention``: a 24th of it, at most
    an hour, at least a second."""
    return min(max(retention.total_seconds() / 24, _SHORTEST_INTERVAL), _LONGEST_INTERVAL)


def start_retention(engine: Engine) -> None:
    """Start the engine's retention loop, if it has a ``retention``: collect at once, then every
    :func:`interval`, sleeping on the runtime's clock."""
    retention = engine.options.retention
    if retention is not None:
        engine.loops.start("retention", lambda: _loop(engine, retention))


async def _loop(engine: Engine, retention: timedelta) -> None:
    every = interval(retention)
    while True:
        deleted = await collect(engine, retention, None)
        if deleted:
            logger.info(
                "retention: deleted %d finished workflow(s) last updated over %s ago",
                deleted,
                retention,
            )
        await engine.clock.sleep_until(engine.clock.now() + every)

"""Partitioned queues: how many workflows each partition may start now, shared out fairly.

A partitioned queue applies its limits (``concurrency``, ``worker_concurrency``, the rate limit)
to each partition key on its own. One dispatch pass of such a queue reads a
:class:`PartitionLoad` per partition with queued work, then :func:`share` decides how many to
start from each: every partition's free slots, handed out one round at a time (one start per
partition per round, the partition whose next workflow has waited longest first) until the
pass's batch is used up. The batch is all that partitions share: a long backlog in one partition
takes none of another's slots, and within a pass every partition with room starts one workflow
before any starts a second. A pass that fills its batch is followed at once by another, in which
the partitions already served have lost the room they used (without limits, passes follow one
another until every queued workflow has started), so every partition with queued work progresses
at once. Pure policy, shared by the PostgreSQL store and the in-memory one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._records import DequeueRequest

__all__ = ["PartitionLoad", "Share", "most_per_partition", "share", "window_opens"]


@dataclass(frozen=True, slots=True)
class PartitionLoad:
    """One partition of a queue, as a dispatch pass finds it (times in epoch milliseconds)."""

    key: str
    head: tuple[int, int]
    """The (priority, creation time) of its next queued workflow: who has waited longest."""
    running: int
    """Its workflows running now, in every process."""
    here: int
    """Its workflows running now in the dispatching process."""
    recent: tuple[int, ...]
    """Its starts within the rate limit's period, newest first (at most ``limit`` of them)."""
    waiting: int
    """Its queued workflows the dispatching runtime can run, counted up to
    :func:`most_per_partition`."""


@dataclass(frozen=True, slots=True)
class Share:
    """What a pass starts from each partition, and when a rate limit lets it try again."""

    takes: dict[str, int]
    retry_at: float | None


def most_per_partition(q: DequeueRequest) -> int:
    """The most workflows one pass may start from one partition, whatever is running: the
    batch and every limit of the queue, each of which applies to a partition."""
    bounds = [q.batch, q.concurrency, q.worker_concurrency]
    if q.rate_limit is not None:
        bounds.append(q.rate_limit[0])
    return min(b for b in bounds if b is not None)


def window_opens(rate_limit: tuple[int, float] | None, recent: Sequence[int]) -> float | None:
    """When the rate limit next admits a start, given the starts within its period (epoch
    milliseconds, newest first); None when it has room now."""
    if rate_limit is None or len(recent) < rate_limit[0]:
        return None
    limit, period = rate_limit
    # A slot frees when the oldest of the latest ``limit`` starts leaves the window.
    return recent[limit - 1] / 1000 + period


def _free(q: DequeueRequest, load: PartitionLoad) -> int:
    free = min(load.waiting, most_per_partition(q))
    if q.concurrency is not None:
        free = min(free, q.concurrency - load.running)
    if q.worker_concurrency is not None:
        free = min(free, q.worker_concurrency - load.here)
    if q.rate_limit is not None:
        free = min(free, q.rate_limit[0] - len(load.recent))
    return free


def share(q: DequeueRequest, loads: Sequence[PartitionLoad], now_ms: int) -> Share:
    """How many workflows to start from each partition in this pass (at most ``q.batch`` in
    all), and when the earliest full rate window of a partition opens again."""
    room = {load.key: free for load in loads if (free := _free(q, load)) > 0}

    # Lower priority first, then the longest wait (without priority_enabled every priority is 0).
    turn = sorted((load for load in loads if load.key in room), key=lambda p: (p.head, p.key))
    takes: dict[str, int] = {}
    left = q.batch
    while left > 0 and turn:
        still: list[PartitionLoad] = []
        for load in turn[:left]:
            taken = takes[load.key] = takes.get(load.key, 0) + 1
            if taken < room[load.key]:
                still.append(load)
        left -= min(left, len(turn))
        turn = still
    # The starts made now count in their windows: a window they fill wakes the dispatcher when it
    # opens again (nothing else would, if nothing is enqueued and nothing finishes meanwhile).
    opens = (
        window_opens(q.rate_limit, (now_ms,) * takes.get(load.key, 0) + load.recent)
        for load in loads
    )
    return Share(takes, min((at for at in opens if at is not None), default=None))

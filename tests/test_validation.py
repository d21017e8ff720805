"""Value validation (``_validate``) and why it matters: one bad value must not fail the other
calls that share its group-commit batch, and a batch that fails all the same is written again
row by row, so only the call at fault fails, with an error about its own value."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from contextlib import nullcontext

import asyncpg
import pytest

import aiodurable
from aiodurable import DuplicateWorkflowError, Queue, Runtime, step, workflow
from aiodurable._store import NewWorkflow
from aiodurable._validate import (
    MAX_KEY_BYTES,
    MAX_KEY_NOTIFY_BYTES,
    MAX_SECONDS,
    check_epoch,
    check_id,
    check_priority,
    check_timeout,
)
from aiodurable.testing import hooks

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

# 1,000 characters (the old limit, in characters) but 4,000 bytes, random enough that PostgreSQL
# cannot compress it under its index row limit (a repeated character would be compressed).
_random = random.Random(15)
EMOJI_ID = "".join(chr(_random.randrange(0x1F000, 0x1FB00)) for _ in range(1000))


@workflow(name="validation-work")
async def work(i: int) -> int:
    return i


jobs = Queue("validation-jobs", priority_enabled=True)


# -- the checks themselves ------------------------------------------------------------------------


def test_text_keys_must_be_strict_utf8_without_nul_and_fit_in_bytes() -> None:
    """A key is refused for a lone surrogate, a NUL, or more than 1,000 UTF-8 bytes, whatever
    its length in characters; the error names the key's kind, the problem and a fix."""
    with pytest.raises(ValueError, match=r"topic must be valid Unicode.*surrogate \(U\+D800\)"):
        check_id("topic", "ab\ud800")
    with pytest.raises(ValueError, match=r"event key must not contain NUL.*encode"):
        check_id("event key", "a\x00b")
    assert check_id("workflow ID", "\u00e9" * (MAX_KEY_BYTES // 2)) == "\u00e9" * 500
    with pytest.raises(ValueError, match=r"at most 1,000 bytes in UTF-8.*takes 1,002.*sha256"):
        check_id("workflow ID", "\u00e9" * 501)
    with pytest.raises(ValueError, match=r"takes 4,000"):
        check_id("workflow ID", EMOJI_ID)
    assert check_id("workflow ID", "b" * 1000)
    for bad in ("", None, 7, b"bytes"):
        with pytest.raises(ValueError, match="workflow ID must be"):
            check_id("workflow ID", bad)


def test_a_long_error_does_not_echo_the_whole_value() -> None:
    """An error about a 4,000-byte key quotes its start, not all of it."""
    with pytest.raises(ValueError) as caught:
        check_id("workflow ID", EMOJI_ID)
    assert len(str(caught.value)) < 400


def test_control_characters_count_as_notifications_spell_them() -> None:
    """A control character takes 6 bytes in a JSON notification, so a key of control characters
    is limited by its escaped size; two keys at that limit still fit one 8,000-byte payload."""
    at_limit = "\x01" * (MAX_KEY_NOTIFY_BYTES // 6)
    assert check_id("topic", at_limit) == at_limit
    with pytest.raises(ValueError, match=r"as JSON.*control character as 6 bytes.*3,906"):
        check_id("topic", at_limit + "\x01")
    assert check_id("topic", "tab\there") == "tab\there"


def test_timeouts_are_finite_in_range_or_infinite_for_no_limit() -> None:
    """A timeout is a number of seconds > 0 up to MAX_SECONDS; float('inf') means no limit
    (None); NaN, negatives, zero, bools, strings and numbers whose deadline would not fit a
    bigint of milliseconds are refused."""
    assert check_timeout(float("inf")) is None
    assert check_timeout(MAX_SECONDS) == MAX_SECONDS
    assert check_timeout(2) == 2.0
    assert check_timeout(0, "recv(timeout)", zero=True) == 0.0
    for bad in (1e300, 10**400, MAX_SECONDS * 2):
        with pytest.raises(ValueError, match=r"at most 10,000,000,000 seconds.*float\('inf'\)"):
            check_timeout(bad)
    not_timeouts: tuple[object, ...] = (float("nan"), -1, 0, -math.inf, True, "5", None)
    for not_timeout in not_timeouts:
        with pytest.raises(ValueError, match="a workflow timeout must be a number of seconds > 0"):
            check_timeout(not_timeout)


def test_priorities_fit_a_32_bit_integer() -> None:
    """Priorities are ints within PostgreSQL's integer; the error gives the range."""
    assert check_priority(2**31 - 1) == 2**31 - 1
    assert check_priority(-(2**31)) == -(2**31)
    for bad in (2**31, -(2**31) - 1, 2**70):
        with pytest.raises(ValueError, match=r"-2,147,483,648 to 2,147,483,647"):
            check_priority(bad)
    not_ints: tuple[object, ...] = (1.0, True, "1")
    for not_int in not_ints:
        with pytest.raises(ValueError, match="priority must be an int"):
            check_priority(not_int)


def test_times_must_fit_bigint_milliseconds() -> None:
    """A POSIX time is finite and stored in 64-bit milliseconds."""
    assert check_epoch("deadline", 1.7e9) == 1.7e9
    for bad in (math.inf, math.nan, 1e16, -1e16, 10**400):
        with pytest.raises(ValueError, match="deadline must be a finite POSIX time"):
            check_epoch("deadline", bad)


def test_calls_check_their_arguments_when_made() -> None:
    """set_workflow_id, set_workflow_timeout and with_options refuse bad values at once,
    before anything is started; an infinite workflow timeout means none."""
    with pytest.raises(ValueError, match="workflow ID must be valid Unicode"):
        aiodurable.set_workflow_id("x\udc80").__enter__()
    with pytest.raises(ValueError, match="at most 10,000,000,000 seconds"):
        aiodurable.set_workflow_timeout(1e300).__enter__()
    with aiodurable.set_workflow_timeout(5), aiodurable.set_workflow_timeout(math.inf):
        from aiodurable._context import workflow_timeout

        assert workflow_timeout() is None
    with pytest.raises(ValueError, match="priority must be an int from"):
        jobs.with_options(priority=2**31)
    with pytest.raises(ValueError, match="workflow ID must be valid Unicode"):
        jobs.with_options(workflow_id="q\udc80")
    with pytest.raises(ValueError, match="deduplication ID may take at most 1,000 bytes"):
        jobs.with_options(deduplication_id=EMOJI_ID)
    with pytest.raises(ValueError, match="queue name must not contain NUL"):
        Queue("jobs\x00")


def test_step_names_and_timeouts_are_checked_at_decoration() -> None:
    """@step refuses, when decorated, a name PostgreSQL could not journal (before, the step's
    body ran first and its checkpoint failed) and a NaN timeout (before, it meant no timeout);
    an infinite timeout means none."""
    with pytest.raises(ValueError, match="step name must not contain NUL"):
        step(name="nul\x00step")
    with pytest.raises(ValueError, match="step name must be valid Unicode"):
        step(name="s\ud800")
    with pytest.raises(ValueError, match="step name may take at most 1,000 bytes"):
        step(name=EMOJI_ID)
    with pytest.raises(ValueError, match=r"step\(timeout=\) must be a number"):
        step(timeout=float("nan"))

    @step(timeout=math.inf)
    async def unbounded() -> None:
        pass

    assert unbounded.__aiodurable_step__.timeout is None  # type: ignore[attr-defined]  # marker


def test_workflow_names_are_checked_at_decoration() -> None:
    """@workflow(name=) refuses a name over 1,000 bytes or with a lone surrogate."""
    with pytest.raises(ValueError, match="workflow name may take at most 1,000 bytes"):
        workflow(name=EMOJI_ID)
    with pytest.raises(ValueError, match="workflow name must be valid Unicode"):
        workflow(name="w\ud800")


# -- one bad value among 40 concurrent calls -----------------------------------------------------

Call = Callable[[Runtime, str, int], Awaitable[object]]


def start_with(*, bad_id: str | None = None, timeout: float | None = None) -> Call:
    """A start_workflow call, bad by its ID or its timeout= keyword."""

    async def call(rt: Runtime, wid: str, i: int) -> object:
        with aiodurable.set_workflow_id(bad_id or wid):
            if timeout is None:
                return await rt.start_workflow(work, i)
            return await rt.start_workflow(work, i, timeout=timeout)  # type: ignore[call-arg]  # the timeout= option

    return call


def start_under_timeout(seconds: float) -> Call:
    """A start_workflow call inside set_workflow_timeout(seconds)."""

    async def call(rt: Runtime, wid: str, i: int) -> object:
        with aiodurable.set_workflow_id(wid), aiodurable.set_workflow_timeout(seconds):
            return await rt.start_workflow(work, i)

    return call


def enqueue_with(
    *,
    workflow_id: str | None = None,
    priority: int = 0,
    deduplication_id: str | None = None,
    timeout: float | None = None,
) -> Call:
    """An enqueue on ``jobs``, bad by one of its options or its set_workflow_timeout."""

    async def call(rt: Runtime, wid: str, i: int) -> object:
        with aiodurable.set_workflow_timeout(timeout) if timeout is not None else nullcontext():
            options = jobs.with_options(
                workflow_id=workflow_id or wid, priority=priority, deduplication_id=deduplication_id
            )
            return await options.enqueue(work, i)

    return call


# (the bad call, a word its error must contain); each of these failed 38 of 40 calls before.
BAD_CALLS: dict[str, tuple[Call, str]] = {
    "start-surrogate-id": (start_with(bad_id="bad\ud800id"), "workflow ID must be valid Unicode"),
    "start-4000-byte-id": (start_with(bad_id=EMOJI_ID), "workflow ID may take at most 1,000 bytes"),
    "start-timeout-1e300": (start_with(timeout=1e300), "workflow timeout may be at most"),
    "start-under-timeout-1e300": (start_under_timeout(1e300), "workflow timeout may be at most"),
    "enqueue-priority-2**31": (enqueue_with(priority=2**31), "priority must be an int from"),
    "enqueue-priority--2**31-1": (enqueue_with(priority=-(2**31) - 1), "priority must be an int"),
    "enqueue-surrogate-id": (
        enqueue_with(workflow_id="q\udc80id"),
        "workflow ID must be valid Unicode",
    ),
    "enqueue-4000-byte-dedup-id": (
        enqueue_with(deduplication_id=EMOJI_ID),
        "deduplication ID may take at most 1,000 bytes",
    ),
    "enqueue-timeout-1e300": (enqueue_with(timeout=1e300), "workflow timeout may be at most"),
}


async def _rows(rt: Runtime, sql: str, *args: object) -> list[asyncpg.Record]:
    async with hooks(rt).store.pool.acquire() as conn:
        return list(await conn.fetch(sql.replace("{s}", rt.schema), *args))


async def _forty(
    rt: Runtime, name: str, bad: Call, innocent: Call
) -> tuple[list[str], object, list[object]]:
    """Run 40 calls at once, the 21st of them ``bad``; return the innocent calls' workflow IDs,
    the bad call's outcome and the innocent calls' outcomes."""
    ids = [f"{name}-{i:02d}" for i in range(40)]
    calls = [(bad if i == 20 else innocent)(rt, wid, i) for i, wid in enumerate(ids)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    return ids[:20] + ids[21:], outcomes[20], outcomes[:20] + outcomes[21:]


@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_one_bad_value_fails_only_its_own_call(runtime: RuntimeFactory, case: str) -> None:
    """Among 40 concurrent starts or enqueues (sharing group-commit batches), the one with a bad
    value gets a clear ValueError about its own value, naming no other caller's workflow ID,
    and the 39 others are recorded; twice over, so a second batch sees the same."""
    bad, expected = BAD_CALLS[case]
    innocent = start_with() if case.startswith("start") else enqueue_with()
    async with runtime() as rt:
        for round_ in range(2):
            ids, outcome, others = await _forty(rt, f"{case}-r{round_}", bad, innocent)
            assert not [o for o in others if isinstance(o, BaseException)]
            assert isinstance(outcome, ValueError), outcome
            assert expected in str(outcome)
            assert not [wid for wid in ids if wid in str(outcome)]
            rows = await _rows(rt, "SELECT workflow_id FROM {s}.workflows")
            assert sorted(r["workflow_id"] for r in rows if r["workflow_id"] in ids) == ids
            assert len(rows) == 39 * (round_ + 1)  # nothing of the bad call's


@pytest.mark.parametrize("kind", ["start", "enqueue"])
async def test_an_infinite_workflow_timeout_means_none(runtime: RuntimeFactory, kind: str) -> None:
    """A workflow started or enqueued under set_workflow_timeout(inf), among 40 concurrent
    calls, is recorded without a deadline, and every call succeeds (before, the infinite
    deadline failed the whole enqueue batch with an OverflowError)."""
    innocent = start_with() if kind == "start" else enqueue_with()
    odd = start_under_timeout(math.inf) if kind == "start" else enqueue_with(timeout=math.inf)
    async with runtime() as rt:
        _, outcome, others = await _forty(rt, f"inf-{kind}", odd, innocent)
        assert not [o for o in [outcome, *others] if isinstance(o, BaseException)], outcome
        rows = await _rows(
            rt, "SELECT deadline_at FROM {s}.workflows WHERE workflow_id = $1", f"inf-{kind}-20"
        )
        assert [r["deadline_at"] for r in rows] == [None]


async def test_the_store_refuses_a_bad_row_whatever_the_path(runtime: RuntimeFactory) -> None:
    """A row built without the public calls' checks (a name, version or time PostgreSQL would
    refuse) is refused by the store before it joins a batch, and nothing is written."""
    async with runtime() as rt:
        good = NewWorkflow("direct", "n", "json", b"[]", 1.7e9, "v", "e")
        bad_rows = {
            "workflow name must not contain NUL": NewWorkflow(
                "direct", "n\x00", "json", b"[]", 1.7e9, "v", "e"
            ),
            "application version must be valid Unicode": NewWorkflow(
                "direct", "n", "json", b"[]", 1.7e9, "v\ud800", "e"
            ),
            "workflow deadline must be a finite POSIX time": NewWorkflow(
                "direct", "n", "json", b"[]", 1.7e9, "v", "e", deadline_at=math.inf
            ),
            "creation time must be a finite POSIX time": NewWorkflow(
                "direct", "n", "json", b"[]", math.nan, "v", "e"
            ),
        }
        for message, row in bad_rows.items():
            with pytest.raises(ValueError, match=message):
                await hooks(rt).store.insert_workflow(row)
            with pytest.raises(ValueError, match=message):
                await hooks(rt).store.enqueue(row)
        assert await _rows(rt, "SELECT 1 FROM {s}.workflows") == []
        assert await hooks(rt).store.insert_workflow(good)


# -- the row-by-row retry, for failures no validation foresees -----------------------------------


async def _refuse(rt: Runtime, table: str, column: str, value: str) -> None:
    """Add a real CHECK constraint to this test's schema: a failure validation cannot catch."""
    await _rows(
        rt,
        f"ALTER TABLE {{s}}.{table} ADD CONSTRAINT refused CHECK ({column} <> '{value}')",
    )


@pytest.mark.parametrize("kind", ["start", "enqueue"])
async def test_a_batch_refused_by_the_database_is_retried_row_by_row(
    runtime: RuntimeFactory, kind: str
) -> None:
    """When PostgreSQL refuses one row of a batch (here a CHECK constraint on the workflow ID),
    the batch is written again row by row: the 39 other calls succeed, and the refused call's
    error is PostgreSQL's own, about its row alone."""
    innocent = start_with() if kind == "start" else enqueue_with()
    async with runtime() as rt:
        await _refuse(rt, "workflows", "workflow_id", f"{kind}-20")
        ids, outcome, others = await _forty(rt, kind, innocent, innocent)
        assert not [o for o in others if isinstance(o, BaseException)]
        assert isinstance(outcome, asyncpg.CheckViolationError), outcome
        assert not [wid for wid in ids if wid in f"{outcome} {outcome.detail}"]
        assert f"{kind}-20" in str(outcome.detail)
        rows = await _rows(rt, "SELECT workflow_id FROM {s}.workflows")
        assert sorted(r["workflow_id"] for r in rows) == ids


@step(name="validation-recorded")
async def recorded(i: int) -> int:
    return i


@step(name="validation-refused")
async def refused(i: int) -> int:
    return i


@workflow(name="validation-stepper")
async def stepper(i: int, gate_key: str) -> int:
    await GATES[gate_key].wait()
    return await (refused if i == 20 else recorded)(i)


GATES: dict[str, asyncio.Event] = {}


async def test_one_refused_checkpoint_fails_only_its_own_workflow(runtime: RuntimeFactory) -> None:
    """40 workflows checkpoint a step at the same moment (one group-commit batch) and PostgreSQL
    refuses one of the step rows: only that workflow fails; the 39 others complete."""
    GATES["steps"] = asyncio.Event()
    async with runtime() as rt:
        await _refuse(rt, "steps", "name", "validation-refused")
        handles = [await rt.start_workflow(stepper, i, "steps") for i in range(40)]
        GATES["steps"].set()
        results = await asyncio.gather(*(h.get_result() for h in handles), return_exceptions=True)
    assert results[:20] + results[21:] == [*range(20), *range(21, 40)]
    assert isinstance(results[20], asyncpg.CheckViolationError)


async def test_one_id_twice_in_a_batch_runs_once(runtime: RuntimeFactory) -> None:
    """Two concurrent starts of one new workflow ID that land in the same batch run it once:
    the second attaches to the first (before, both were told they inserted it and both ran)."""
    runs: list[int] = []

    @workflow(name="validation-counted")
    async def counted(i: int) -> int:
        runs.append(i)
        return i

    async def start(wid: str, i: int) -> int:
        with aiodurable.set_workflow_id(wid):
            handle = await rt.start_workflow(counted, i)
        return await handle.get_result()

    async with runtime() as rt:
        ids = [f"once-{i:02d}" for i in range(38)] + ["twice", "twice"]
        results = await asyncio.gather(*(start(wid, i) for i, wid in enumerate(ids)))
    assert results[-2:] == [38, 38]
    assert sorted(runs) == list(range(39))


async def test_one_deduplication_id_twice_in_a_batch(runtime: RuntimeFactory) -> None:
    """Two concurrent enqueues with one deduplication ID in the same batch: one is queued, the
    other gets DuplicateWorkflowError, and the 38 others are queued. (The batch fails on the
    deduplication index; its row-by-row retry tells the two apart.)"""
    ids = [f"dedup-{i:02d}" for i in range(40)]
    GATES["dedup"] = asyncio.Event()  # the first stays running, so the ID stays taken

    async def enqueue(i: int) -> object:
        dedup = "same" if i in (20, 30) else None
        options = jobs.with_options(workflow_id=ids[i], deduplication_id=dedup)
        return await options.enqueue(stepper, i + 100, "dedup")

    async with runtime():
        outcomes = await asyncio.gather(*(enqueue(i) for i in range(40)), return_exceptions=True)
        GATES["dedup"].set()
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [30]
    assert isinstance(outcomes[30], DuplicateWorkflowError)


# -- notifications ---------------------------------------------------------------------------------


@workflow(name="validation-mailbox")
async def mailbox(topic: str, key: str) -> object:
    message = await aiodurable.recv(topic, timeout=30)
    await aiodurable.set_event(key, message)
    return message


async def test_the_longest_keys_fit_a_notification(runtime: RuntimeFactory) -> None:
    """A workflow ID, topic and event key each at the escaped-size limit (650 control
    characters, 3,900 bytes as JSON) still fit one notification together; one more character
    is refused with a ValueError (before, a 1,000-character ID and topic of control characters
    failed inside PostgreSQL: "payload string too long")."""
    long = "\x01" * (MAX_KEY_NOTIFY_BYTES // 6)
    async with runtime() as rt:
        with aiodurable.set_workflow_id(long):
            handle = await rt.start_workflow(mailbox, long, long)
        await rt.send(long, "hello", long)
        assert await handle.get_result() == "hello"
        assert await rt.get_event(long, long, timeout=5) == "hello"
        with pytest.raises(ValueError, match="topic may take at most 3,900 bytes written as JSON"):
            await rt.send(long, "again", "\x01" * 1000)
        with pytest.raises(ValueError, match="ID may take at most 3,900 bytes written as JSON"):
            await rt.send("\x01" * 1000, "again", "t")


def test_runtime_settings_are_checked_when_made() -> None:
    """L2: a pool of no connections or a negative statement timeout is refused by the
    constructor, naming the setting, not later by the driver at open."""
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="pool_size"):
            Runtime("postgresql://unused", pool_size=bad)  # type: ignore[arg-type]
    for bad_timeout in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="command_timeout"):
            Runtime("postgresql://unused", command_timeout=bad_timeout)


async def test_schema_names_are_plain_identifiers(database_url: str) -> None:
    """L5: a trailing newline or a reserved word as the schema is refused with a clear error
    (it was accepted, or failed with a raw syntax error)."""
    for name in ("secschema\n", "Caps", "a-b"):
        with pytest.raises(ValueError, match="plain lower-case SQL identifier"):
            async with Runtime(database_url, schema=name):
                pass
    for word in ("select", "table", "user"):
        with pytest.raises(ValueError, match="reserved word"):
            async with Runtime(database_url, schema=word):
                pass

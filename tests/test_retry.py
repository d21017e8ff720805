"""Step retries on a real PostgreSQL: backoff through the runtime's clock, exhausted retries,
``NonRetryable``, ``retry_on`` and per-attempt timeouts; and the policy's own validation."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from aiodurable import (
    MaxRetriesExceeded,
    NonRetryable,
    Retry,
    SystemClock,
    WorkflowStatus,
    step,
    workflow,
)
from aiodurable.testing import hooks

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

# How many times each step body ran: the side-effect counter the tests read.
attempts: Counter[str] = Counter()


class Flaky(Exception):
    """A transient failure a step raises."""


class Fatal(NonRetryable):
    """A failure that must not be retried."""


class SkippingClock(SystemClock):
    """The wall clock, except that durable waits return at once, shifting ``now`` forward and
    recording how long they would have taken."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.waits: list[float] = []

    def now(self) -> float:
        return super().now() + self.offset

    async def sleep_until(self, deadline: float) -> None:
        wait = max(0.0, deadline - self.now())
        self.waits.append(wait)
        self.offset += wait


@step(retry=Retry(max_attempts=5, interval=0.5, backoff=3.0))
async def fails_twice(key: str) -> str:
    attempts[key] += 1
    if attempts[key] <= 2:
        raise Flaky(f"attempt {attempts[key]}")
    return f"ok after {attempts[key]}"


@step(retry=Retry(max_attempts=3, interval=1.0, backoff=2.0))
async def always_fails(key: str) -> None:
    attempts[key] += 1
    raise Flaky(f"failure {attempts[key]}")


@step(retry=Retry(max_attempts=5, interval=1.0))
async def gives_up(key: str) -> None:
    attempts[key] += 1
    raise Fatal(f"{key} cannot succeed")


@step(retry=Retry(max_attempts=5, interval=1.0, retry_on=(Flaky,)))
async def wrong_kind(key: str) -> None:
    attempts[key] += 1
    raise KeyError(key)


@step(retry=Retry(max_attempts=3, interval=0.0), timeout=0.05)
async def hangs_once(key: str) -> str:
    attempts[key] += 1
    if attempts[key] == 1:
        await asyncio.Event().wait()  # never set: only the timeout ends this attempt
    return "second attempt"


@workflow()
async def run_fails_twice(key: str) -> str:
    return await fails_twice(key)


@workflow()
async def run_always_fails(key: str) -> None:
    await always_fails(key)


@workflow()
async def run_gives_up(key: str) -> None:
    await gives_up(key)


@workflow()
async def run_wrong_kind(key: str) -> None:
    await wrong_kind(key)


@workflow()
async def run_hangs_once(key: str) -> str:
    return await hangs_once(key)


async def test_step_failing_twice_then_succeeding_returns_its_result(
    runtime: RuntimeFactory,
) -> None:
    """Two failures are retried after the backoff waits (through the runtime's clock); the
    journal holds only the final result."""
    clock = SkippingClock()
    async with runtime(clock=clock) as rt:
        handle = await rt.start_workflow(run_fails_twice, "twice")
        assert await handle.get_result() == "ok after 3"
        journal = await hooks(rt).store.load_journal(handle.workflow_id)
    assert attempts["twice"] == 3
    assert clock.waits == [pytest.approx(0.5, abs=0.05), pytest.approx(1.5, abs=0.05)]
    assert list(journal) == [1]
    assert journal[1].output == b'"ok after 3"' and journal[1].error is None


async def test_step_failing_every_time_raises_max_retries_exceeded_naming_attempts(
    runtime: RuntimeFactory,
) -> None:
    """A step that fails on every attempt ends with MaxRetriesExceeded, whose message names each
    attempt's error; the workflow ends as ERROR and the step ran max_attempts times."""
    clock = SkippingClock()
    async with runtime(clock=clock) as rt:
        handle = await rt.start_workflow(run_always_fails, "always")
        with pytest.raises(MaxRetriesExceeded) as caught:
            await handle.get_result()
        assert (await handle.get_status()).status is WorkflowStatus.ERROR
        journal = await hooks(rt).store.load_journal(handle.workflow_id)
    exc = caught.value
    assert str(exc).startswith("step 'always_fails' failed 3 times")
    for i in (1, 2, 3):
        assert f"attempt {i}: Flaky: failure {i}" in str(exc)
    assert [str(e) for e in exc.errors] == ["failure 1", "failure 2", "failure 3"]
    assert attempts["always"] == 3
    assert clock.waits == [pytest.approx(1.0, abs=0.05), pytest.approx(2.0, abs=0.05)]
    assert journal[1].error is not None and b"failed 3 times" in journal[1].error


async def test_non_retryable_stops_at_once(runtime: RuntimeFactory) -> None:
    """A NonRetryable error ends the step on its first attempt, with no wait, as itself."""
    clock = SkippingClock()
    async with runtime(clock=clock) as rt:
        handle = await rt.start_workflow(run_gives_up, "fatal")
        with pytest.raises(Fatal, match="fatal cannot succeed"):
            await handle.get_result()
    assert attempts["fatal"] == 1
    assert clock.waits == []


async def test_error_outside_retry_on_is_not_retried(runtime: RuntimeFactory) -> None:
    """An exception that is not one of retry_on's types ends the step at once."""
    clock = SkippingClock()
    async with runtime(clock=clock) as rt:
        handle = await rt.start_workflow(run_wrong_kind, "wrong")
        with pytest.raises(KeyError):
            await handle.get_result()
    assert attempts["wrong"] == 1
    assert clock.waits == []


async def test_attempt_timeout_is_retried(runtime: RuntimeFactory) -> None:
    """An attempt that exceeds the step's timeout is cut short and retried."""
    async with runtime() as rt:
        handle = await rt.start_workflow(run_hangs_once, "hang")
        assert await handle.get_result() == "second attempt"
    assert attempts["hang"] == 2


def test_retry_policy_is_validated() -> None:
    """Nonsensical policies are refused when built, with the rule in the message."""
    with pytest.raises(ValueError, match="at least 1"):
        Retry(max_attempts=0)
    with pytest.raises(TypeError, match="takes an int"):
        Retry(max_attempts=2.5)  # type: ignore[arg-type]  # what the check is for
    with pytest.raises(TypeError, match="takes an int"):
        Retry(max_attempts=True)
    with pytest.raises(ValueError, match="interval=-1"):
        Retry(interval=-1)
    with pytest.raises(ValueError, match="finite"):
        Retry(max_interval=float("inf"))
    with pytest.raises(ValueError, match=r"backoff=0\.5"):
        Retry(backoff=0.5)
    with pytest.raises(TypeError, match="retry_on"):
        Retry(retry_on=())
    with pytest.raises(TypeError, match="retry_on"):
        Retry(retry_on=(int,))  # type: ignore[arg-type]  # what the check is for


def test_step_options_and_targets_are_validated() -> None:
    """@step refuses a retry that is not a Retry, a timeout that is not positive, and a sync
    function, when decorated."""
    with pytest.raises(TypeError, match=r"aiodurable\.Retry"):
        step(retry=3)  # type: ignore[arg-type]  # what the check is for
    for bad in (0, -1.0, True):
        with pytest.raises(ValueError, match="timeout"):
            step(timeout=bad)

    def blocking() -> int:
        return 1

    with pytest.raises(TypeError, match="async def"):
        step()(blocking)  # type: ignore[arg-type]  # what the check is for


def test_delay_grows_by_backoff_up_to_max_interval() -> None:
    """The wait after the n-th failure is interval * backoff**(n-1), capped at max_interval."""
    policy = Retry(max_attempts=6, interval=1.0, backoff=2.0, max_interval=5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert Retry(interval=0.25, backoff=1).delay(4) == 0.25


@workflow()
async def catches_exhaustion(key: str) -> str:
    try:
        await always_fails(key)
    except MaxRetriesExceeded as exc:
        return f"gave up: {exc.step_name}"
    return "unreachable"


async def test_exhausted_retries_replay_as_max_retries_exceeded(runtime: RuntimeFactory) -> None:
    """A workflow that caught MaxRetriesExceeded takes the same path when its journal replays."""
    async with runtime(clock=SkippingClock()) as rt:
        handle = await rt.start_workflow(catches_exhaustion, "replayed")
        assert await handle.get_result() == "gave up: always_fails"
        journal = await hooks(rt).store.load_journal(handle.workflow_id)
        with pytest.raises(MaxRetriesExceeded, match="failed 3 times"):
            hooks(rt).replay(handle.workflow_id, journal[1], None)
    assert attempts["replayed"] == 3


first_attempts: dict[str, asyncio.Event] = {}


@step(retry=Retry(max_attempts=10, interval=3600.0))
async def fails_slowly(key: str) -> None:
    attempts[key] += 1
    first_attempts.setdefault(key, asyncio.Event()).set()
    raise Flaky("down for a while")


@workflow()
async def backs_off(key: str) -> None:
    await fails_slowly(key)


async def test_cancel_interrupts_a_retry_backoff_at_once(runtime: RuntimeFactory) -> None:
    """A workflow waiting an hour between two attempts of a step stops as soon as it is
    cancelled, and the step is not attempted again."""
    async with runtime() as rt:
        handle = await rt.start_workflow(backs_off, "backoff")
        await first_attempts.setdefault("backoff", asyncio.Event()).wait()
        await rt.cancel_workflow(handle.workflow_id)
        async with asyncio.timeout(5):  # not the hour of the backoff
            await hooks(rt).wait_stopped(handle.workflow_id)
        assert (await handle.get_status()).status is WorkflowStatus.CANCELLED
        assert attempts["backoff"] == 1

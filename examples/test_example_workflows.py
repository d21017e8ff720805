"""Testing durable workflows with aiodurable.testing: a file to copy next to your own code.

Run it with ``python -m pytest -p aiodurable.testing examples/test_example_workflows.py`` (or put
``pytest_plugins = ["aiodurable.testing"]`` in your root conftest.py). The tests run on anyio's
pytest plugin, hence the ``anyio`` marker; with pytest-asyncio in auto mode instead, drop the
marker. Each test gets a runtime on a fresh schema of a PostgreSQL started for the session (or the
server named by ``AIODURABLE_TEST_DATABASE_URL``).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

import aiodurable
from aiodurable import Runtime, step, workflow
from aiodurable.testing import TestClock, check_replay, crash_after

pytestmark = pytest.mark.anyio

charged: list[str] = []


@step()
async def open_account(user: str) -> str:
    return f"account-{user}"


@step()
async def charge(user: str) -> str:
    charged.append(user)
    return f"charged-{user}"


@workflow(name="example-subscription")
async def subscription(user: str) -> str:
    """A 30-day free trial, then up to 7 days for the user to confirm, then the first charge."""
    await open_account(user)
    await aiodurable.sleep(timedelta(days=30).total_seconds())
    answer = await aiodurable.recv("confirm", timeout=timedelta(days=7).total_seconds())
    if answer != "yes":
        return "cancelled"
    return await charge(user)


async def test_a_confirmed_subscription_is_charged_after_the_trial(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """The user confirms on day 31; the charge happens at once, no real day spent waiting."""
    handle = await durable_runtime.start_workflow(subscription, "ann")
    await durable_clock.advance(timedelta(days=31))  # fires the 30-day sleep on the way
    await durable_runtime.send(handle.workflow_id, "yes", topic="confirm")
    assert await handle.get_result() == "charged-ann"


async def test_an_unconfirmed_subscription_is_cancelled_after_a_week(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """Without an answer, the subscription ends 37 days in; auto_advance skips every wait."""
    async with durable_clock.auto_advance():
        handle = await durable_runtime.start_workflow(subscription, "bob")
        assert await handle.get_result() == "cancelled"
    assert "bob" not in charged


async def test_a_crash_after_opening_the_account_does_not_open_it_twice(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """Crashed right after open_account's checkpoint, the recovered workflow goes on from the
    sleep, and its journal holds one open_account."""
    handle = await crash_after(durable_runtime, subscription, "cy", step="open_account")
    await durable_clock.advance(timedelta(days=37))
    assert await handle.get_result() == "cancelled"
    steps = await durable_runtime.list_steps(handle.workflow_id)
    assert [s.name for s in steps] == ["open_account", "aiodurable.sleep", "aiodurable.recv"]


async def test_the_recorded_run_replays_on_the_current_code(
    durable_runtime: Runtime, durable_clock: TestClock
) -> None:
    """check_replay() re-runs a recorded workflow against the current code, running no step: it
    raises NonDeterminismError naming the step if a change would break running workflows."""
    async with durable_clock.auto_advance():
        handle = await durable_runtime.start_workflow(subscription, "dee")
        await handle.get_result()
    charged.clear()
    await check_replay(handle.workflow_id, durable_runtime)
    assert charged == []  # replay ran no step

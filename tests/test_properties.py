"""Property-based tests: any JSON value round-trips unchanged through a step, a message and an
event, whether read back from the database or replayed from the journal."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiodurable
from aiodurable import Runtime, step, workflow

pytestmark = pytest.mark.anyio

# orjson writes NaN and infinities as null, so only finite floats round-trip; text excludes lone
# surrogates, which are not UTF-8.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=["Cs"]), max_size=10), children, max_size=5
        )
    ),
    max_leaves=25,
)


@step()
async def echo_step(value: object) -> object:
    return value


@workflow()
async def round_trip(value: object) -> list[object]:
    """The value through a step, an event and a message (sent back by the test)."""
    stepped = await echo_step(value)
    await aiodurable.set_event("value", stepped)
    received = await aiodurable.recv("value", timeout=10)
    return [stepped, received]


@pytest.fixture
async def open_runtime(database_url: str, schema: str) -> AsyncIterator[Runtime]:
    """One runtime for every example of a test."""
    async with Runtime(
        database_url, schema=schema, executor_id="properties", app_version="properties"
    ) as rt:
        yield rt


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=json_values)
async def test_json_values_round_trip_through_steps_messages_and_events(
    open_runtime: Runtime, value: object
) -> None:
    """A JSON value comes back equal from a step, an event, a message and the workflow's
    result, both read from the database and replayed from the journal by a fork."""
    rt = open_runtime
    handle = await rt.start_workflow(round_trip, value)
    assert await rt.get_event(handle.workflow_id, "value", timeout=10) == value
    await rt.send(handle.workflow_id, value, "value")
    await handle.get_result()
    # Read back from the database, not from the running execution.
    stored = await (await rt.retrieve_workflow(handle.workflow_id)).get_result()
    assert stored == [value, value]
    assert (await rt.get_workflow_status(handle.workflow_id)).inputs == {
        "args": [value],
        "kwargs": {},
    }
    steps = await rt.list_steps(handle.workflow_id)
    assert steps[0].output == value
    # A fork past the last step replays every entry from the journal, running nothing.
    fork = await rt.fork_workflow(handle.workflow_id, len(steps) + 1)
    assert await fork.get_result() == [value, value]

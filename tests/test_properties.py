"""Property-based tests: any JSON value round-trips unchanged through a step, a message and an
event, whether read back from the database or replayed from the journal; and any ID, topic, key
or value at all either works whole or fails cleanly, leaving no partial row."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import aiodurable
from aiodurable import DurableError, Runtime, SerializationError, step, workflow
from aiodurable.testing import hooks

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


# -- hostile input -------------------------------------------------------------------------------

# Any code point, lone surrogates, NUL and control characters included.
any_char = st.characters(codec=None, exclude_categories=())
# Text keys: short and anything-goes, one character repeated up to 1,100 times (to cross the
# 1,000-byte limit with 1-, 2-, 3- and 4-byte characters, and the escaped-size one with control
# characters), or one of the known troublemakers.
hostile_text = (
    st.text(any_char, max_size=12)
    | st.builds(
        str.__mul__,
        st.sampled_from(["a", "\u00e9", "\u20ac", "\U0001f600", "\x01", "\x00", "\ud800"]),
        st.integers(min_value=0, max_value=1100),
    )
    | st.sampled_from(["\ud800", "lone\udc80", "nul\x00inside", "\x01" * 651, "\x01" * 640])
)
edge_values = st.sampled_from(
    [
        *(math.nan, math.inf, -math.inf, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1),
        *("\ud800", "nul\x00inside", {"\udc80": 1}, [1.5, math.nan], {"d": [{"x": -math.inf}]}),
    ]
)
hostile_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and the infinities included
    | st.text(any_char, max_size=12)
    | edge_values,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(any_char, max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)

# Each probe's topic, key and value, by workflow ID: the values need not be encodable, so they
# cannot travel as the workflow's inputs.
PROBES: dict[str, tuple[str | None, str, object]] = {}

CLEAN_FAILURES = (ValueError, DurableError)  # SerializationError is a DurableError


@workflow(name="properties-echo")
async def echo(value: object) -> object:
    return value


@workflow(name="properties-probe")
async def probe() -> list[object]:
    """set_event(key, value), then recv(topic): what each did, or the error it raised."""
    topic, key, value = PROBES[aiodurable.current_workflow_id()]
    report: list[object] = []
    try:
        await aiodurable.set_event(key, value)
    except CLEAN_FAILURES as exc:
        report.append(type(exc).__name__)
    else:
        report.append("set")
    try:
        report.append(["got", await aiodurable.recv(topic, timeout=60)])
    except CLEAN_FAILURES as exc:
        report.append(type(exc).__name__)
    return report


async def _counts(rt: Runtime, workflow_id: str | None = None) -> dict[str, int]:
    """Rows per table: all of them, or of one workflow."""
    tables = {
        "workflows": "workflow_id",
        "steps": "workflow_id",
        "events": "workflow_id",
        "event_history": "workflow_id",
        "messages": "destination_id",
    }
    async with hooks(rt).store.pool.acquire() as conn:
        counts: dict[str, int] = {}
        for table, column in tables.items():
            sql = f"SELECT count(*) FROM {rt.schema}.{table}"
            if workflow_id is None:
                counts[table] = await conn.fetchval(sql)
            else:
                counts[table] = await conn.fetchval(f"{sql} WHERE {column} = $1", workflow_id)
        return counts


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    workflow_id=hostile_text, topic=st.none() | hostile_text, key=hostile_text, value=hostile_values
)
async def test_any_id_topic_key_or_value_works_whole_or_fails_cleanly(
    open_runtime: Runtime, workflow_id: str, topic: str | None, key: str, value: object
) -> None:
    """start_workflow (under any ID, with any argument), send (any topic), set_event (any key
    and value), get_event and recv each either succeed and round-trip the value, or raise
    ValueError or a DurableError (SerializationError for NaN, infinities, lone surrogates and
    ints over 64 bits); a failed call leaves no row behind, and a workflow holds exactly the
    rows of the calls that succeeded."""
    rt = open_runtime
    prefix = uuid.uuid4().hex[:8]

    # A start under the ID, with the value as its argument.
    before = await _counts(rt)
    wid = f"{prefix}-{workflow_id}"
    try:
        with aiodurable.set_workflow_id(wid):
            await rt.start_workflow(echo, value)
    except CLEAN_FAILURES as exc:
        event(f"start: {type(exc).__name__}")
        assert await _counts(rt) == before
    else:
        event("start: ok")
        assert await (await rt.retrieve_workflow(wid)).get_result() == value
        assert (await rt.get_workflow_status(wid)).inputs == {"args": [value], "kwargs": {}}

    # An event and a message, under a workflow ID that is sure to work.
    probe_id = f"{prefix}-probe"
    PROBES[probe_id] = (topic, key, value)
    with aiodurable.set_workflow_id(probe_id):
        handle = await rt.start_workflow(probe)
    try:
        await rt.send(probe_id, value, topic)
    except ValueError:  # the topic: recv refuses it too
        event("send: ValueError")
        expected: object = "ValueError"
    except DurableError as exc:  # the value: recv still waits on a valid topic
        event(f"send: {type(exc).__name__}")
        assert isinstance(exc, SerializationError)
        assert (await _counts(rt, probe_id))["messages"] == 0
        await rt.send(probe_id, "instead", topic)
        expected = ["got", "instead"]
    else:
        event("send: ok")
        expected = ["got", value]
    report = await handle.get_result()
    event(f"set_event: {report[0]}")
    assert report[1] == expected
    if report[0] == "set":
        assert await rt.get_event(probe_id, key, timeout=0) == value
    else:
        assert report[0] in ("ValueError", "SerializationError")
        try:
            assert await rt.get_event(probe_id, key, timeout=0) is None
        except ValueError:
            assert report[0] == "ValueError"  # the key: get_event refuses it too
    set_ok, recv_ok = report[0] == "set", report[1] != "ValueError"
    assert await _counts(rt, probe_id) == {
        "workflows": 1,
        "steps": set_ok + recv_ok,
        "events": set_ok,
        "event_history": set_ok,
        "messages": 0,
    }

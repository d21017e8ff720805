"""Reading what is recorded: rows that cannot be decoded are listed with a decode error instead
of failing the listing (M4), and reads refuse bad arguments with clean errors (L1).

The undecodable rows are made the way they arise in the field: tampered with in SQL (invalid
JSON), written in another format (pickle, as a pickle runtime on the same schema writes them), or
recorded under an annotation that the code no longer matches.
"""

from __future__ import annotations

import math
import pickle

import httpx
import pytest

import aiodurable
from aiodurable import Runtime, SerializationError, WorkflowNotFound, WorkflowStatus, step, workflow
from aiodurable.console import create_app
from aiodurable.testing import hooks

from .conftest import RuntimeFactory
from .test_cli import Cli

pytestmark = pytest.mark.anyio

unpickled: list[str] = []


def _record_unpickling() -> str:
    unpickled.append("ran")
    return "unpickled"


class Trap:
    """Unpickling this runs `_record_unpickling`: a JSON runtime must never do it."""

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (_record_unpickling, ())


@step()
async def double(x: float) -> float:
    return x * 2


@step()
async def label(text: str) -> str:
    return f"<{text}>"


@workflow()
async def echo_float(x: float) -> float:
    return await double(x)


@workflow()
async def two_steps(text: str) -> str:
    return await label(text) + await label(text + "!")


@pytest.fixture
def cli(database_url: str, schema: str) -> Cli:
    """The command line on this test's schema."""
    return Cli(database_url, schema)


async def _tamper(rt: Runtime, sql: str, *args: object) -> None:
    async with hooks(rt).store.pool.acquire() as conn:
        assert await conn.execute(sql.format(s=rt.schema), *args) == "UPDATE 1"


async def _finished(rt: Runtime, workflow_id: str, x: float) -> None:
    with aiodurable.set_workflow_id(workflow_id):
        assert await echo_float(x) == x * 2


# -- M4: one undecodable row never fails a listing -------------------------------------------


async def test_undecodable_inputs_are_listed_with_a_decode_error(runtime: RuntimeFactory) -> None:
    """Invalid JSON, a pickle row in a JSON runtime and an argument that no longer fits its
    annotation each leave inputs None with the reason; the other rows decode as before."""
    async with runtime() as rt:
        for wid in ("good-1", "bad-json", "bad-pickle", "bad-type", "good-2"):
            await _finished(rt, wid, 1.5)
        workflows = "UPDATE {s}.workflows SET inputs = $2 WHERE workflow_id = $1"
        await _tamper(rt, workflows, "bad-json", b'{"args": [1.5,')
        await _tamper(rt, workflows, "bad-type", b'{"args": [null], "kwargs": {}}')
        await _tamper(
            rt,
            "UPDATE {s}.workflows SET format = 'pickle', inputs = $2, output = $3"
            " WHERE workflow_id = $1",
            "bad-pickle",
            pickle.dumps({"args": [Trap()], "kwargs": {}}),
            pickle.dumps(Trap()),
        )

        infos = {i.workflow_id: i for i in await rt.list_workflows()}

        assert len(infos) == 5
        for wid in ("good-1", "good-2"):
            assert infos[wid].inputs == {"args": [1.5], "kwargs": {}}
            assert infos[wid].output == 3.0
            assert infos[wid].decode_error is None
        bad_json = infos["bad-json"]
        assert bad_json.inputs is None and bad_json.output == 3.0
        assert bad_json.decode_error is not None
        assert "cannot decode the inputs" in bad_json.decode_error
        bad_type = infos["bad-type"]
        assert bad_type.inputs is None
        assert bad_type.decode_error is not None
        assert "argument 'x'" in bad_type.decode_error and "expected float" in bad_type.decode_error
        bad_pickle = infos["bad-pickle"]
        assert bad_pickle.inputs is None and bad_pickle.output is None
        assert bad_pickle.decode_error is not None
        assert "the inputs" in bad_pickle.decode_error and "the output" in bad_pickle.decode_error
        assert "'pickle'" in bad_pickle.decode_error
        assert unpickled == []
        # The same snapshot through get_workflow_status and the handle.
        status = await (await rt.retrieve_workflow("bad-json")).get_status()
        assert status.decode_error == bad_json.decode_error
        assert status.status is WorkflowStatus.SUCCESS


async def test_undecodable_output_is_reported_and_get_result_still_raises(
    runtime: RuntimeFactory,
) -> None:
    """A result that cannot be decoded is None in the listing, with the reason, while
    get_result() raises SerializationError rather than returning None."""
    async with runtime() as rt:
        await _finished(rt, "out-json", 2.0)
        await _finished(rt, "out-pickle", 2.0)
        await _tamper(
            rt, "UPDATE {s}.workflows SET output = $2 WHERE workflow_id = $1", "out-json", b"{"
        )
        await _tamper(
            rt,
            "UPDATE {s}.workflows SET format = 'pickle', output = $2 WHERE workflow_id = $1",
            "out-pickle",
            pickle.dumps(Trap()),
        )
        infos = {i.workflow_id: i for i in await rt.list_workflows()}
        for wid in ("out-json", "out-pickle"):
            error = infos[wid].decode_error
            assert infos[wid].output is None
            assert error is not None and error.startswith("cannot decode the")
            handle = await rt.retrieve_workflow(wid)
            with pytest.raises(SerializationError):
                await handle.get_result()
        assert unpickled == []


async def test_undecodable_steps_are_listed_with_a_decode_error(runtime: RuntimeFactory) -> None:
    """list_steps lists every journal entry: an output that is invalid JSON or pickle is None
    with the reason (never a raw JSONDecodeError), the others are decoded."""
    async with runtime() as rt:
        with aiodurable.set_workflow_id("steps-1"):
            assert await two_steps("a") == "<a><a!>"
        with aiodurable.set_workflow_id("steps-2"):
            assert await two_steps("b") == "<b><b!>"
        steps = (
            "UPDATE {s}.steps SET format = $3, output = $4"
            " WHERE workflow_id = $1 AND function_id = $2"
        )
        await _tamper(rt, steps, "steps-1", 1, "json", b'"unterminated')
        await _tamper(rt, steps, "steps-2", 2, "pickle", pickle.dumps(Trap()))

        first = await rt.list_steps("steps-1")
        assert [s.function_id for s in first] == [1, 2]
        assert first[0].output is None
        assert first[0].decode_error is not None
        assert "function ID 1" in first[0].decode_error
        assert first[1].output == "<a!>" and first[1].decode_error is None
        second = await rt.list_steps("steps-2")
        assert second[0].output == "<b>"
        assert second[1].output is None
        assert second[1].decode_error is not None and "'pickle'" in second[1].decode_error
        assert unpickled == []


async def test_console_pages_survive_undecodable_rows(runtime: RuntimeFactory) -> None:
    """The console's list and workflow pages answer 200, not 500, when a workflow's inputs or a
    step's output cannot be decoded."""
    async with runtime() as rt:
        await _finished(rt, "c-inputs", 1.0)
        await _finished(rt, "c-step", 1.0)
        await _tamper(
            rt, "UPDATE {s}.workflows SET inputs = $2 WHERE workflow_id = $1", "c-inputs", b"["
        )
        await _tamper(
            rt,
            "UPDATE {s}.steps SET output = $2 WHERE workflow_id = $1 AND function_id = 1",
            "c-step",
            b"not json",
        )
        transport = httpx.ASGITransport(app=create_app(rt), client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            listing = await http.get("/")
            assert listing.status_code == 200
            assert 'data-workflow-id="c-inputs"' in listing.text
            assert 'data-workflow-id="c-step"' in listing.text
            for wid in ("c-inputs", "c-step"):
                page = await http.get(f"/workflows/{wid}")
                assert page.status_code == 200, page.text


async def test_cli_lists_undecodable_rows_as_json(runtime: RuntimeFactory, cli: Cli) -> None:
    """``aiodurable workflow list --json`` exits 0 and lists a row whose inputs are invalid
    JSON and one written in pickle (it used to exit 2 with a JSON parser's message)."""
    async with runtime() as rt:
        await _finished(rt, "cli-good", 1.0)
        await _finished(rt, "cli-json", 1.0)
        await _finished(rt, "cli-pickle", 1.0)
        await _tamper(
            rt, "UPDATE {s}.workflows SET inputs = $2 WHERE workflow_id = $1", "cli-json", b"{"
        )
        await _tamper(
            rt,
            "UPDATE {s}.workflows SET format = 'pickle', inputs = $2 WHERE workflow_id = $1",
            "cli-pickle",
            pickle.dumps({"args": [Trap()], "kwargs": {}}),
        )
    listed = await cli.json("list")
    assert isinstance(listed, list)
    rows = {r["workflow_id"]: r for r in listed}
    assert set(rows) == {"cli-good", "cli-json", "cli-pickle"}
    assert rows["cli-good"]["inputs"] == {"args": [1.0], "kwargs": {}}
    assert rows["cli-json"]["inputs"] is None
    assert rows["cli-pickle"]["inputs"] is None
    assert unpickled == []


# -- L1: reads refuse what no row can hold, with clean errors ---------------------------------


UNSTORABLE_IDS = ["a\x00b", "\x00", "bad\ud800id", "\udc80"]


@pytest.mark.parametrize("workflow_id", UNSTORABLE_IDS)
async def test_reads_of_ids_no_row_can_have_are_not_found(
    runtime: RuntimeFactory, workflow_id: str
) -> None:
    """An ID with NUL or a lone surrogate is WorkflowNotFound for every call that reads one,
    not a driver error."""
    async with runtime() as rt:
        await _finished(rt, "present", 1.0)
        with pytest.raises(WorkflowNotFound):
            await rt.retrieve_workflow(workflow_id)
        with pytest.raises(WorkflowNotFound):
            await rt.get_workflow_status(workflow_id)
        with pytest.raises(WorkflowNotFound):
            await rt.list_steps(workflow_id)
        with pytest.raises(WorkflowNotFound):
            await rt.cancel_workflow(workflow_id)
        with pytest.raises(WorkflowNotFound):
            await rt.resume_workflow(workflow_id)
        with pytest.raises(WorkflowNotFound):
            await rt.restart_workflow(workflow_id)
        with pytest.raises(WorkflowNotFound):
            await rt.fork_workflow(workflow_id, 1)
        with pytest.raises(WorkflowNotFound):
            await hooks(rt).handle(workflow_id, "x").get_result()
        assert [i.workflow_id for i in await rt.list_workflows()] == ["present"]


async def test_a_workflow_id_that_is_not_text_is_a_value_error(runtime: RuntimeFactory) -> None:
    """A non-string ID is a usage error that says what was given."""
    async with runtime() as rt:
        with pytest.raises(ValueError, match="must be a string"):
            await rt.get_workflow_status(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("name", "a\x00", "NUL"),
        ("workflow_id_prefix", "\ud800", "lone surrogate"),
        ("queue_name", "\x00", "NUL"),
        ("app_version", "v\x00", "NUL"),
        ("executor_id", "e\udfff", "lone surrogate"),
        ("name", 5, "must be a string"),
        ("start_time", math.nan, "finite"),
        ("start_time", math.inf, "finite"),
        ("end_time", -math.inf, "finite"),
    ],
)
async def test_list_filters_no_row_can_match_are_value_errors(
    runtime: RuntimeFactory, option: str, value: object, match: str
) -> None:
    """list_workflows refuses a filter no row could match with a ValueError naming it."""
    async with runtime() as rt:
        with pytest.raises(ValueError, match=match) as caught:
            await rt.list_workflows(**{option: value})  # type: ignore[arg-type]
        assert option in str(caught.value)


async def test_list_numbers_are_bounded_by_the_64_bit_columns(runtime: RuntimeFactory) -> None:
    """limit and offset go up to 2**63 - 1 and times to what bigint milliseconds hold; beyond
    that list_workflows raises ValueError instead of a driver error."""
    async with runtime() as rt:
        await _finished(rt, "edge", 1.0)
        assert len(await rt.list_workflows(limit=2**63 - 1)) == 1
        assert await rt.list_workflows(offset=2**63 - 1) == []
        assert len(await rt.list_workflows(start_time=-1e15, end_time=1e15)) == 1
        for option, value in [
            ("limit", 2**63),
            ("offset", 2**63),
            ("start_time", 1e300),
            ("end_time", 10**30),
        ]:
            with pytest.raises(ValueError, match=option):
                await rt.list_workflows(**{option: value})  # type: ignore[arg-type]

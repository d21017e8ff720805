"""Recorded exceptions stay small: a huge message, traceback, argument or attribute is clipped
(and marked) before it is written, and the exception still comes back as its own type."""

from __future__ import annotations

import orjson
import pytest

import aiodurable
from aiodurable._error_bounds import ERROR_RECORD_LIMIT, MESSAGE_LIMIT, bounded_record
from aiodurable._serde import JsonSerializer, decode_exception, encode_exception, error_record
from aiodurable.testing import hooks

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

HUGE = 5_000_000


@aiodurable.step()
async def explode(size: int) -> None:
    raise ValueError("x" * size)


@aiodurable.workflow()
async def fails_in_a_step(size: int) -> None:
    await explode(size)


@aiodurable.workflow()
async def fails_itself(size: int) -> None:
    raise RuntimeError("y" * size)


async def _error_sizes(rt: aiodurable.Runtime, workflow_id: str) -> tuple[int, list[int]]:
    own = await hooks(rt).store.pool.fetchval(
        f"SELECT octet_length(error) FROM {rt.schema}.workflows WHERE workflow_id = $1",
        workflow_id,
    )
    steps = await hooks(rt).store.pool.fetch(
        f"SELECT octet_length(error) AS n FROM {rt.schema}.steps WHERE workflow_id = $1"
        " AND error IS NOT NULL",
        workflow_id,
    )
    return own, [r["n"] for r in steps]


async def test_a_5_mb_error_is_stored_in_at_most_the_record_limit(
    runtime: RuntimeFactory,
) -> None:
    """A step raising ValueError with a 5 MB message, and a workflow raising a 5 MB
    RuntimeError, store records of at most ERROR_RECORD_LIMIT bytes (they used to store 15 MB,
    whatever max_value_size said); the errors come back as their own types, their messages
    clipped and saying how long they were."""
    async with runtime(max_value_size=1024) as rt:
        with aiodurable.set_workflow_id("big-step-error"), pytest.raises(ValueError) as first:
            await fails_in_a_step(HUGE)
        with aiodurable.set_workflow_id("big-workflow-error"), pytest.raises(RuntimeError):
            await fails_itself(HUGE)
        own, steps = await _error_sizes(rt, "big-step-error")
        assert len(steps) == 1
        assert own <= ERROR_RECORD_LIMIT and steps[0] <= ERROR_RECORD_LIMIT, (own, steps)
        own, steps = await _error_sizes(rt, "big-workflow-error")
        assert own <= ERROR_RECORD_LIMIT and steps == []
        assert len(str(first.value)) == HUGE  # the first caller sees the exception it raised
        for wid, kind in (("big-step-error", ValueError), ("big-workflow-error", RuntimeError)):
            with pytest.raises(kind) as again:
                await (await rt.retrieve_workflow(wid)).get_result()
            message = str(again.value)
            assert len(message) < MESSAGE_LIMIT + 100
            assert message.endswith(f"[truncated: {HUGE:,} characters in all]")
        row = await hooks(rt).store.require_workflow("big-workflow-error")
        assert row.error is not None
        assert orjson.loads(row.error)["truncated"] is True


def _raised(exc: Exception) -> bytes:
    try:
        raise exc
    except Exception as caught:
        return encode_exception(caught)


class Loaded(Exception):
    """An exception carrying a large attribute."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.rows = list(range(100_000))


def test_small_errors_are_recorded_whole() -> None:
    """A small exception's record is unchanged: no marker, its arguments kept."""
    record = orjson.loads(_raised(ValueError("short", 3)))
    assert record["message"] == "('short', 3)" and record["args"] == ["short", 3]
    assert "truncated" not in record


def test_large_attributes_go_first_and_the_type_survives() -> None:
    """An exception whose attributes alone are over the limit loses them, keeps its arguments,
    and still comes back as its own type."""
    data = _raised(Loaded("what"))
    assert len(data) <= ERROR_RECORD_LIMIT
    back = decode_exception(data, workflow_id="w")
    assert type(back) is Loaded and str(back) == "what"


def test_the_frame_that_raised_survives_a_huge_message() -> None:
    """The traceback keeps its frames: only the line repeating the message is clipped."""
    record = error_record(_raised(ValueError("z" * HUGE)))
    assert "test_error_bounds.py" in record.traceback and "in _raised" in record.traceback
    assert len(record.traceback) < 8 * 1024


def test_every_record_fits_whatever_it_holds() -> None:
    """Control characters (six bytes each in JSON), unpaired surrogates and many arguments still
    give a record within the limit."""
    data = _raised(RuntimeError("\x01" * 100_000, "\ud800" * 10, ["x" * 1000] * 1000))
    assert len(data) <= ERROR_RECORD_LIMIT
    assert error_record(data).message.startswith("('\\x01")
    tiny = bounded_record(
        {"type": "m:T", "message": "\x01" * 10_000, "traceback": "t" * 10_000, "args": None},
        JsonSerializer().dumps,
        limit=2048,
    )
    assert len(tiny) <= 2048

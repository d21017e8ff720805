"""Log records carry the workflow ID and step name of the code that logged them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from aiodurable import step, workflow
from aiodurable._logging import LOGGER_NAME, WorkflowContextFilter

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio

library = logging.getLogger(LOGGER_NAME)
app_logger = logging.getLogger("tests.shop")


class Collect(logging.Handler):
    """Keeps the (workflow_id, step_name, message) of each record it handles."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[object, object, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = (getattr(record, "workflow_id", "-"), getattr(record, "step_name", "-"))
        self.seen.append((*fields, record.getMessage()))


@pytest.fixture
def collected() -> Iterator[Collect]:
    """A handler on the aiodurable logger, at DEBUG, for one test."""
    handler = Collect()
    level = library.level
    library.addHandler(handler)
    library.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        library.setLevel(level)
        library.removeHandler(handler)


@step()
async def logging_step() -> None:
    library.info("in the step")
    app_logger.info("app in the step")


@workflow()
async def logging_workflow() -> None:
    library.info("in the workflow")
    await logging_step()


def test_the_aiodurable_logger_has_the_filter_and_a_null_handler() -> None:
    """Importing the package gives its logger the filter and a NullHandler, and leaves its
    level alone (so INFO stays quiet unless the application asks for it)."""
    assert any(isinstance(f, WorkflowContextFilter) for f in library.filters)
    assert any(isinstance(h, logging.NullHandler) for h in library.handlers)
    assert library.level == logging.NOTSET


async def test_records_inside_a_step_carry_workflow_id_and_step_name(
    runtime: RuntimeFactory, collected: Collect
) -> None:
    """A record logged in a step has the workflow ID and step name; in the workflow body the
    workflow ID and no step name; outside a workflow neither."""
    library.info("outside")
    async with runtime() as rt:
        handle = await rt.start_workflow(logging_workflow)
        await handle.get_result()
    wid = handle.workflow_id
    mine = [s for s in collected.seen if s[2] in {"outside", "in the workflow", "in the step"}]
    assert mine == [
        (None, None, "outside"),
        (wid, None, "in the workflow"),
        (wid, "logging_step", "in the step"),
    ]


async def test_the_filter_on_a_handler_serves_the_applications_own_loggers(
    runtime: RuntimeFactory,
) -> None:
    """Put on a handler, the filter adds the attributes to an application logger's records,
    and a format string can show them."""
    handler = Collect()
    handler.addFilter(WorkflowContextFilter())
    handler.setFormatter(logging.Formatter("[%(workflow_id)s %(step_name)s] %(message)s"))
    lines: list[str] = []
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]  # keep the formatted line
    app_logger.addHandler(handler)
    app_logger.setLevel(logging.INFO)
    try:
        app_logger.info("outside")
        async with runtime() as rt:
            handle = await rt.start_workflow(logging_workflow)
            await handle.get_result()
    finally:
        app_logger.removeHandler(handler)
        app_logger.setLevel(logging.NOTSET)
    assert lines == ["[None None] outside", f"[{handle.workflow_id} logging_step] app in the step"]


def test_attributes_given_with_extra_are_kept() -> None:
    """A record that already has workflow_id (from extra=, or another task) keeps it."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.workflow_id = "given"
    assert WorkflowContextFilter().filter(record)
    assert (record.__dict__["workflow_id"], record.__dict__["step_name"]) == ("given", None)

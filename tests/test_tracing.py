"""OpenTelemetry spans: the caller's span is the parent of the workflow's, which is the parent of
its steps'; exceptions are recorded; the application's global provider receives them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import aiodurable
from aiodurable import NonRetryable, step, workflow

from .conftest import RuntimeFactory

pytestmark = pytest.mark.anyio


class _Gated(SimpleSpanProcessor):
    """Exports only while a test of this module listens: every other test of the session runs
    under this provider too, and its spans must not pile up in memory."""

    listening = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.listening:
            super().on_end(span)


# The global provider can be set once per process: this module sets it at import, once.
_exporter = InMemorySpanExporter()
_processor = _Gated(_exporter)
_provider = TracerProvider()
_provider.add_span_processor(_processor)
trace.set_tracer_provider(_provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The in-memory exporter, recording for the duration of the test only."""
    _exporter.clear()
    _processor.listening = True
    yield _exporter
    _processor.listening = False
    _exporter.clear()


@step()
async def traced_one() -> int:
    return 1


@step()
async def traced_fails() -> None:
    raise NonRetryable("card declined")


@workflow()
async def traced_workflow(fail: bool) -> int:
    value = await traced_one()
    if fail:
        try:
            await traced_fails()
        except NonRetryable:
            pass
    return value


def _named(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    matches = [s for s in finished if s.name == name]
    assert len(matches) == 1, [s.name for s in finished]
    return matches[0]


async def test_caller_span_is_parent_of_workflow_span_which_is_parent_of_step_spans(
    runtime: RuntimeFactory, spans: InMemorySpanExporter
) -> None:
    """A workflow started inside the caller's span gets a span under it, and each step a span
    under the workflow's, with the aiodurable attributes."""
    tracer = trace.get_tracer("tests")
    async with runtime() as rt:
        with tracer.start_as_current_span("caller"), aiodurable.set_workflow_id("traced-1"):
            handle = await rt.start_workflow(traced_workflow, False)
        assert await handle.get_result() == 1
    finished = spans.get_finished_spans()
    caller = _named(finished, "caller")
    wf_name = [
        s.name for s in finished if s.attributes and "aiodurable.workflow_name" in s.attributes
    ]
    assert len(wf_name) == 1
    flow = _named(finished, wf_name[0])
    one = _named(finished, "traced_one")
    assert caller.context is not None and flow.context is not None
    assert flow.parent is not None and flow.parent.span_id == caller.context.span_id
    assert one.parent is not None and one.parent.span_id == flow.context.span_id
    assert flow.context.trace_id == caller.context.trace_id == one.context.trace_id
    assert flow.attributes is not None and flow.attributes["aiodurable.workflow_id"] == "traced-1"
    assert one.attributes == {
        "aiodurable.workflow_id": "traced-1",
        "aiodurable.step_name": "traced_one",
        "aiodurable.function_id": 1,
    }
    assert one.status.status_code is StatusCode.UNSET


async def test_a_failing_step_span_records_the_exception(
    runtime: RuntimeFactory, spans: InMemorySpanExporter
) -> None:
    """A step that raises ends its span with ERROR status and an exception event."""
    async with runtime() as rt:
        handle = await rt.start_workflow(traced_workflow, True)
        assert await handle.get_result() == 1
    failed = _named(spans.get_finished_spans(), "traced_fails")
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]


async def test_replayed_steps_record_no_span(
    runtime: RuntimeFactory, spans: InMemorySpanExporter
) -> None:
    """Starting a finished workflow ID again runs nothing, so no step span appears."""
    async with runtime() as rt:
        with aiodurable.set_workflow_id("traced-2"):
            await (await rt.start_workflow(traced_workflow, False)).get_result()
        spans.clear()
        with aiodurable.set_workflow_id("traced-2"):
            assert await (await rt.start_workflow(traced_workflow, False)).get_result() == 1
    assert [s.name for s in spans.get_finished_spans()] == []


@workflow()
async def traced_raises() -> None:
    raise ValueError("boom")


async def test_a_failing_workflow_span_records_the_error(
    runtime: RuntimeFactory, spans: InMemorySpanExporter
) -> None:
    """A workflow ending as ERROR ends its span with ERROR status and an exception event."""
    async with runtime() as rt:
        handle = await rt.start_workflow(traced_raises)
        with pytest.raises(ValueError):
            await handle.get_result()
    (flow,) = [s for s in spans.get_finished_spans() if s.name.endswith("traced_raises")]
    assert flow.status.status_code is StatusCode.ERROR
    assert [e.name for e in flow.events] == ["exception"]

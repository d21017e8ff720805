"""Spans for workflows and steps, through OpenTelemetry when it is installed (the ``otel`` extra).

aiodurable never installs a tracer provider of its own: its spans go to the application's, the
global one set with ``opentelemetry.trace.set_tracer_provider``. The tracer is a proxy taken once
at import, so a provider the application sets later (even after importing aiodurable) receives
the spans; until one is set, OpenTelemetry's no-op tracer makes them free.

- ``workflow_span`` wraps each execution of a workflow (its first run, and each resumption after
  a recovery) in the workflow's own task. That task's context is copied from the code that
  started the workflow, so the caller's current span (an HTTP request's, say) is the parent.
- ``step_span`` wraps the first execution of each step and transaction body, retries included; a
  replayed step records no span, since nothing runs.

Attributes: ``aiodurable.workflow_id``, ``aiodurable.workflow_name`` (workflow spans),
``aiodurable.step_name`` and ``aiodurable.function_id`` (step spans). An exception is recorded on
the span, whose status becomes ERROR; a cancellation (the runtime closing, or the workflow being
cancelled) ends the span without an error, since the workflow resumes or was stopped on purpose.

Without OpenTelemetry, or before the application sets a tracer provider, both hooks return a
shared no-op context manager: nothing is allocated per workflow or step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

__all__ = ["TRACER_NAME", "WorkflowSpan", "step_span", "workflow_span"]

TRACER_NAME = "aiodurable"

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

_tracer: Tracer | None
try:
    from opentelemetry import trace as _otel_trace
except ImportError:  # the otel extra is not installed: spans are no-ops
    _tracer = None
else:
    # A proxy: it resolves to the application's provider once one is set globally.
    _tracer = _otel_trace.get_tracer(TRACER_NAME)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class WorkflowSpan:
    """What ``workflow_span`` yields: the runtime reports the workflow's outcome through it,
    since a workflow's exception is recorded as its outcome rather than raised through the span.
    """

    __slots__ = ("_span",)

    def __init__(self, span: Span | None = None) -> None:
        self._span = span

    def set_error(self, error: BaseException) -> None:
        """Record that the workflow ended with ``error`` (ERROR status, the exception event)."""
        span = self._span
        if span is None or not span.is_recording():
            return
        span.record_exception(error)
        span.set_status(_otel_trace.Status(_otel_trace.StatusCode.ERROR, _describe(error)))


_NO_SPAN = WorkflowSpan()


@contextmanager
def _span(tracer: Tracer, name: str, attributes: dict[str, str | int]) -> Iterator[Span]:
    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except Exception as exc:  # not BaseException: a cancellation is no error
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(_otel_trace.Status(_otel_trace.StatusCode.ERROR, _describe(exc)))
            raise


class _Untraced:
    """The context manager of a span not recorded: shared, and free to enter."""

    __slots__ = ()

    def __enter__(self) -> WorkflowSpan:
        return _NO_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_UNTRACED = _Untraced()


def _tracing() -> bool:
    """Whether spans are recorded: OpenTelemetry is installed and the application has set a
    tracer provider (until then the global one is a proxy whose spans go nowhere)."""
    if _tracer is None:
        return False
    # The global set by set_tracer_provider, read directly: get_tracer_provider() consults the
    # environment on every call, which would cost more than the rest of a step.
    provider = getattr(_otel_trace, "_TRACER_PROVIDER", _MISSING)
    if provider is _MISSING:
        provider = _otel_trace.get_tracer_provider()
    return provider is not None and not isinstance(provider, _otel_trace.ProxyTracerProvider)


_MISSING = object()


def workflow_span(name: str, workflow_id: str) -> AbstractContextManager[WorkflowSpan]:
    """A span around one execution of a workflow, a child of the caller's span (a no-op
    without OpenTelemetry or a tracer provider)."""
    if not _tracing():
        return _UNTRACED
    return _workflow_span(name, workflow_id)


def step_span(name: str, workflow_id: str, function_id: int) -> AbstractContextManager[object]:
    """A span around the first execution of a step, a child of its workflow's span (a no-op
    without OpenTelemetry or a tracer provider)."""
    if not _tracing():
        return _UNTRACED
    return _step_span(name, workflow_id, function_id)


@contextmanager
def _workflow_span(name: str, workflow_id: str) -> Iterator[WorkflowSpan]:
    assert _tracer is not None
    attributes: dict[str, str | int] = {
        "aiodurable.workflow_id": workflow_id,
        "aiodurable.workflow_name": name,
    }
    with _span(_tracer, name, attributes) as span:
        yield WorkflowSpan(span)


@contextmanager
def _step_span(name: str, workflow_id: str, function_id: int) -> Iterator[None]:
    assert _tracer is not None
    attributes: dict[str, str | int] = {
        "aiodurable.workflow_id": workflow_id,
        "aiodurable.step_name": name,
        "aiodurable.function_id": function_id,
    }
    with _span(_tracer, name, attributes):
        yield

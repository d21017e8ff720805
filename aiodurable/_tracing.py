"""Spans for workflows and steps (OpenTelemetry, when installed). Placeholder hooks: no-ops."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["step_span", "workflow_span"]


@contextmanager
def workflow_span(name: str, workflow_id: str) -> Iterator[None]:
    """A span around one execution of a workflow (a no-op without OpenTelemetry)."""
    yield


@contextmanager
def step_span(name: str, workflow_id: str, function_id: int) -> Iterator[None]:
    """A span around the first execution of a step (a no-op without OpenTelemetry)."""
    yield

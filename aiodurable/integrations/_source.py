"""What the web integrations share: the runtime an application opens."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from .._runtime import Runtime

__all__ = ["RuntimeSource", "make_runtime"]

RuntimeSource: TypeAlias = Runtime | Callable[[], Runtime] | None
"""A runtime to open, a factory making one for each start of the application (useful when an
application is started more than once, as tests do), or None for ``Runtime()`` (settings from
the environment, else the embedded PostgreSQL)."""


def make_runtime(source: RuntimeSource) -> Runtime:
    """The runtime ``source`` stands for, made now."""
    if source is None:
        return Runtime()
    if isinstance(source, Runtime):
        return source
    return source()

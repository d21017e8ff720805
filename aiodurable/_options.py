"""``RuntimeOptions``: a runtime's settings, filled in from the environment and checked once.

:class:`aiodurable.Runtime` takes its settings as keywords and its docstring says what each
means; :func:`from_environment` fills in ``AIODURABLE_DATABASE_URL``,
``AIODURABLE_LISTEN_DATABASE_URL``, ``AIODURABLE_APP_VERSION`` and ``AIODURABLE_EXECUTOR_ID``,
and :class:`RuntimeOptions` checks every value together, so that a bad one fails the constructor
with a message naming the keyword, before anything connects.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from ._backend import Backend
from ._clock import Clock
from ._retention import check_retention
from ._serde import Serializer
from ._validate import check_id, check_timeout

__all__ = [
    "RuntimeOptions",
    "StartSettings",
    "default_executor_id",
    "from_environment",
    "take_shorthand",
]


@dataclass(frozen=True, slots=True)
class StartSettings:
    """Options of one start: ``workflow_id`` (an idempotency key, as
    :func:`aiodurable.set_workflow_id` sets) and ``timeout`` (seconds, as
    :func:`aiodurable.set_workflow_timeout` sets; ``None`` for none)."""

    workflow_id: str | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.workflow_id is not None:
            check_id("workflow ID", self.workflow_id)
        if self.timeout is not None and check_timeout(self.timeout) is None:
            # float("inf"): no deadline, even inside set_workflow_timeout().
            object.__setattr__(self, "timeout", math.inf)


def take_shorthand(
    fn: Callable[..., object], kwargs: dict[str, object], names: tuple[str, ...]
) -> dict[str, object]:
    """The start options given as keywords next to a workflow's own arguments (the documented
    shorthand ``start_workflow(fn, x, timeout=5)``), taken out of ``kwargs``: only those that
    ``fn`` has no parameter of that name for, so a workflow's own argument is never taken. The
    explicit spelling, which inspects nothing, is ``with_options(...)``."""
    if not any(name in kwargs for name in names):
        return {}
    params = inspect.signature(fn).parameters
    return {name: kwargs.pop(name) for name in names if name in kwargs and name not in params}


def default_executor_id() -> str:
    """An executor ID that is stable across restarts of the same program on the same machine."""
    main = sys.modules.get("__main__")
    program = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "") or "python"
    digest = hashlib.sha256(os.path.abspath(program).encode()).hexdigest()[:10]
    return f"{socket.gethostname()}-{digest}"


def from_environment(value: str | None, variable: str) -> str | None:
    """``value`` if given (not None or empty), else the environment ``variable``'s, else None."""
    return value or os.environ.get(variable) or None


def _positive(label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"Runtime({label}=) must be a positive number, not {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeOptions:
    """The settings of one runtime, as :class:`aiodurable.Runtime` takes them (its docstring says
    what each means), with the environment's values and the defaults filled in; each value is
    checked here, so that a bad one fails the constructor before anything connects.
    ``app_version`` is None until the runtime opens and hashes its workflows; ``executor_id`` is
    the ID asked for (a runtime may run as ``ID-2``)."""

    database_url: str | None
    app_version: str | None
    executor_id: str
    schema: str
    app_database_url: str | None
    serializer: Serializer
    clock: Clock
    pool_size: int
    connect_timeout: float
    notify_fallback: float
    recover: bool
    heartbeat_interval: float
    executor_lease: float
    max_value_size: int
    command_timeout: float | None
    unreachable_timeout: float
    backend: Backend
    auto_upgrade: bool = False
    listen_database_url: str | None = None
    retention: timedelta | None = None

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        check_id("executor ID", self.executor_id)
        for label, seconds in (
            ("heartbeat_interval", self.heartbeat_interval),
            ("executor_lease", self.executor_lease),
            ("notify_fallback", self.notify_fallback),
            ("connect_timeout", self.connect_timeout),
            ("unreachable_timeout", self.unreachable_timeout),
        ):
            _positive(label, seconds)
        if self.executor_lease <= self.heartbeat_interval:
            raise ValueError(
                f"executor_lease ({self.executor_lease} s) must be longer than heartbeat_interval"
                f" ({self.heartbeat_interval} s), or live executors would look gone"
            )
        pool_size = self.pool_size
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"Runtime(pool_size=) must be an int of at least 1, not {pool_size!r}")
        if self.command_timeout is not None:
            _positive("command_timeout", self.command_timeout)
        size = self.max_value_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"max_value_size must be an int of bytes, not {size!r}")
        _positive("max_value_size", size)
        check_retention(self.retention)

    @property
    def reconnect_backoff(self) -> float:
        """The longest wait between reconnection attempts: well under the lease, so that a live
        executor is back before a restart of PostgreSQL could make it look gone."""
        return min(1.0, self.executor_lease / 6)

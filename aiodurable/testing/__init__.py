"""Testing durable workflows: a pytest plugin, a time-skipping clock, crash and replay checks.

- :class:`TestClock` runs a runtime on virtual time: ``await clock.advance(timedelta(days=30))``
  fires the durable sleeps, timeouts, deadlines and retry backoffs that fall due, in order,
  without waiting. :func:`clock_of` returns a runtime's test clock.
- :func:`crash_after` crashes a runtime right after a step's checkpoint and recovers it;
  :func:`check_replay` checks a recorded workflow against its current code.
- :func:`hooks` returns a runtime's :class:`TestingHooks`: what tests may see and do of its
  internals (its store and notifier, the workflows it runs, a crash, a hook on checkpoints).
- :class:`MemoryBackend` keeps the journal in memory: ``Runtime(backend=MemoryBackend())`` runs
  workflows with no PostgreSQL, for fast tests of workflow logic; a second runtime opened on the
  same backend object finds the first one's workflows, as a restarted process would.
- The pytest plugin (``-p aiodurable.testing``, or ``pytest_plugins = ["aiodurable.testing"]``
  in the root ``conftest.py``) provides ``durable_database_url`` (session: an embedded
  PostgreSQL, or ``AIODURABLE_TEST_DATABASE_URL``), ``durable_schema``, ``durable_clock``,
  ``durable_runtime_factory`` and ``durable_runtime``, and the ``durable`` marker.
"""

from __future__ import annotations

from .._engine._hooks import TestingHooks
from .._runtime import hooks
from ._clock import ClockMismatchError, TestClock, clock_of
from ._crash import CrashPointNotReached, check_replay, crash_after
from ._memory import MemoryBackend

__all__ = [
    "ClockMismatchError",
    "CrashPointNotReached",
    "MemoryBackend",
    "TestClock",
    "TestingHooks",
    "check_replay",
    "clock_of",
    "crash_after",
    "hooks",
]

try:
    import pytest as _pytest  # noqa: F401  # the plugin needs pytest; the helpers do not
except ImportError:  # pragma: no cover - pytest is a test dependency
    pass
else:
    from ._plugin import (
        RuntimeFactory,
        durable_clock,
        durable_database_url,
        durable_runtime,
        durable_runtime_factory,
        durable_schema,
        pytest_configure,
    )

    # The plugin's class, hooks and fixtures: pytest finds the fixtures in this module.
    __all__ += [
        "RuntimeFactory",
        "durable_clock",
        "durable_database_url",
        "durable_runtime",
        "durable_runtime_factory",
        "durable_schema",
        "pytest_configure",
    ]

for _name in (
    "ClockMismatchError",
    "CrashPointNotReached",
    "MemoryBackend",
    "TestClock",
    "TestingHooks",
    "hooks",
):
    globals()[_name].__module__ = __name__
del _name

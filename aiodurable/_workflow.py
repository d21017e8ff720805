"""``@workflow()``: the decorator, the registry of workflow functions, the application version.

The registry also holds workflows of aiodurable's own making: the one-step workflow of each
``@step`` function (named ``aiodurable.step:...``), by which a queue runs a step.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from ._current import call_workflow
from ._validate import check_id

__all__ = [
    "STEP_WORKFLOW_PREFIX",
    "WorkflowDef",
    "application_version",
    "check_id",
    "definition_of",
    "lookup",
    "queueable",
    "register_internal",
    "registered_names",
    "workflow",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_RECOVERY_ATTEMPTS = 100

STEP_WORKFLOW_PREFIX = "aiodurable.step:"
"""The names of the one-step workflows that run ``@step`` functions given to a queue."""


@dataclass(eq=False, slots=True)
class WorkflowDef:
    """A registered workflow function."""

    name: str
    fn: Callable[..., Coroutine[Any, Any, Any]]
    max_recovery_attempts: int
    source: str = field(repr=False, default="")


# The registry of decorated functions, filled at import time as a program's modules are loaded,
# like the module table itself. Runtimes only read it; re-decorating a name replaces the entry.
_registry: dict[str, WorkflowDef] = {}
# aiodurable's own workflows (one per step function, registered as the step is decorated, so any
# runtime that has the step can dispatch and recover its one-step workflows): run like the
# user's, but outside the application version (see application_version).
_internal: dict[str, WorkflowDef] = {}


def registered_names() -> list[str]:
    """The names of every registered workflow, aiodurable's own included."""
    return [*_registry, *_internal]


def lookup(name: str) -> WorkflowDef | None:
    """The workflow registered under ``name``."""
    return _registry.get(name) or _internal.get(name)


def register_internal(wdef: WorkflowDef) -> None:
    """Register a workflow of aiodurable's own making (left out of the application version)."""
    _internal[wdef.name] = wdef


def queueable(fn: object) -> WorkflowDef:
    """What a queue runs for ``fn``: a workflow's definition, or the one-step workflow of a
    ``@step`` function; TypeError for anything else."""
    wdef = getattr(fn, "__aiodurable_step_workflow__", None)
    if isinstance(wdef, WorkflowDef):
        return wdef
    if not isinstance(getattr(fn, "__aiodurable_workflow__", None), WorkflowDef):
        raise TypeError(
            f"{fn!r} is neither a workflow nor a step; decorate it with @aiodurable.workflow()"
            " (or with @aiodurable.step(), to enqueue it as a one-step workflow)"
        )
    return definition_of(fn)


def definition_of(fn: object) -> WorkflowDef:
    """The definition behind a function decorated with ``@workflow()``; TypeError otherwise."""
    wdef = getattr(fn, "__aiodurable_workflow__", None)
    if not isinstance(wdef, WorkflowDef):
        raise TypeError(
            f"{fn!r} is not a workflow; decorate it with @aiodurable.workflow() to start it durably"
        )
    return wdef


def stable_module_name(module: str) -> str:
    """The importable name of ``module``, the same whichever way the program was launched.

    Code run as ``python app.py`` or ``python -m app`` lives in ``__main__``, while ``uvicorn
    app:api`` imports it as ``app``: a workflow's default name must not follow the launcher, or
    workflows started under one would never be recovered under the other. For ``__main__`` this
    is the name ``-m`` was given, else the dotted path of the script from the outermost folder of
    its package (``pkg/app.py`` beside ``pkg/__init__.py`` gives ``pkg.app``, a lone ``app.py``
    gives ``app``). Only code with no file at all (``python -c``, a REPL) stays ``__main__``.
    """
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    spec_name = getattr(spec, "name", None)
    if isinstance(spec_name, str) and spec_name:
        return spec_name
    filename = getattr(main, "__file__", None)
    if not isinstance(filename, str) or not filename.endswith(".py"):
        return module
    path = Path(filename).resolve()
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts) or module


def _source_of(fn: Callable[..., object]) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        return repr(code.co_code) if code is not None else fn.__qualname__


def application_version() -> str:
    """A hash of the source of every registered workflow function.

    Recovery only runs a workflow on the application version that started it, because a
    workflow replayed on changed code may take a different path. ``AIODURABLE_APP_VERSION`` (or
    ``Runtime(app_version=)``) overrides it.

    aiodurable's own workflows are left out: a step's one-step workflow is aiodurable's code, the
    same in every version (call the step once), and the step's body, like every step's, was
    never part of the hash (its journaled outcome is what a replay sees). So decorating steps, or
    adding one, leaves a program's application version as it was.
    """
    digest = hashlib.sha256()
    for name in sorted(_registry):
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(_registry[name].source.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def workflow(
    *, name: str | None = None, max_recovery_attempts: int = DEFAULT_MAX_RECOVERY_ATTEMPTS
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Make an ``async def`` function a durable workflow.

    Calling it runs it durably under a new workflow ID (or the one set with
    :func:`aiodurable.set_workflow_id`) and returns its result; called from another workflow it
    runs as that workflow's child. ``name`` is the identity recorded in the database (default
    ``module:qualname``, with the module named the same under ``python app.py``, ``python -m
    app`` and ``uvicorn app:api``; see :func:`stable_module_name`); pin it when the function may
    move or be renamed while workflows are in flight. A workflow recovered more than
    ``max_recovery_attempts`` times is marked ``MAX_RECOVERY_ATTEMPTS_EXCEEDED``.
    """
    if name is not None:
        check_id("workflow name", name)
    if (
        isinstance(max_recovery_attempts, bool)
        or not isinstance(max_recovery_attempts, int)
        or max_recovery_attempts < 0
    ):
        raise ValueError(
            f"max_recovery_attempts must be an int >= 0, not {max_recovery_attempts!r}"
        )

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@workflow() decorates an async def function, and {fn!r} is not one;"
                " write it as `async def`"
            )
        wdef = WorkflowDef(
            name=name or f"{stable_module_name(fn.__module__)}:{fn.__qualname__}",
            fn=fn,
            max_recovery_attempts=max_recovery_attempts,
            source=_source_of(fn),
        )

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
            return call_workflow(wdef, args, kwargs)

        call.__aiodurable_workflow__ = wdef  # type: ignore[attr-defined]  # our marker attribute
        _registry[wdef.name] = wdef
        return call

    return decorate

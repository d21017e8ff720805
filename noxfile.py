"""Developer sessions: ``nox -s tests``, ``lint``, ``typing``, ``examples``, ``bench``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typing"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite against a real PostgreSQL (embedded unless AIODURABLE_TEST_DATABASE_URL)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict over the package, tests, examples, bench and this file."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def examples(session: nox.Session) -> None:
    """Run the examples on the embedded PostgreSQL."""
    session.install("-e", ".[uvloop]")
    session.run("python", "examples/hello.py")


@nox.session
def bench(session: nox.Session) -> None:
    """aiodurable, DBOS Transact and a plain asyncpg baseline, side by side (pass --smoke for a
    tiny run, --only W1,W3, --json PATH, --png PATH)."""
    session.install("-e", ".[uvloop]", "dbos", "matplotlib")
    session.run("python", "bench/run.py", *session.posargs)

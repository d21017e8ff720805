"""The entry points that pick uvloop when it is installed (the CLI and ``examples/hello.py``)
report a failure with its own traceback, not chained to uvloop's absence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def without_uvloop(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import uvloop`` fails as it does where uvloop is not installed
    (it is in the test environment): a module of that name, first on the path, raising the same
    error."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'uvloop'\", name='uvloop')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIODURABLE_")}
    env["PYTHONPATH"] = str(shadow)
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def _assert_not_chained_to_uvloop(stderr: str) -> None:
    assert "During handling of the above exception" not in stderr, stderr
    assert "uvloop" not in stderr, stderr


def test_a_failing_command_is_not_chained_to_uvloop(
    without_uvloop: dict[str, str], tmp_path: Path
) -> None:
    """A command that fails with an uncaught error shows that error alone, without uvloop."""
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    args = ["-m", "aiodurable._cli", "postgres", "start", "--data-dir", f"{not_a_folder}/data"]
    done = _run(args, without_uvloop)
    assert done.returncode == 1
    assert str(not_a_folder) in done.stderr  # the real problem is reported
    _assert_not_chained_to_uvloop(done.stderr)


def test_a_failing_hello_is_not_chained_to_uvloop(
    without_uvloop: dict[str, str], tmp_path: Path
) -> None:
    """``examples/hello.py`` run against a server that is not there fails with
    ``DatabaseUnavailable`` alone, without uvloop."""
    env = {**without_uvloop, "AIODURABLE_DATABASE_URL": f"postgresql:///none?host={tmp_path}"}
    done = _run(["examples/hello.py"], env)
    assert done.returncode == 1
    assert "aiodurable.DatabaseUnavailable: cannot connect" in done.stderr, done.stderr
    _assert_not_chained_to_uvloop(done.stderr)

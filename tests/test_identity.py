"""Workflow identities that do not depend on how the program was launched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

APP = """
import aiodurable
from aiodurable._workflow import application_version, registered_names


@aiodurable.workflow()
async def checkout(order: str) -> str:
    return order


def report() -> None:
    names = [n for n in registered_names() if n.endswith(":checkout")]
    print(names, application_version())


if __name__ == "__main__":
    report()
"""


def _identity(cwd: Path, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def test_a_script_run_as_file_module_or_import_records_one_name(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    as_file = _identity(tmp_path, "app.py")
    assert as_file.startswith("['app:checkout'] "), as_file
    assert _identity(tmp_path, "-m", "app") == as_file
    assert _identity(tmp_path, "-c", "import app; app.report()") == as_file  # as uvicorn app:api


@pytest.mark.parametrize("launch", [("shop/api.py",), ("-m", "shop.api")])
def test_a_module_of_a_package_is_named_by_its_import_path(
    tmp_path: Path, launch: tuple[str, ...]
) -> None:
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "api.py").write_text(APP)
    imported = _identity(tmp_path, "-c", "import shop.api; shop.api.report()")
    assert imported.startswith("['shop.api:checkout'] "), imported
    assert _identity(tmp_path, *launch) == imported

"""Versioned schema migrations.

Each migration is a SQL file ``NNNN_name.sql`` in this folder; ``{schema}`` in it stands for the
runtime's schema. Migrations only ever add: a released file is never edited.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["migrations"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str]]:
    """Every migration as ``(version, sql template)``, in version order."""
    found: list[tuple[int, str]] = []
    for entry in resources.files(__name__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"aiodurable's migrations are not numbered 1..n: {versions}")
    return found

"""Recorded values as the console shows them: decoded when small, clipped always.

A page must stay small whatever the database holds, and must not do work in proportion to a huge
value: a value over :data:`DECODE_LIMIT` bytes is never decoded or pretty-printed; the page shows
its first :data:`VALUE_LIMIT` bytes (JSON is text) with a note saying so. A decoded value whose
indented text is longer than :data:`VALUE_LIMIT` characters is clipped the same way. Error
records are clipped to the limits of :mod:`aiodurable._error_bounds`, so records written before
those limits existed show the same as new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._engine import Engine
from .._error_bounds import MESSAGE_LIMIT, clip_text, clip_traceback
from .._exceptions import SerializationError
from .._serde import error_record
from ._render import Value, pretty

__all__ = ["DECODE_LIMIT", "VALUE_LIMIT", "ErrorView", "error_view", "shown"]

DECODE_LIMIT = 64 * 1024
"""The largest recorded value, in bytes, that a page decodes and indents."""
VALUE_LIMIT = 16 * 1024
"""Characters of one value that a page shows."""


def shown(
    rt: Engine, fmt: str, data: bytes | None, *, clipped: bool = False, limit: int = VALUE_LIMIT
) -> Value:
    """A recorded value (``clipped``: ``data`` is only its start) as a page shows it, in at most
    ``limit`` characters."""
    if data is None:
        return Value("null")
    if clipped or len(data) > DECODE_LIMIT:
        if fmt != "json":
            size = f"over {len(data):,}" if clipped else f"{len(data):,}"
            return Value("", f"a value of {size} bytes in format {fmt!r}, too large to show")
        size = "" if clipped else f" of {len(data):,}"
        return Value(
            data[:limit].decode("utf-8", "replace"), f"the first {limit:,}{size} bytes, not decoded"
        )
    try:
        text = pretty(rt.serializer_for(fmt).loads(data, None))
    except (SerializationError, ValueError, TypeError) as exc:
        raw = data[:4096].decode("utf-8", "replace") if fmt == "json" else ""
        return Value(raw, f"not decoded: {clip_text(str(exc), 500)}")
    if len(text) > limit:
        return Value(text[:limit], f"the first {limit:,} of {len(text):,} characters")
    return Value(text)


@dataclass(frozen=True, slots=True)
class ErrorView:
    """A recorded exception as a page shows it."""

    type: str
    message: str
    traceback: str

    @property
    def short(self) -> str:
        """``Type: message`` with the type's module left out."""
        return f"{self.type.rpartition(':')[2]}: {self.message}"


def error_view(data: bytes) -> ErrorView:
    """The type, message and traceback of an error record, clipped."""
    record = error_record(data)
    return ErrorView(
        clip_text(record.type, 300),
        clip_text(record.message, MESSAGE_LIMIT),
        clip_traceback(record.traceback),
    )

"""How big a recorded exception may get.

An exception is recorded as its message, its traceback text, and its arguments and attributes
(so that it can be rebuilt as its own type). A message of 5 MB used to be stored three times over,
whatever ``max_value_size`` said. Now every record is at most :data:`ERROR_RECORD_LIMIT` bytes:

- the message keeps its first :data:`MESSAGE_LIMIT` characters;
- each traceback line keeps its first :data:`LINE_LIMIT` characters (the last line repeats the
  message), and a traceback longer than :data:`TRACEBACK_LIMIT` keeps its first quarter and its
  end, where the frame that raised is;
- string arguments and attributes are clipped like the message, so a clipped ``ValueError``
  still comes back as a ``ValueError``;
- if the record is still too big, the attributes go, then the arguments (the exception then comes
  back as `WorkflowFailed`), then the texts are halved until it fits.

Clipped text ends with a marker saying how long it was, and the record carries
``"truncated": true``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "ERROR_RECORD_LIMIT",
    "LINE_LIMIT",
    "MESSAGE_LIMIT",
    "TRACEBACK_LIMIT",
    "bounded_record",
    "clip_values",
]

ERROR_RECORD_LIMIT = 64 * 1024
"""The most bytes one encoded exception record takes."""
MESSAGE_LIMIT = 8 * 1024
"""Characters of an exception's message (and of each string argument) that are kept."""
LINE_LIMIT = 2 * 1024
"""Characters of each traceback line that are kept."""
TRACEBACK_LIMIT = 32 * 1024
"""Characters of a traceback that are kept."""


def clip_text(text: str, limit: int) -> str:
    """``text`` itself if it has at most ``limit`` characters, else its start and a marker."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [truncated: {len(text):,} characters in all]"


def clip_traceback(text: str, limit: int = TRACEBACK_LIMIT, line_limit: int = LINE_LIMIT) -> str:
    """A traceback with each line clipped, then its middle cut out if it is still too long."""
    if len(text) > line_limit:
        text = "\n".join(clip_text(line, line_limit) for line in text.split("\n"))
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n… [{cut:,} characters of traceback cut] …\n{text[-tail:]}"


def clip_values(values: object, limit: int = MESSAGE_LIMIT) -> object:
    """The strings in a list of arguments, or a dict of attributes, clipped to ``limit``."""
    if isinstance(values, list):
        return [clip_text(v, limit) if isinstance(v, str) else v for v in values]
    if isinstance(values, dict):
        return {k: clip_text(v, limit) if isinstance(v, str) else v for k, v in values.items()}
    return values


def _encodes(value: object, dumps: Callable[[object], bytes]) -> bool:
    try:
        dumps(value)
    except Exception:
        return False
    return True


def _printable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def bounded_record(
    record: dict[str, object],
    dumps: Callable[[object], bytes],
    limit: int = ERROR_RECORD_LIMIT,
) -> bytes:
    """Encode an exception record (``type``, ``message``, ``traceback``, ``args``, ``state``)
    with ``dumps`` in at most ``limit`` bytes, clipping as the module docstring says; ``args``
    and ``state`` become None when ``dumps`` cannot encode them."""
    record = dict(record)
    message = str(record.get("message", ""))
    trace = str(record.get("traceback", ""))
    clipped = clip_text(message, MESSAGE_LIMIT)
    clipped_trace = clip_traceback(trace)
    truncated = clipped != message or clipped_trace != trace
    record["message"], record["traceback"] = clipped, clipped_trace
    for key in ("args", "state"):  # kept only if JSON can hold them
        if record.get(key) is not None:
            shorter = clip_values(record[key])
            truncated = truncated or shorter != record[key]
            record[key] = shorter if _encodes(shorter, dumps) else None
    text_limit = MESSAGE_LIMIT
    while True:
        if truncated:
            record["truncated"] = True
        try:
            data = dumps(record)
        except Exception:  # text JSON refuses (lone surrogates): keep what can be kept
            record["message"] = _printable(str(record["message"]))
            record["traceback"] = _printable(str(record["traceback"]))
            data = dumps(record)
        if len(data) <= limit or text_limit == 0:  # (only a limit under ~300 bytes ends so)
            return data
        truncated = True
        if record.get("state") is not None:
            record["state"] = None
        elif record.get("args") is not None:
            record["args"] = None
        else:
            text_limit //= 2
            record["message"] = clip_text(message, text_limit)
            record["traceback"] = clip_traceback(trace, 4 * text_limit, max(text_limit // 4, 1))
            if text_limit == 0:
                record["type"] = clip_text(str(record.get("type", "")), 200)

"""Value validation: one place for the limits PostgreSQL puts on what aiodurable writes.

Every value is checked when the call that carries it is made, before anything joins a batch
(group commit): a value PostgreSQL would refuse would otherwise fail the statement, and with it
every other caller's write in that batch.

The limits, and why:

- **Text keys** (workflow IDs, names, topics, event keys, idempotency and deduplication IDs,
  queue names, step names): a non-empty ``str`` that is valid UTF-8 (no lone surrogates, as
  ``json.loads`` makes of ``"\\ud800"``), without NUL (PostgreSQL text cannot hold it), and at
  most :data:`MAX_KEY_BYTES` bytes in UTF-8. Two such keys share an index row (``(workflow_id,
  key)``, ``(destination_id, topic)``, ``(queue_name, deduplication_id)``...), and an index row
  may take at most about 2,700 bytes; 1,000 bytes each leaves room for two. Two keys also share a
  notification, whose payload PostgreSQL caps at 8,000 bytes after JSON escaping, where a control
  character takes 6 bytes (``\\u0001``): a key may take at most :data:`MAX_KEY_NOTIFY_BYTES`
  bytes written that way.
- **Durations** (timeouts): a finite number of seconds up to :data:`MAX_SECONDS`, so that a
  deadline fits the tables' bigint milliseconds; ``float("inf")`` means "no limit" and is
  returned as None.
- **Priorities**: a PostgreSQL ``integer`` (32 bits).
- **Times** (POSIX seconds): finite and within bigint milliseconds.
"""

from __future__ import annotations

import json
import math

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "MAX_KEY_BYTES",
    "MAX_KEY_NOTIFY_BYTES",
    "MAX_SECONDS",
    "check_epoch",
    "check_id",
    "check_priority",
    "check_text",
    "check_timeout",
]

MAX_KEY_BYTES = 1000
"""The most UTF-8 bytes a workflow ID, name, topic, key or other text key may take."""

MAX_KEY_NOTIFY_BYTES = 3900
"""The most bytes a text key may take once JSON-escaped (two fit an 8,000-byte notification)."""

MAX_SECONDS = 10_000_000_000.0
"""The longest finite timeout, in seconds (about 317 years); longer ones mean no limit."""

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

_SHOWN = 60  # characters of a refused value quoted in an error


def _shown(value: str) -> str:
    """``value`` quoted for an error message, clipped: a 4,000-byte ID is not echoed whole."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}... ({len(value):,} characters)"


def check_text(kind: str, value: object, *, empty: bool = False) -> str:
    """Validate a text key that PostgreSQL stores, indexes and notifies; ValueError otherwise.

    ``kind`` names it in errors ("workflow ID", "topic"...); ``empty`` allows ``""``.
    """
    if not isinstance(value, str):
        raise ValueError(f"a {kind} must be a string, not {type(value).__name__} {value!r:.80}")
    if not value and not empty:
        raise ValueError(f"a {kind} must be a non-empty string, not ''")
    try:
        size = len(value.encode())
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"a {kind} must be valid Unicode text, and {_shown(value)} holds a lone surrogate"
            f" (U+{ord(value[exc.start]):04X}) at index {exc.start}, which UTF-8 cannot encode;"
            " it typically comes from decoding bytes with errors='surrogateescape' or from a"
            " JSON '\\ud800' escape. Decode the text strictly, or encode such a value"
            " (base64, percent-encoding) before using it as a key"
        ) from None
    if "\x00" in value:
        raise ValueError(
            f"a {kind} must not contain NUL characters ('\\x00', at index {value.index(chr(0))}"
            f" of {_shown(value)}), which PostgreSQL text cannot store; remove them or encode"
            " the value (base64, percent-encoding)"
        )
    if size > MAX_KEY_BYTES:
        raise ValueError(
            f"a {kind} may take at most {MAX_KEY_BYTES:,} bytes in UTF-8, and {_shown(value)}"
            f" takes {size:,}; shorten it, or use a digest of a long key (for example"
            " hashlib.sha256(key.encode()).hexdigest())"
        )
    # Only control characters grow much in a JSON notification: test for them before paying
    # for the exact count.
    if not value.isprintable():
        escaped = len(json.dumps(value, ensure_ascii=False).encode()) - 2
        if escaped > MAX_KEY_NOTIFY_BYTES:
            raise ValueError(
                f"a {kind} may take at most {MAX_KEY_NOTIFY_BYTES:,} bytes written as JSON (as"
                f" PostgreSQL's notifications carry it, a control character as 6 bytes), and"
                f" {_shown(value)} takes {escaped:,}; remove the control characters or encode"
                " the value (base64, percent-encoding)"
            )
    return value


def check_id(kind: str, value: object) -> str:
    """Validate a workflow ID, name, topic or key: :func:`check_text`, non-empty."""
    return check_text(kind, value)


def check_timeout(
    seconds: object, name: str = "a workflow timeout", *, zero: bool = False
) -> float | None:
    """A duration in seconds, checked: None for ``float("inf")`` (no limit), else a float.

    It must be a number (not a bool), not NaN, > 0 (>= 0 with ``zero``, for waits that may
    return at once) and at most :data:`MAX_SECONDS`, so that any deadline made of it fits the
    tables' bigint milliseconds. ``name`` says what it is in errors, e.g. ``"recv(timeout)"``.
    """
    bound = ">= 0" if zero else "> 0"
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(
            f"{name} must be a number of seconds {bound} (float('inf') for no limit),"
            f" not {seconds!r:.80}"
        )
    if seconds == math.inf:
        return None
    if seconds != seconds or seconds < 0 or (seconds == 0 and not zero):  # (NaN != NaN)
        raise ValueError(
            f"{name} must be a number of seconds {bound} (float('inf') for no limit),"
            f" not {seconds!r}"
        )
    if seconds > MAX_SECONDS:
        raise ValueError(
            f"{name} may be at most {MAX_SECONDS:,.0f} seconds (about 317 years), not"
            f" {seconds!r}; pass float('inf') (or None where allowed) for no limit"
        )
    return float(seconds)


def check_priority(value: object) -> int:
    """A queue priority: an int within PostgreSQL's ``integer``; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"priority must be an int, not {value!r:.80}")
    if not INT32_MIN <= value <= INT32_MAX:
        raise ValueError(
            f"priority must be an int from {INT32_MIN:,} to {INT32_MAX:,} (a 32-bit integer),"
            f" not {value:,}; lower values leave the queue first, so map a wider range onto"
            " this one"
        )
    return value


def check_epoch(kind: str, seconds: object) -> float:
    """A POSIX time in seconds that the tables can store as bigint milliseconds."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"a {kind} must be a POSIX time in seconds, not {seconds!r:.80}")
    # (An int too big for a float fails the range test without being converted.)
    if seconds != seconds or abs(seconds) * 1000 >= _INT64_MAX:
        raise ValueError(
            f"a {kind} must be a finite POSIX time within +/-{_INT64_MAX // 1000:,} seconds (it"
            f" is stored in milliseconds as a 64-bit integer), not {seconds!r}"
        )
    return float(seconds)

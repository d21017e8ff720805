"""``Reach``: what the operations open to callers outside a workflow need of whoever runs them.

``send``, ``get_event``, ``read_stream`` and the listings work the same from a runtime (an
:class:`~aiodurable._engine.Engine`) and from a :class:`~aiodurable.Client`, which has none of
an engine's executor parts: they take a ``Reach``, the few members both have. Called in a
workflow, they use that workflow's engine (``ctx.engine``) for anything more.
"""

from __future__ import annotations

from typing import Protocol

from ._clock import Clock
from ._engine._codec import Codec
from ._notify import Notifier
from ._serde import Serializer
from ._store import StoreProtocol

__all__ = ["Reach"]


class Reach(Protocol):
    """A store, a notifier, a clock and a codec: enough to send, wait for an event or a stream,
    and list workflows and steps."""

    @property
    def store(self) -> StoreProtocol:
        """The store its statements run on."""
        ...

    @property
    def notifier(self) -> Notifier:
        """The notifier its waits are woken by."""
        ...

    @property
    def clock(self) -> Clock:
        """The clock its deadlines are kept on."""
        ...

    @property
    def codec(self) -> Codec:
        """What encodes the values it writes and decodes those it reads."""
        ...

    @property
    def serializer(self) -> Serializer:
        """The serializer it records new values with."""
        ...

    def encode(self, value: object, *, what: str) -> bytes:
        """Encode a value to record; ``what`` names it in errors."""
        ...

    def serializer_for(self, fmt: str) -> Serializer:
        """The serializer of a recorded format."""
        ...

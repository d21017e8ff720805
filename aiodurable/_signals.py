"""The kinds of notification: one definition for the SQL that sends them and the code that reads.

The store's statements announce changes with ``pg_notify(channel, payload)`` on the channel
``<schema>_signal``. A payload is a JSON array whose first item is a :class:`Signal` and whose
other items are the key of what changed, for instance ``["w", "order-7", "SUCCESS"]``. A
notification signals and never carries data: whoever wakes re-reads the tables.
"""

from __future__ import annotations

import enum

__all__ = ["Signal"]


class Signal(enum.StrEnum):
    """The first item of a notification's key: what kind of thing changed."""

    WORKFLOW = "w"
    """A workflow's status was written (its start included). Key: ``(WORKFLOW, workflow_id,
    status)``. Waiters for a result and the console listen for it; a CANCELLED one stops the
    workflow wherever it runs."""

    MESSAGE = "m"
    """A message was queued for a workflow. Key: ``(MESSAGE, destination_id, topic)``; wakes
    that workflow's ``recv`` on that topic."""

    EVENT = "e"
    """A workflow set an event. Key: ``(EVENT, workflow_id, key)``; wakes ``get_event``
    readers of that key."""

    STREAM = "s"
    """A workflow wrote a value to a stream, or closed it. Key: ``(STREAM, workflow_id,
    key)``; wakes ``read_stream`` readers of that key (which also watch the workflow's status:
    its end ends the stream)."""

    CLAIMABLE = "x"
    """A PENDING workflow is assigned to no executor (a resumed one, or a gone executor's
    released to any live runtime of its version). Key: ``(CLAIMABLE, workflow_id)``; wakes every
    runtime's claim loop."""

    QUEUE = "q"
    """A queue may have room or work: a workflow was enqueued on it, or one of its workflows
    finished. Key: ``(QUEUE, queue_name)``; wakes that queue's dispatchers."""

    DEBOUNCE = "d"
    """A burst of debounced calls opened. Key: ``(DEBOUNCE,)``; wakes every
    runtime's debounce keeper, which sleeps until the next burst is due to close."""

    SCHEDULE = "c"
    """A schedule was created, changed, paused, resumed or deleted. Key: ``(SCHEDULE, name)``;
    wakes every runtime's scheduler, which re-reads the schedules."""

    RECONNECTED = "reconnected"
    """Sent by no statement: the notifier hands ``(RECONNECTED,)`` to its subscribers after its
    LISTEN connection was lost and restored, since notifications may have been missed meanwhile.
    """

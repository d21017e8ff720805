"""Log records that know their workflow: a filter adding the workflow ID and step name.

aiodurable logs through the standard :mod:`logging` module, on the ``aiodurable`` logger. That
logger has a :class:`logging.NullHandler`, so the library prints nothing unless the application
configures logging, and a :class:`WorkflowContextFilter`, so each of its records carries
``record.workflow_id`` and ``record.step_name`` (``None`` outside a workflow, or outside a step).

To show workflow IDs in every log line, the application's own included, put the filter on the
handler (a handler's filters see the records of every logger, a logger's only its own):

.. code-block:: python

    import logging
    import aiodurable

    handler = logging.StreamHandler()
    handler.addFilter(aiodurable.WorkflowContextFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(workflow_id)s %(step_name)s] %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("aiodurable").setLevel(logging.INFO)  # the runtime's own INFO records

A log call in a workflow, or in a step it calls, then prints e.g. ``[order-42 charge_card]``, and
``[None None]`` elsewhere.
"""

from __future__ import annotations

import logging

from ._context import current_step_name, current_workflow

__all__ = ["LOGGER_NAME", "WorkflowContextFilter", "install"]

LOGGER_NAME = "aiodurable"


class WorkflowContextFilter(logging.Filter):
    """A logging filter that sets ``record.workflow_id`` and ``record.step_name`` from the code
    that logged: the running workflow's ID and the running step's name, or ``None``.

    It drops nothing. Attributes a record already has (given with ``extra=``, or set by this
    filter on an earlier pass) are kept, so a record handed to another task or thread (a
    ``QueueHandler``) keeps the values of the code that logged it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the attributes; always keep the record."""
        if not hasattr(record, "workflow_id"):
            ctx = current_workflow()
            record.workflow_id = None if ctx is None else ctx.workflow_id
        if not hasattr(record, "step_name"):
            record.step_name = current_step_name()
        return True


def install(logger: logging.Logger | None = None) -> logging.Logger:
    """Give the ``aiodurable`` logger (or ``logger``) a :class:`WorkflowContextFilter` and a
    :class:`logging.NullHandler`, once; return it."""
    target = logger or logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, WorkflowContextFilter) for f in target.filters):
        target.addFilter(WorkflowContextFilter())
    if not any(isinstance(h, logging.NullHandler) for h in target.handlers):
        target.addHandler(logging.NullHandler())
    return target


install()

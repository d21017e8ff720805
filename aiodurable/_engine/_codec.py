"""``Codec``: values in and out of the journal, with the runtime's serializers and size bound.

Encoding checks a value before anything is written (it must serialize, within
``max_value_size``); decoding follows the workflow's annotations and the format recorded with
each value, and builds the public snapshots (:class:`WorkflowInfo`, :class:`StepInfo`).
"""

from __future__ import annotations

from typing import Any

from .._exceptions import SerializationError, WorkflowCancelled, WorkflowFailed
from .._models import StepInfo, WorkflowInfo, WorkflowStatus, from_timestamp
from .._records import StepRow, WorkflowRow
from .._serde import (
    JsonSerializer,
    Serializer,
    decode,
    decode_exception,
    decode_inputs,
    encode,
    encode_inputs,
    return_hint,
)
from .._workflow import WorkflowDef, lookup

__all__ = ["Codec"]


def _undecoded(what: str, exc: SerializationError) -> str:
    """Why a recorded value was not decoded, for ``decode_error``, naming ``what`` it was."""
    text = str(exc)
    return text if text.startswith("cannot decode") else f"cannot decode {what}: {text}"


class Codec:
    """Encodes with ``serializer`` within ``max_value_size``; decodes JSON and ``serializer``'s
    format."""

    __slots__ = ("_serializers", "max_value_size", "serializer")

    OWNER = "Runtime"
    """Whose ``max_value_size`` bounds the values: named in the error that says how to raise it."""

    def __init__(self, serializer: Serializer, max_value_size: int) -> None:
        self.serializer: Serializer = serializer
        self.max_value_size: int = max_value_size
        self._serializers: dict[str, Serializer] = {"json": JsonSerializer()}
        self._serializers[serializer.name] = serializer

    # -- encoding ----------------------------------------------------------------------------

    def encode(self, value: object, *, what: str) -> bytes:
        """Encode a value to record; :class:`SerializationError` naming ``what`` if it cannot be
        encoded or exceeds ``max_value_size``, before anything is written."""
        return self._bounded(encode(self.serializer, value, what=what), what)

    def encode_inputs(
        self, wdef: WorkflowDef, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> bytes:
        """Encode a workflow's arguments to record, within ``max_value_size``."""
        what = f"the inputs of workflow {wdef.name!r}"
        data = encode_inputs(self.serializer, wdef.fn, args, kwargs, what=f"workflow {wdef.name!r}")
        return self._bounded(data, what)

    def _bounded(self, data: bytes, what: str) -> bytes:
        if len(data) > self.max_value_size:
            raise SerializationError(
                f"{what} takes {len(data):,} bytes encoded, over this {self.OWNER.lower()}'s"
                f" max_value_size of {self.max_value_size:,}; store large data elsewhere and pass"
                f" a reference, or raise {self.OWNER}(max_value_size=)"
            )
        return data

    # -- decoding ----------------------------------------------------------------------------

    def serializer_for(self, fmt: str) -> Serializer:
        """The serializer for a row's recorded format."""
        serializer = self._serializers.get(fmt)
        if serializer is None:
            raise SerializationError(
                f"a value was recorded in format {fmt!r}, which this runtime does not decode;"
                f" open the Runtime with serializer= set to a {fmt!r} serializer"
            )
        return serializer

    def replay(self, workflow_id: str, entry: StepRow, hint: object) -> Any:
        """The recorded outcome of a journal entry: its output decoded, or its exception raised."""
        if entry.error is not None:
            raise decode_exception(entry.error, workflow_id=workflow_id)
        what = f"the recorded result of {entry.name!r} in workflow {workflow_id!r}"
        return self._value(entry.format, entry.output, hint, what)

    def _value(self, fmt: str, data: bytes | None, hint: object, what: str) -> Any:
        """A recorded value (None when nothing was recorded), decoded per ``hint``."""
        if data is None:
            return None
        return decode(self.serializer_for(fmt), data, hint, what=what)

    def result_of(self, row: WorkflowRow, hint: object) -> object:
        """The outcome of a finished workflow's row: its result decoded, or its exception
        raised (:class:`WorkflowCancelled`, :class:`WorkflowFailed` for the other ends)."""
        status = row.status
        if status == "SUCCESS":
            what = f"the result of workflow {row.workflow_id!r}"
            return self._value(row.format, row.output, hint, what)
        if status == "ERROR" and row.error is not None:
            raise decode_exception(row.error, workflow_id=row.workflow_id)
        if status == "CANCELLED":
            raise WorkflowCancelled(row.workflow_id)
        raise WorkflowFailed(
            row.workflow_id,
            status,
            f"workflow {row.workflow_id!r} ended as {status}; resume it with resume_workflow()",
        )

    def decode_inputs(
        self, row: WorkflowRow, wdef: WorkflowDef
    ) -> tuple[tuple[object, ...], dict[str, object]]:
        """A recorded workflow's arguments, to run it with."""
        return decode_inputs(self.serializer_for(row.format), wdef.fn, row.inputs or b"")

    # -- snapshots ---------------------------------------------------------------------------

    def info(self, row: WorkflowRow, *, load_data: bool = True) -> WorkflowInfo:
        """Build the public snapshot of a workflow row, decoding per the workflow's annotations.

        A value that cannot be decoded is left None and explained in ``decode_error``: one such
        row must not fail a whole listing (``get_result()`` still raises for it)."""
        wdef = lookup(row.name)
        inputs: object = None
        output: object = None
        error: BaseException | None = None
        problems: list[str] = []
        if load_data:
            if row.inputs is not None:
                try:
                    inputs = self._shown_inputs(row, wdef)
                except SerializationError as exc:
                    problems.append(_undecoded("the inputs", exc))
            if row.status == "SUCCESS" and row.output is not None:
                try:
                    output = self.result_of(row, None if wdef is None else return_hint(wdef.fn))
                except SerializationError as exc:
                    problems.append(_undecoded("the output", exc))
            if row.error is not None:
                error = decode_exception(row.error, workflow_id=row.workflow_id)
        created = from_timestamp(row.created_at)
        updated = from_timestamp(row.updated_at)
        assert created is not None and updated is not None
        return WorkflowInfo(
            workflow_id=row.workflow_id,
            status=WorkflowStatus(row.status),
            name=row.name,
            inputs=inputs,
            output=output,
            error=error,
            created_at=created,
            updated_at=updated,
            app_version=row.app_version,
            executor_id=row.executor_id,
            recovery_attempts=row.recovery_attempts,
            queue_name=row.queue_name,
            parent_workflow_id=row.parent_workflow_id,
            decode_error="; ".join(problems) or None,
            partition_key=row.partition_key,
        )

    def _shown_inputs(self, row: WorkflowRow, wdef: WorkflowDef | None) -> object:
        assert row.inputs is not None
        serializer = self.serializer_for(row.format)
        if wdef is None:
            what = f"the inputs of workflow {row.workflow_id!r}"
            return decode(serializer, row.inputs, None, what=what)
        args, kwargs = decode_inputs(serializer, wdef.fn, row.inputs)
        return {"args": list(args), "kwargs": kwargs}

    def step_info(self, workflow_id: str, entry: StepRow) -> StepInfo:
        """Build the public snapshot of a journal entry; an output that cannot be decoded is
        left None and explained in ``decode_error``."""
        output: object = None
        error: BaseException | None = None
        problem: str | None = None
        if entry.error is not None:
            error = decode_exception(entry.error, workflow_id=workflow_id)
        elif entry.output is not None:
            what = f"the output of {entry.name!r} (function ID {entry.function_id})"
            try:
                output = decode(self.serializer_for(entry.format), entry.output, None, what=what)
            except SerializationError as exc:
                problem = _undecoded(what, exc)
        started = from_timestamp(entry.started_at)
        completed = from_timestamp(entry.completed_at)
        assert started is not None and completed is not None
        return StepInfo(
            function_id=entry.function_id,
            name=entry.name,
            output=output,
            error=error,
            child_workflow_id=entry.child_workflow_id,
            started_at=started,
            completed_at=completed,
            decode_error=problem,
        )

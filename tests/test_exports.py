"""The package's public face: a sorted, complete __all__ of objects that live in `aiodurable`."""

from __future__ import annotations

import inspect

import aiodurable

# Names the design's public contract lists; each must stay exported.
CONTRACT = {
    "Client",
    "Debouncer",
    "DuplicateWorkflowError",
    "DurableError",
    "MaxRetriesExceeded",
    "NonDeterminismError",
    "Queue",
    "RateLimit",
    "Retry",
    "Runtime",
    "SerializationError",
    "StepInfo",
    "WorkflowCancelled",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowStatus",
    "as_completed",
    "cancel_workflow",
    "close_stream",
    "create_schedule",
    "current_workflow_id",
    "delete_schedule",
    "deprecate_patch",
    "fork_workflow",
    "garbage_collect",
    "get_event",
    "list_schedules",
    "list_steps",
    "list_workflows",
    "patch",
    "pause_schedule",
    "read_stream",
    "recv",
    "restart_workflow",
    "resume_schedule",
    "resume_workflow",
    "retrieve_workflow",
    "scheduled",
    "send",
    "set_event",
    "set_workflow_id",
    "sleep",
    "start_workflow",
    "step",
    "transaction",
    "wait_first",
    "workflow",
    "write_stream",
}


def test_all_is_sorted_and_unique() -> None:
    """__all__ is sorted and has no duplicates."""
    assert list(aiodurable.__all__) == sorted(set(aiodurable.__all__))


def test_all_covers_the_contract_and_every_public_name() -> None:
    """Every contract name is exported, and every public attribute is in __all__."""
    assert set(aiodurable.__all__) >= CONTRACT
    public = {
        name
        for name, value in vars(aiodurable).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(aiodurable.__all__)


def test_public_objects_report_the_package_as_their_module() -> None:
    """Classes and functions exported from private modules say they live in `aiodurable`."""
    for name in aiodurable.__all__:
        value = getattr(aiodurable, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "aiodurable", name


def test_errors_derive_from_durable_error() -> None:
    """Every error the contract names is a DurableError; WorkflowNotFound is a LookupError too."""
    for name in (
        "WorkflowNotFound",
        "SerializationError",
        "NonDeterminismError",
        "WorkflowFailed",
        "WorkflowCancelled",
        "MaxRetriesExceeded",
        "DuplicateWorkflowError",
    ):
        assert issubclass(getattr(aiodurable, name), aiodurable.DurableError), name
    assert issubclass(aiodurable.WorkflowNotFound, LookupError)
    assert issubclass(aiodurable.ScheduleNotFound, aiodurable.DurableError)
    assert issubclass(aiodurable.ScheduleNotFound, LookupError)
    assert issubclass(aiodurable.WorkflowStatus, str)

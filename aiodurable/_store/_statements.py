"""The statements of one schema, by name: what the store's parts run.

:meth:`Statements.for_schema` collects every SQL text (written in the ``_texts*`` modules)
against one schema's tables and its notification channel; the parts of the store only pick a
statement and pass its arguments (``$1``, ``$2``...).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .._records import WorkflowQuery
from ._texts import (
    OWNER,
    channel_for,
    connection_texts,
    console_texts,
    executor_texts,
    journal_texts,
    list_workflows,
    owner_literal,
    workflow_texts,
)
from ._texts_debounce import debounce_texts
from ._texts_messaging import messaging_texts
from ._texts_queues import queue_texts
from ._texts_retention import retention_texts
from ._texts_schedules import schedule_texts
from ._texts_streams import stream_texts

__all__ = ["Statements"]


@dataclass(frozen=True, slots=True)
class Statements:
    """The SQL texts of one schema, one field per statement (``$n`` are its arguments)."""

    schema: str
    channel: str
    # -- connections and migrations
    server_identity: str
    reserved_word: str
    migration_lock: str
    create_schema: str
    create_version_table: str
    schema_version: str
    record_version: str
    notify: str
    # -- workflows
    insert_workflow: str
    insert_workflows: str
    get_workflow: str
    finish: str
    finish_many: str
    set_status: str
    pending: str
    claim: str
    claim_unassigned: str
    upgrade_candidates: str
    adopt: str
    other_version_counts: str
    last_function_id: str
    resume: str
    fork_insert: str
    fork_copy_steps: str
    fork_copy_history: str
    fork_copy_events: str
    fork_notify: str
    # -- the journal
    journal: str
    journals: str
    owned: str
    owned_many: str
    record_step_unfenced: str
    record_step_fenced: str
    record_steps: str
    get_step: str
    get_steps: str
    # -- messages and events
    send_from_workflow: str
    send_once: str
    consume: str
    wait_deadline: str
    set_event: str
    get_event: str
    forget_auto_keys: str
    send_from_workflows: str
    send_many: str
    set_events: str
    consume_many: str
    # -- streams
    fork_copy_streams: str
    write_stream: str
    write_streams: str
    read_stream: str
    workflow_streams: str
    # -- queues
    enqueue: str
    enqueue_many: str
    deduplicated: str
    queue_lock: str
    queue_running: str
    queue_window: str
    dequeue_by_priority: str
    dequeue_by_age: str
    partition_loads: str
    dequeue_partitions: str
    queue_positions: str
    # -- executors
    heartbeat: str
    not_owned: str
    silent_executors: str
    take_over: str
    delete_executor: str
    release_executor: str
    try_lock_executor: str
    try_xact_lock_executor: str
    # -- the console's reads
    events: str
    messages: str
    workflow_briefs: str
    list_watermark: str
    workflow_watermark: str
    ranked_positions: str
    # -- schedules
    create_schedule: str
    declare_schedules: str
    list_schedules: str
    get_schedule: str
    pause_schedule: str
    resume_schedule: str
    advance_schedule: str
    delete_schedule: str
    # -- debouncing
    debounce_join: str
    debounce_discard: str
    debounce_close: str
    debounce_next: str
    # -- retention
    retention_nth: str
    collect_finished: str

    @classmethod
    def for_schema(cls, schema: str, *, owner: str | None = None) -> Statements:
        """Every statement against ``schema`` (a checked plain identifier), the fenced ones
        written for executor ``owner`` (its ID in them as a literal), or unfenced (None)."""
        s = schema
        ch = channel_for(s)
        texts = cls(
            schema=s,
            channel=ch,
            **connection_texts(s),
            **workflow_texts(s, ch),
            **journal_texts(s),
            **messaging_texts(s, ch),
            **stream_texts(s, ch),
            **queue_texts(s, ch),
            **executor_texts(s, ch),
            **console_texts(s),
            **schedule_texts(s, ch),
            **debounce_texts(s, ch),
            **retention_texts(s),
        )
        literal = owner_literal(owner)
        return cls(*(getattr(texts, f.name).replace(OWNER, literal) for f in fields(cls)))

    def list_workflows(self, query: WorkflowQuery) -> tuple[str, list[object]]:
        """The statement that lists the workflows matching ``query``, and its arguments."""
        return list_workflows(self.schema, query)

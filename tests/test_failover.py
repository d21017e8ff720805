"""Failover between executors: three runtime processes share a database; when one is killed,
the others take over its workflows once its lease runs out, and finish each exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import pytest

from .faults import LOG_ENV, check_run, poll
from .proc import Child

pytestmark = pytest.mark.anyio

LEASE, HEARTBEAT = 3.0, 0.5


async def test_killed_executors_workflows_finish_on_the_others_within_the_lease(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """SIGKILL of the executor running a batch of workflows: the two survivors take them over
    within the lease plus a few seconds and finish every one, running no completed step again
    (only the steps in flight at the kill may run twice)."""
    count, steps = 12, 40
    log = tmp_path / "executions"
    base = {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_APP_VERSION": "failover",
        "TEST_SCHEMA": schema,
        "FAILOVER_LEASE": str(LEASE),
        "FAILOVER_HEARTBEAT": str(HEARTBEAT),
        LOG_ENV: str(log),
    }
    children: list[Child] = []
    conn = await asyncpg.connect(database_url)
    try:
        for name in ("exec-b", "exec-c"):
            children.append(
                Child("failover_app.py", "serve", env={**base, "AIODURABLE_EXECUTOR_ID": name})
            )
            await children[-1].expect("READY")
        victim = Child(
            "failover_app.py",
            "start",
            str(count),
            str(steps),
            "0.05",
            env={**base, "AIODURABLE_EXECUTOR_ID": "exec-a"},
        )
        children.append(victim)
        await victim.expect("STARTED")
        # Kill it once every workflow is a few steps in.
        await poll(
            conn,
            f"SELECT count(DISTINCT workflow_id) = {count} FROM {schema}.steps"
            " WHERE function_id >= 3",
        )
        await victim.kill()
        killed = time.monotonic()
        done_before = await conn.fetchval(f"SELECT count(*) FROM {schema}.steps")
        assert done_before < count * steps, "the victim finished before it was killed"
        await poll(
            conn,
            f"SELECT count(*) = 0 FROM {schema}.workflows WHERE executor_id = 'exec-a'",
            timeout=LEASE + 10,
        )
        taken = time.monotonic() - killed
        await poll(
            conn,
            f"SELECT count(*) = {count} FROM {schema}.workflows WHERE status = 'SUCCESS'",
            timeout=LEASE + 15,
        )
        took = time.monotonic() - killed
        owners = await conn.fetch(
            f"SELECT executor_id, count(*) AS n FROM {schema}.workflows GROUP BY 1 ORDER BY 1"
        )
        verdict = await check_run(conn, schema, log)
    finally:
        await conn.close()
        for child in children:
            await child.kill()
    print(f"\ntaken over {taken:.2f} s after the kill (lease {LEASE} s),", end=" ")
    print(f"all {count} workflows done after {took:.2f} s;", end=" ")
    print(f"owners {[(r['executor_id'], r['n']) for r in owners]}; {verdict.reruns} re-runs")
    assert verdict.problems == []
    assert verdict.steps == count * steps
    assert {r["executor_id"] for r in owners} <= {"exec-b", "exec-c"}
    # At most the step each workflow was in when the victim died runs twice.
    assert verdict.reruns <= count
    # Not before the lease ran out (the victim's last heartbeat may be up to one interval old).
    assert taken >= LEASE - HEARTBEAT
    assert taken <= LEASE + 5

"""Crash tests: a real child process is SIGKILLed and started again; workflows finish, and no
step whose checkpoint was written runs again."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path

import asyncpg
import pytest

from .proc import Child

pytestmark = pytest.mark.anyio


def _env(database_url: str, schema: str, log: Path) -> dict[str, str]:
    return {
        "AIODURABLE_DATABASE_URL": database_url,
        "AIODURABLE_EXECUTOR_ID": "crash-app",
        "TEST_SCHEMA": schema,
        "CRASH_LOG": str(log),
    }


async def test_sigkill_after_step_one_resumes_at_step_two(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """Killed after step one, the restarted program finishes the workflow: step one ran once,
    step two once, and the workflow is SUCCESS."""
    log = tmp_path / "log"
    env = _env(database_url, schema, log)
    first = Child("crash_app.py", "two_steps", "order-1", env={**env, "CRASH_BLOCK": "1"})
    await first.expect("STEP_ONE_DONE")
    await first.kill()

    second = Child("crash_app.py", "two_steps", "order-1", env=env)
    assert "one+two" in await second.expect("RESULT")
    assert await second.wait() == 0

    assert log.read_text().splitlines() == ["one", "two"]
    conn = await asyncpg.connect(database_url)
    try:
        status = await conn.fetchval(
            f"SELECT status FROM {schema}.workflows WHERE workflow_id = 'order-1'"
        )
        attempts = await conn.fetchval(
            f"SELECT recovery_attempts FROM {schema}.workflows WHERE workflow_id = 'order-1'"
        )
    finally:
        await conn.close()
    assert status == "SUCCESS"
    assert attempts == 1


@pytest.mark.slow
async def test_repeated_random_sigkills_lose_nothing_and_repeat_no_checkpointed_step(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    """Many workflows of many steps, killed again and again at random moments: every workflow
    completes, every step is journaled, and the journaled execution of each step is its last
    (no step ran again once its checkpoint was written)."""
    workflows, steps = 30, 12
    log = tmp_path / "log"
    env = _env(database_url, schema, log)
    rng = random.Random(1234)
    interrupted = 0
    for _ in range(30):
        child = Child("crash_app.py", "many", str(workflows), str(steps), env=env)
        await child.expect("READY")
        await asyncio.sleep(rng.uniform(0.05, 0.15))  # the random moment of the crash
        await child.kill()
        if any("ALL_DONE" in line for line in child.lines):
            break
        interrupted += 1
    final = Child("crash_app.py", "many", str(workflows), str(steps), env=env)
    await final.expect("ALL_DONE", timeout=60)
    assert await final.wait() == 0
    assert interrupted >= 3, f"only {interrupted} kills landed while work was in progress"

    executions: dict[tuple[str, int], list[str]] = defaultdict(list)
    for line in log.read_text().splitlines():
        wid, index, token = line.split()
        executions[(wid, int(index))].append(token)
    conn = await asyncpg.connect(database_url)
    try:
        statuses = await conn.fetch(f"SELECT workflow_id, status FROM {schema}.workflows")
        journal = await conn.fetch(f"SELECT workflow_id, function_id, output FROM {schema}.steps")
    finally:
        await conn.close()
    assert {r["status"] for r in statuses} == {"SUCCESS"}
    assert len(statuses) == workflows
    assert len(journal) == workflows * steps
    reruns = 0
    for row in journal:
        key = (row["workflow_id"], row["function_id"] - 1)
        recorded = bytes(row["output"]).decode().strip('"')
        # The recorded execution is the last one logged: nothing ran after the checkpoint.
        assert executions[key][-1] == recorded, key
        reruns += len(executions[key]) - 1
    # Only steps in flight at a kill may have run more than once.
    assert reruns <= interrupted * workflows

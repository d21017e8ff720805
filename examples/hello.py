"""The durable "hello": a step, five durable one-second sleeps, another step.

Run it, press Control + C after "Step one completed!", and run it again: the workflow resumes
where it stopped, and step one does not run a second time. With no AIODURABLE_DATABASE_URL set,
aiodurable starts an embedded PostgreSQL by itself.

    python examples/hello.py
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import aiodurable
from aiodurable import Runtime, step, workflow


@step()
async def step_one() -> None:
    print("Step one completed!")


@step()
async def step_two() -> None:
    print("Step two completed!")


@workflow()
async def example_workflow() -> str:
    await step_one()
    for _ in range(5):
        print("Press Control + C to stop the app...")
        await aiodurable.sleep(1.0)
    await step_two()
    return aiodurable.current_workflow_id()


async def main() -> None:
    async with Runtime() as rt:
        if rt.recovered_workflow_ids:
            # A previous run was stopped mid-way: it resumed when the runtime opened.
            for workflow_id in rt.recovered_workflow_ids:
                print(f"Resuming workflow {workflow_id}")
                handle = await aiodurable.retrieve_workflow(workflow_id)
                await handle.get_result()
                print(f"Workflow {workflow_id} finished")
        else:
            handle = await aiodurable.start_workflow(example_workflow)
            print(f"Started workflow {handle.workflow_id}")
            print(f"Workflow {await handle.get_result()} finished")


def run() -> None:
    """Run ``main`` on uvloop when it is installed."""
    # Only pick the runner inside the ``except``: running ``main`` there would chain every error
    # of the program to this ImportError ("During handling of the above exception ...").
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(main())


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        run()

"""A program on the embedded PostgreSQL of AIODURABLE_PG_DATA (a Runtime with no URL), for the
tests of one server shared by several programs.

It prints READY once its runtime is open. SIGUSR1 runs a workflow and prints "RAN <result>";
SIGTERM closes the runtime and exits. Started as ``shared_app.py wait`` it prints WAITING and
opens its runtime only on SIGUSR2, so that a test can choose the moment it starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiodurable
from aiodurable import Runtime, step, workflow


@step()
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow()
async def hello(name: str) -> str:
    return await greet(name)


async def main() -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()
    for signum, command in [
        (signal.SIGUSR1, "run"),
        (signal.SIGUSR2, "open"),
        (signal.SIGTERM, "exit"),
    ]:
        loop.add_signal_handler(signum, commands.put_nowait, command)
    if sys.argv[1:] == ["wait"]:
        print("WAITING", flush=True)
        while await commands.get() != "open":
            pass
    async with Runtime():
        print("READY", flush=True)
        runs = 0
        while (command := await commands.get()) != "exit":
            if command == "run":
                runs += 1
                with aiodurable.set_workflow_id(f"shared-{os.getpid()}-{runs}"):
                    print("RAN", await hello(str(runs)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

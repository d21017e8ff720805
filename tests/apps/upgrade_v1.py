"""Version 1 of the shop program of the upgrade tests: each workflow reserves, says it waits,
waits (a message, or a durable sleep), then charges. See ``upgrade_harness`` for the modes."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiodurable
from aiodurable import step, workflow
from tests.apps.upgrade_harness import log, main


@step()
async def reserve(item: str) -> str:
    log("v1", "reserve")
    return f"reserved {item}"


@step()
async def charge(item: str) -> str:
    log("v1", "charge")
    return f"charged {item}"


@workflow(name="shop.order")
async def order(item: str) -> str:
    reserved = await reserve(item)
    await aiodurable.set_event("stage", "waiting")
    message = await aiodurable.recv("go", timeout=math.inf)
    return f"v1: {reserved}, {message}, {await charge(item)}"


@workflow(name="shop.nap")
async def nap(item: str, seconds: float) -> str:
    reserved = await reserve(item)
    await aiodurable.set_event("stage", "waiting")
    await aiodurable.sleep(seconds)
    return f"v1: {reserved}, {await charge(item)}"


@workflow(name="shop.legacy")
async def legacy(item: str) -> str:
    reserved = await reserve(item)
    await aiodurable.set_event("stage", "waiting")
    message = await aiodurable.recv("go", timeout=math.inf)
    return f"v1: {reserved}, {message}, {await charge(item)}"


if __name__ == "__main__":
    main(order, nap, legacy)

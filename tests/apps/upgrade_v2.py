"""Version 2 of the shop program of the upgrade tests: orders and naps keep version 1's calls up
to their wait and ship instead of charging after it (compatible); ``legacy`` now checks the stock
before reserving (its recorded prefix changed: incompatible). See ``upgrade_harness``."""

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
    log("v2", "reserve")
    return f"reserved {item}"


@step()
async def check_stock(item: str) -> str:
    log("v2", "check_stock")
    return f"{item} in stock"


@step()
async def ship(item: str) -> str:
    log("v2", "ship")
    return f"shipped {item}"


@workflow(name="shop.order")
async def order(item: str) -> str:
    reserved = await reserve(item)
    await aiodurable.set_event("stage", "waiting")
    message = await aiodurable.recv("go", timeout=math.inf)
    return f"v2: {reserved}, {message}, {await ship(item)}"


@workflow(name="shop.nap")
async def nap(item: str, seconds: float) -> str:
    reserved = await reserve(item)
    await aiodurable.set_event("stage", "waiting")
    await aiodurable.sleep(seconds)
    return f"v2: {reserved}, {await ship(item)}"


@workflow(name="shop.legacy")
async def legacy(item: str) -> str:
    await check_stock(item)
    reserved = await reserve(item)
    await aiodurable.set_event("stage", "waiting")
    message = await aiodurable.recv("go", timeout=math.inf)
    return f"v2: {reserved}, {message}, {await ship(item)}"


if __name__ == "__main__":
    main(order, nap, legacy)

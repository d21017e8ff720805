"""The ``aiodurable workflow`` command line, driven in a subprocess as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

import aiodurable
from aiodurable import WorkflowStatus
from aiodurable.testing import hooks

from .conftest import RuntimeFactory
from .proc import Child
from .test_manage import arrived, release, runs, three_steps

pytestmark = pytest.mark.anyio


class Cli:
    """Runs ``aiodurable workflow ...`` against the test's database and schema."""

    def __init__(self, database_url: str, schema: str) -> None:
        self.env = {"AIODURABLE_DATABASE_URL": database_url}
        self.schema = schema

    async def __call__(self, *args: str) -> tuple[int, str]:
        action, *rest = args
        child = Child(
            "-m aiodurable._cli", "workflow", action, "--schema", self.schema, *rest, env=self.env
        )
        code = await child.wait()
        return code, "\n".join(child.lines)

    async def json(self, *args: str) -> object:
        code, out = await self(*args, "--json")
        assert code == 0, out
        return json.loads(out)


@pytest.fixture
def cli(database_url: str, schema: str) -> Cli:
    """The command line on this test's schema."""
    return Cli(database_url, schema)


async def test_list_get_and_steps(runtime: RuntimeFactory, cli: Cli) -> None:
    """list shows workflows with their version; get and steps show one; --json parses back."""
    async with runtime() as rt:
        with aiodurable.set_workflow_id("cli-1"):
            handle = await rt.start_workflow(three_steps, "x")
        release("cli-1")
        await handle.get_result()
        code, table = await cli("list")
        assert code == 0
        assert "cli-1" in table and "SUCCESS" in table and "test-version"[:12] in table
        listed = await cli.json("list", "--status", "success")
        assert isinstance(listed, list)
        assert [(w["workflow_id"], w["status"], w["output"]) for w in listed] == [
            ("cli-1", "SUCCESS", "X-1/passed/X-3")
        ]
        assert await cli.json("list", "--status", "PENDING") == []
        got = await cli.json("get", "cli-1")
        assert isinstance(got, dict)
        assert got["inputs"] == {"args": ["x"], "kwargs": {}}
        assert got["app_version"] == "test-version"
        steps = await cli.json("steps", "cli-1")
        assert isinstance(steps, list)
        assert [(s["function_id"], s["name"], s["output"]) for s in steps] == [
            (1, "work", "X-1"),
            (2, "gate", "passed"),
            (3, "work", "X-3"),
        ]
        code, table = await cli("steps", "cli-1")
        assert code == 0 and "passed" in table


async def test_cancel_resume_restart_fork(runtime: RuntimeFactory, cli: Cli) -> None:
    """cancel stops a running workflow; resume, restart and fork from the command line are
    carried out by the live runtime that has the workflow's code."""
    async with runtime() as rt:
        with aiodurable.set_workflow_id("cli-2"):
            handle = await rt.start_workflow(three_steps, "y")
        await arrived("cli-2")
        cancelled = await cli.json("cancel", "cli-2")
        assert isinstance(cancelled, dict) and cancelled["status"] == "CANCELLED"
        release("cli-2")
        await hooks(rt).wait_stopped("cli-2")
        assert runs[("cli-2", "y-3")] == 0

        code, out = await cli("resume", "cli-2")
        assert code == 0 and "cli-2" in out
        assert await (await rt.retrieve_workflow("cli-2")).get_result() == "Y-1/passed/Y-3"
        assert runs[("cli-2", "y-3")] == 1

        restarted = await cli.json("restart", "cli-2")
        assert isinstance(restarted, dict)
        new_id = restarted["workflow_id"]
        assert new_id != "cli-2"
        release(new_id)
        assert await (await rt.retrieve_workflow(new_id)).get_result() == "Y-1/passed/Y-3"
        assert runs[(new_id, "y-1")] == 1

        forked = await cli.json("fork", "cli-2", "--step", "3", "--new-id", "cli-fork")
        assert isinstance(forked, dict) and forked["workflow_id"] == "cli-fork"
        assert await (await rt.retrieve_workflow("cli-fork")).get_result() == "Y-1/passed/Y-3"
        assert (runs[("cli-fork", "y-1")], runs[("cli-fork", "y-3")]) == (0, 1)
        info = await rt.get_workflow_status("cli-fork")
        assert info.status is WorkflowStatus.SUCCESS
        assert info.app_version == "test-version"  # taken by the live runtime's version
        assert handle.workflow_id == "cli-2"


async def test_bad_input_exit_codes(runtime: RuntimeFactory, cli: Cli) -> None:
    """Unknown IDs exit 1 with a message; bad steps and malformed filters are usage errors."""
    async with runtime() as rt:
        with aiodurable.set_workflow_id("cli-3"):
            await rt.start_workflow(three_steps, "z")
        release("cli-3")
        await (await rt.retrieve_workflow("cli-3")).get_result()
    code, _ = await cli("get", "no-such-workflow")
    assert code == 1
    for args in (
        ("fork", "cli-3", "--step", "-1"),
        ("fork", "cli-3", "--step", "9"),
        ("list", "--status", "bogus"),
        ("list", "--start-time", "yesterday"),
        ("list", "--limit", "many"),
    ):
        code, _ = await cli(*args)
        assert code == 2, args
    code, _ = await cli("cancel", "no-such-workflow")
    assert code == 1


async def test_resume_of_a_pending_workflow_of_another_version_says_why_not(
    runtime: RuntimeFactory, database_url: str, schema: str
) -> None:
    """resume of a workflow PENDING on another version exits 1 and says what to run instead;
    cancel then resume moves it to the live runtime's version, where it finishes."""
    async with runtime(app_version="v1") as rt:
        with aiodurable.set_workflow_id("cli-v1"):
            await rt.start_workflow(three_steps, "v")
        await arrived("cli-v1")
    release("cli-v1")
    command = [sys.executable, "-m", "aiodurable._cli", "workflow", "resume", "cli-v1"]
    child = await asyncio.create_subprocess_exec(
        *command,
        "--schema",
        schema,
        env={**os.environ, "AIODURABLE_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    assert child.returncode == 1, (out, err)
    assert "is PENDING on application version 'v1'" in err.decode()
    assert "aiodurable workflow cancel cli-v1" in err.decode()
    async with runtime(app_version="v2") as rt:
        assert (await rt.get_workflow_status("cli-v1")).status is WorkflowStatus.PENDING
        await rt.cancel_workflow("cli-v1")
        resumed = await rt.resume_workflow("cli-v1")
        assert await resumed.get_result() == "V-1/passed/V-3"
        assert (await rt.get_workflow_status("cli-v1")).app_version == "v2"


ESCAPES = "\x1b]0;PWNED-title\x07\x1b[2J\x1b[31mFAKE: all workflows SUCCESS\x1b[0m\r\x9b2J\u202e"
"""Text that sets the window title, clears the screen, fakes a line, and reverses text."""


@aiodurable.step()
async def echo_step(text: str) -> str:
    return text


@aiodurable.workflow(name="tests.cli:esc\x1b[5m")
async def hostile(text: str) -> str:
    await echo_step(text)
    raise ValueError(text)


async def test_tables_and_get_escape_control_characters(runtime: RuntimeFactory, cli: Cli) -> None:
    """A workflow ID, name, step output and error holding terminal escape sequences print as
    visible escapes in list, get and steps (no raw ESC, BEL, CR, C1 or bidi override reaches the
    terminal); --json still gives the exact text back."""
    wid = "order-" + ESCAPES
    async with runtime() as rt:
        with aiodurable.set_workflow_id(wid), pytest.raises(ValueError):
            await rt.start_workflow(hostile, ESCAPES)
            await (await rt.retrieve_workflow(wid)).get_result()
        outputs = {}
        for args in (("list",), ("get", wid), ("steps", wid)):
            code, out = await cli(*args)
            assert code == 0, out
            outputs[args[0]] = out
    for action, out in outputs.items():
        for raw in ("\x1b", "\x07", "\r", "\x9b", "\u202e"):
            assert raw not in out, (action, raw, out)
    assert "order-\\x1b]0;PWNED-title\\x07\\x1b[2J" in outputs["list"]
    assert "esc\\x1b[5m" in outputs["list"]
    assert "ValueError: \\x1b]0;PWNED" in outputs["get"]
    assert "\\x1b[31mFAKE" in outputs["steps"]
    got = await cli.json("get", wid)
    assert isinstance(got, dict) and got["workflow_id"] == wid


async def test_bad_schema_numbers_and_text_are_usage_errors(cli: Cli) -> None:
    """A schema with a trailing newline, a limit past int64 and an ID that is not UTF-8 exit 2
    with a message, never a traceback."""
    for args in (
        ("list", "--schema", "aiodurable\n"),
        ("list", "--limit", "99999999999999999999"),
        ("get", "bad-\udcff"),  # argv bytes that are not UTF-8
        ("list", "--prefix", "\udc80"),
    ):
        code, _ = await cli(*args)
        assert code == 2, args

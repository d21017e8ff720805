"""Real child processes for crash tests: start, read their output lines, SIGKILL, wait.

Everything waits on file descriptors through the event loop (a pidfd for exit), so tests need
no sleeps to synchronise with a child.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from aiodurable._embedded import _wait_child

ROOT = Path(__file__).resolve().parent.parent


class Child:
    """A Python program run as a child process with its stdout read line by line."""

    def __init__(self, script: str, *args: str, env: dict[str, str]) -> None:
        command = [sys.executable, str(ROOT / "tests" / "apps" / script)]
        if script.startswith("-m"):  # a module: "-m aiodurable._cli"
            command = [sys.executable, "-m", script[2:].strip()]
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=None,
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._buffer = b""
        self.lines: list[str] = []

    async def _read_more(self) -> bool:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self._fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(self._fd)
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(line.decode() for line in complete)
        return True

    async def expect(self, text: str, timeout: float = 30.0) -> str:
        """Wait for an output line containing ``text``; fail if the child exits first."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if text in line:
                        return line
                seen = len(self.lines)
                if not await self._read_more():
                    raise AssertionError(
                        f"child exited ({self.proc.wait()}) before printing {text!r};"
                        f" it printed {self.lines!r}"
                    )

    async def kill(self) -> None:
        """SIGKILL the child and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        await self.wait()

    async def wait(self, timeout: float = 60.0) -> int:
        """Wait for the child to exit; its return code."""
        code = await _wait_child(self.proc, timeout)
        if code is None:
            self.proc.kill()
            raise AssertionError(f"child did not exit within {timeout} s")
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            # The child is gone: what is left in the pipe is all it wrote.
            while await self._read_more():
                pass
            if self._buffer:
                self.lines.append(self._buffer.decode())
                self._buffer = b""
            self.proc.stdout.close()
        return code

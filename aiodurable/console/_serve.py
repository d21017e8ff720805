"""Serving the console with uvicorn, ending its live streams as shutdown begins."""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette

from ._app import Console

__all__ = ["ConsoleServer", "serve"]


class ConsoleServer(uvicorn.Server):
    """A uvicorn server that ends the console's event streams when it starts shutting down:
    uvicorn waits for open responses before it runs the lifespan's shutdown, so without this a
    browser tab would hold the server open."""

    def __init__(self, config: uvicorn.Config, console: Console) -> None:
        super().__init__(config)
        self.console = console

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop the streams, then shut down as uvicorn does."""
        self.console.live.stop()
        await super().shutdown(sockets)


async def serve(app: Starlette, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve a console app made by :func:`create_app` until interrupted."""
    console = app.state.console
    assert isinstance(console, Console)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="on")
    await ConsoleServer(config, console).serve()

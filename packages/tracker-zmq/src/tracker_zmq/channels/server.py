"""A uvicorn server that drains its endpoints in batches on SIGTERM. Not pure (I/O).

Phoenix drains sockets on shutdown (``Phoenix.Socket.PoolDrainer``): it closes them a
batch at a time so that thousands of clients do not reconnect to the other nodes in the
same instant. uvicorn closes every websocket itself when a signal arrives, before the
ASGI lifespan's shutdown runs, so :meth:`Endpoint.shutdown
<tracker_zmq.channels.Endpoint.shutdown>` would find nothing left to drain there.
:class:`DrainingServer` runs the drain first: on the first SIGTERM or SIGINT it calls
``shutdown()`` on each endpoint (new sockets refused, open ones closed
``drain_batch_size`` at a time with code 1012, which phoenix.js reconnects), and only
then lets uvicorn stop as usual (``serve`` returns; the process is not killed by the
signal afterwards). A second signal during the drain stops at once, as uvicorn does.

It needs uvicorn (the ``tracker-zmq[web]`` extra); ``import tracker_zmq.channels`` does
not import this module.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from types import FrameType

import uvicorn

from tracker_zmq.channels.endpoint import Endpoint

__all__ = ["DrainingServer"]

log = logging.getLogger("tracker_zmq.channels")


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` that drains ``endpoints`` in batches before it stops.

    Use it where you would use ``uvicorn.Server``::

        server = DrainingServer(uvicorn.Config(app, ...), [endpoint])
        await server.serve()

    Args:
        config: The uvicorn configuration.
        endpoints: The endpoints the app mounts (each is drained, all at the same time).
    """

    def __init__(self, config: uvicorn.Config, endpoints: Sequence[Endpoint]) -> None:
        super().__init__(config)
        self.endpoints = tuple(endpoints)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until a signal or ``should_exit``; a signal drains first."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @property
    def draining(self) -> bool:
        """Whether a drain started (by a signal or :meth:`drain`)."""
        return self._drain_task is not None

    async def drain(self) -> None:
        """Drain every endpoint now, then stop the server (what SIGTERM does)."""
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        await asyncio.shield(self._drain_task)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's signal handler: the first signal drains, a second one exits."""
        loop = self._loop
        if self._drain_task is not None or loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        log.info("draining %d websocket endpoint(s) before stopping", len(self.endpoints))
        # a signal handler runs between two bytecodes of the loop's thread: schedule
        loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            results = await asyncio.gather(
                *(endpoint.shutdown() for endpoint in self.endpoints), return_exceptions=True
            )
            for result in results:
                if isinstance(result, Exception):
                    log.error("draining an endpoint failed", exc_info=result)
        finally:
            self.should_exit = True

"""``tracker-zmq node --peer-dns`` and a node without ``--name``, as real processes.

Node ``a`` runs with a name and ``--peer-dns localhost:<its own port>`` (its own
endpoint is left out of the answers: it starts alone). Node ``b`` has no name and finds
``a`` through ``--peer-dns localhost:<a's port>``; both see each other's replica up.
Then ``b`` gets SIGTERM: being automatically named, it stops with a graceful permdown,
so ``a`` forgets its replica at once (``--permdown-period`` is 20 minutes: a replica
that merely went down would stay).
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.proc import Process, free_port, spawner, wait_until
from tracker_zmq.client import Client

pytestmark = pytest.mark.cluster

TIMEOUT = 30.0


class Node(Process):
    """``python -m tracker_zmq node`` on 127.0.0.1; its ready line parsed."""

    def __init__(self, label: str, log_dir: Path, *options: str, port: int = 0) -> None:
        self.port = port or free_port()
        self.log_path = log_dir / f"{label}.log"
        self._log = self.log_path.open("w")
        command = [sys.executable, "-m", "tracker_zmq", "node"]
        command += ["--bind", f"tcp://127.0.0.1:{self.port}", "--broadcast-period", "0.1"]
        super().__init__(label, [*command, *options], stderr=self._log)
        try:
            words = self.readline(TIMEOUT).split()
        except BaseException:
            self.stop()
            raise
        assert words[0] == "ready", words
        self.ready = dict(word.split("=", 1) for word in words[1:])

    def tail(self) -> str:
        self._log.flush()
        return f"\n{self.log_path.read_text()[-3000:]}"

    def close(self) -> None:
        super().close()
        self._log.close()

    def replicas(self) -> dict[str, Any]:
        async def ask() -> dict[str, Any]:
            client = Client(self.ready["clients"], client_id="test", timeout=5.0)
            try:
                await client.open()
                found: dict[str, Any] = (await client.status())["replicas"]
                return found
            finally:
                await client.close()

        return asyncio.run(ask())


def test_peer_dns_and_an_automatic_name(tmp_path: Path) -> None:
    with spawner(Node) as start:
        a_port = free_port()
        a = start("a", tmp_path, "--name", "a", "--peer-dns", f"localhost:{a_port}", port=a_port)
        assert a.ready["name"] == "a"
        b = start("b", tmp_path, "--peer-dns", f"localhost:{a.port}")
        name = b.ready["name"]
        assert re.fullmatch(rf"{re.escape(socket.gethostname())}-{b.pid}-[0-9a-f]{{8}}", name)
        assert b.ready["cluster"] == f"tcp://127.0.0.1:{b.port}"
        for node, other in ((a, name), (b, "a")):
            wait_until(
                lambda node=node, other=other: node.replicas().get(other, {}).get("status") == "up",
                TIMEOUT,
                f"{node.name} to see {other} up",
                interval=0.2,
            )
        assert b.terminate(20) == 0, b.tail()
        wait_until(lambda: name not in a.replicas(), TIMEOUT, "a to forget b", interval=0.2)
        assert "signal received" in b.log_path.read_text()

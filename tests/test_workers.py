"""The web app under a server with workers: a node per worker, no ghost when one recycles.

``docs/examples/webapp.py`` runs as ``uvicorn --factory webapp:from_env --workers 3`` and
as ``gunicorn 'webapp:from_env()' -k uvicorn_worker.UvicornWorker -w 3``, both with one
seed setting (WEBAPP_BIND, a free port on 127.0.0.1): each worker builds its PubSub in
the app's lifespan under an automatic name, the first binds the port and the others
fall back to port 0 and greet it there. Users connect over Phoenix's protocol (the
``websockets`` client) until they are spread over at least two workers; each must see
all the others in the room. Then the worker holding the seed port is sent SIGTERM: the
server starts another; its users' presences leave everybody's view, and an observer
node in this process (a PubSub and a tracker that joined the cluster) must see its
replica go at once (a graceful permdown: ``permdown_period`` is 20 minutes, so a
replica that merely went down would stay), then the new worker join, with users
connected to it seen by all. Every wait is bounded; the server's whole process group is
stopped (SIGTERM, then SIGKILL) whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from aio import until

from pubsub_zmq import PubSub
from tests.support.proc import ROOT, NodeError, free_port
from tests.test_webapp_example import SECRET, STATIC, Phoenix, token_of
from tracker_zmq import Tracker

EXAMPLES = ROOT / "docs" / "examples"
WORKERS = 3
START_TIMEOUT = 60.0
SCENARIO_TIMEOUT = 150.0
MAX_USERS = 16  # connections opened until they reach two workers
BROADCAST_PERIOD = 0.1

pytestmark = pytest.mark.cluster

SERVERS = {
    "uvicorn": lambda port: [
        *("-m", "uvicorn", "--app-dir", str(EXAMPLES), "--factory", "webapp:from_env"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS)),
        *("--log-level", "warning"),
    ],
    "gunicorn": lambda port: [
        *("-m", "gunicorn", "--chdir", str(EXAMPLES), "webapp:from_env()"),
        *("-k", "uvicorn_worker.UvicornWorker", "-b", f"127.0.0.1:{port}", "-w", str(WORKERS)),
        *("--graceful-timeout", "20", "--log-level", "warning"),
    ],
}


class Server:
    """A web server with workers, in a process group of its own; stdout lines collected.

    Args:
        kind: ``"uvicorn"`` or ``"gunicorn"``.
        log_dir: Where its stderr goes.
    """

    def __init__(self, kind: str, log_dir: Path) -> None:
        if not (STATIC / "phoenix.mjs").is_file():
            pytest.fail(
                "the phoenix npm package is not installed in tests/js: run "
                "`npm ci --prefix tests/js --no-audit --no-fund` (make pytest does)"
            )
        self.kind = kind
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.seed = f"tcp://127.0.0.1:{free_port()}"
        self.log_path = log_dir / f"{kind}.log"
        self._log: IO[str] = self.log_path.open("w")
        env = {
            **os.environ,
            "WEBAPP_SECRET": SECRET,
            "WEBAPP_BIND": self.seed,
            "WEBAPP_STATIC": str(STATIC),
            "WEBAPP_BROADCAST_PERIOD": str(BROADCAST_PERIOD),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, *SERVERS[kind](self.port)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,  # its workers share its process group
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def ready(self) -> dict[str, str]:
        """Every worker that said ready so far: node name -> its pubsub endpoint."""
        out: dict[str, str] = {}
        for line in list(self.lines):
            words = line.split()
            if words[1:3] == ["ready", "pubsub"]:
                out[words[0]] = words[3]
        return out

    def stopped(self) -> set[str]:
        """The workers that said their lifespan ended."""
        return {line.split()[0] for line in list(self.lines) if line.endswith(" stopped")}

    async def wait_ready(self, count: int) -> dict[str, str]:
        """Wait until ``count`` workers said ready (in all, since the start)."""
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while len(self.ready()) < count:
                    if self.proc.poll() is not None:
                        raise NodeError(f"{self.kind} exited{self.tail()}")
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(
                f"{self.kind}: {len(self.ready())} of {count} workers ready after "
                f"{START_TIMEOUT} s{self.tail()}"
            ) from None
        return self.ready()

    def tail(self) -> str:
        self._log.flush()
        return f"\n{self.log_path.read_text()[-4000:]}"

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after a grace period; close the pipes."""
        try:
            for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and _group_alive(self.proc.pid):
                    self.proc.poll()
                    time.sleep(0.05)
                if not _group_alive(self.proc.pid):
                    break
        finally:
            self.proc.wait(10)
            self._reader.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def pid_of(node: str) -> int:
    """The worker's pid, from its automatic name ``<hostname>-<pid>-<random>``."""
    return int(node.rsplit("-", 2)[1])


@contextmanager
def server(kind: str, log_dir: Path) -> Iterator[Server]:
    srv = Server(kind, log_dir)
    try:
        yield srv
    finally:
        srv.stop()


class User:
    """A user's websocket, joined to ``room:lobby``, and the presence it sees."""

    def __init__(self, name: str, client: Phoenix, socket: object) -> None:
        self.name = name
        self.client = client
        self.socket = socket

    @property
    def node(self) -> str:
        """The worker holding this user's presence (the meta's ``node``)."""
        node: str = self.client.present[self.name]["metas"][0]["node"]
        return node


async def connect(srv: Server, name: str) -> User:
    token = await asyncio.to_thread(token_of, srv, name, "lobby")
    socket = Phoenix.connect(srv, token)
    ws = await socket.__aenter__()
    client = Phoenix(ws)
    reply = await client.join("room:lobby")
    assert reply == {"status": "ok", "response": {"user": name}}, reply
    await client.receive_until(lambda _: name in client.present)
    return User(name, client, socket)


async def disconnect(user: User) -> None:
    await user.socket.__aexit__(None, None, None)  # type: ignore[attr-defined]


async def scenario(srv: Server) -> None:
    workers = await srv.wait_ready(WORKERS)
    assert srv.seed in workers.values()  # one worker got the host's port
    observer_pubsub = PubSub("observer", peers=[srv.seed], gossip_interval=0.1)
    observer = Tracker(observer_pubsub, broadcast_period=BROADCAST_PERIOD)
    users: list[User] = []
    try:
        async with observer_pubsub, observer:
            # users connect until two workers hold some of them
            while len({u.node for u in users}) < 2:
                assert len(users) < MAX_USERS, f"{MAX_USERS} users, all on one worker"
                users.append(await connect(srv, f"user{len(users)}"))
            names = {u.name for u in users}
            for user in users:  # everyone sees everyone, whichever worker they are on
                await user.client.see(names)

            # the worker holding the seed port is recycled: SIGTERM, the server restarts it
            seed_worker = next(n for n, ep in workers.items() if ep == srv.seed)
            await until(lambda: set(observer.stats()["replicas"]) >= set(workers), 30.0, "replicas")
            os.kill(pid_of(seed_worker), signal.SIGTERM)
            gone = {u.name for u in users if u.node == seed_worker}
            staying = [u for u in users if u.node != seed_worker]
            for user in staying:  # its users leave the others' views
                await user.client.see(names - gone)
            # no ghost: its replica is gone at once, not down for permdown_period
            await until(
                lambda: seed_worker not in observer.stats()["replicas"], 30.0, "the permdown"
            )
            await until(lambda: seed_worker in srv.stopped(), 30.0, "the worker's lifespan end")
            fresh = await srv.wait_ready(WORKERS + 1)
            (new_worker,) = set(fresh) - set(workers)
            alive = (set(workers) - {seed_worker}) | {new_worker}
            await until(
                lambda: (
                    {n for n, r in observer.stats()["replicas"].items() if r["status"] == "up"}
                    == alive
                ),
                30.0,
                "the new worker's replica up, beside the two others",
            )
            assert set(observer.stats()["replicas"]) == alive  # nothing down, nothing left
            assert {key for key, _ in observer.list("room:lobby")} == names - gone

            # users that connect now reach the new worker too, and everyone sees them
            for user in users:
                if user.name in gone:
                    await disconnect(user)
            users = staying
            while new_worker not in {u.node for u in users}:
                assert len(users) < MAX_USERS * 2, "no user reaches the new worker"
                users.append(await connect(srv, f"user{len(users) + len(gone)}"))
            names = {u.name for u in users}
            for user in users:
                await user.client.see(names)
    finally:
        for user in users:
            await disconnect(user)


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_workers_share_presence_and_a_recycled_worker_leaves_no_ghost(
    kind: str, tmp_path: Path
) -> None:
    with server(kind, tmp_path) as srv:
        try:
            asyncio.run(asyncio.wait_for(scenario(srv), SCENARIO_TIMEOUT))
        except BaseException as exc:
            raise AssertionError(f"{kind}: {exc!r}{srv.tail()}") from exc

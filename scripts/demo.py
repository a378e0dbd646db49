"""The demo `make demo` runs: a three-node tracker cluster on loopback survives a crash.

It starts three ``tracker-zmq node`` processes (a, b and c) on 127.0.0.1, tracks one
user on each node through the Python client (as three apps would), and watches every
node's diffs. Then it SIGKILLs node c: after ``down_period`` the other nodes report
c's user leaving. It restarts c on the same ports: c comes back as a new incarnation
(vsn), the user's app re-tracks through it, and every node converges again. Each line
says what happened, on which node, and when (seconds since the start). The demo stops
every process it started, also on failure or Ctrl-C. It takes about 15 seconds.

The crdt-state simulation that used to be the demo is ``scripts/demo_crdt.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tracker_zmq import Client, ClientDiff

TOPIC = "room:lobby"
USERS = {"a": "alice", "b": "bob", "c": "carol"}
# short periods so the demo is quick: heartbeats every 0.2 s, down after 2 s of silence
NODE_OPTIONS = (
    "--broadcast-period", "0.2",
    "--max-silent-periods", "3",
    "--down-period", "2",
    "--permdown-period", "10",
    "--gossip-interval", "0.2",
    "--peer-timeout", "1",
    "--log-level", "INFO",
)  # fmt: skip
DOWN_PERIOD = 2.0
DEADLINE = 20.0  # seconds any one step may take before the demo gives up

START = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - START:5.1f}s] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DemoFailed(Exception):
    """A step did not happen within its deadline."""


class NodeProcess:
    """One ``tracker-zmq node`` process (started as ``python -m tracker_zmq node``)."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.client_port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.client_endpoint = f"tcp://127.0.0.1:{self.client_port}"
        self.log_dir = log_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.vsn = 0
        self.starts = 0

    async def start(self, peers: list[str]) -> None:
        self.starts += 1
        log = (self.log_dir / f"{self.name}-{self.starts}.log").open("w")
        args = [
            "-m", "tracker_zmq", "node",
            "--name", self.name,
            "--bind", self.endpoint,
            "--client-bind", self.client_endpoint,
            *(arg for peer in peers for arg in ("--peer", peer)),
            *NODE_OPTIONS,
        ]  # fmt: skip
        with log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), DEADLINE)
        except TimeoutError:
            raise DemoFailed(f"node {self.name} did not start; see {log.name}") from None
        found = re.search(r"vsn=(\d+)", line.decode())
        if found is None:
            raise DemoFailed(f"node {self.name} failed to start; see {log.name}")
        self.vsn = int(found.group(1))

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def terminate(self) -> int:
        """SIGTERM, then the exit status (SIGKILL after a few seconds)."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            return await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


async def until(condition: Any, what: str, timeout: float = DEADLINE) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise DemoFailed(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def reporter(node: str, since: dict[str, float]) -> Any:
    """A diff callback that prints what node ``node`` saw."""

    def report(diff: ClientDiff) -> None:
        for sign, entries in (("joined", diff.joins), ("left", diff.leaves)):
            for key, meta in entries:
                origin = f"tracked on {meta['via']}"
                if sign == "left" and "kill" in since:
                    origin += f", {time.monotonic() - since['kill']:.1f} s after the kill"
                say(f"node {node} reports {key} {sign} {diff.topic} ({origin})")

    return report


async def demo(log_dir: Path, nodes: dict[str, NodeProcess]) -> None:
    say(f"starting nodes a, b and c on 127.0.0.1 (their logs: {log_dir})")
    a = nodes["a"]
    await asyncio.gather(
        a.start([]),
        nodes["b"].start([a.endpoint]),
        nodes["c"].start([a.endpoint]),  # c knows only a: it finds b by gossip
    )
    for node in nodes.values():
        say(f"node {node.name} is up: vsn {node.vsn}, clients on {node.client_endpoint}")

    async with contextlib.AsyncExitStack() as stack:
        since: dict[str, float] = {}
        watchers: dict[str, Client] = {}
        apps: dict[str, Client] = {}
        for name, node in nodes.items():
            options: dict[str, Any] = {"heartbeat_interval": 0.5, "timeout": 1.0}
            watcher = Client(node.client_endpoint, client_id=f"watcher-{name}", **options)
            watchers[name] = await stack.enter_async_context(watcher)
            await watchers[name].subscribe(TOPIC, callback=reporter(name, since))
            app = Client(node.client_endpoint, client_id=f"{USERS[name]}-app", **options)
            apps[name] = await stack.enter_async_context(app)

        for name, user in USERS.items():
            say(f"{user}'s app tracks {user} in {TOPIC} through node {name}")
            await apps[name].track(TOPIC, user, {"via": name})

        async def lists(names: list[str]) -> dict[str, set[str]]:
            return {n: {str(k) for k, _ in await watchers[n].list(TOPIC)} for n in names}

        everyone = set(USERS.values())

        async def converged() -> bool:
            return all(seen == everyone for seen in (await lists(list(nodes))).values())

        await until(converged, "every node to list every user")
        say(f"Converged: every node sees {', '.join(sorted(everyone))} in {TOPIC}")

        c = nodes["c"]
        say("SIGKILL node c: it dies without a word; the others notice only its silence")
        c.kill()
        await c.wait()
        since["kill"] = time.monotonic()
        say(f"a and b keep carol until c has been silent for down_period ({DOWN_PERIOD:g} s)")

        async def c_gone() -> bool:
            seen = await lists(["a", "b"])
            return all(users == everyone - {"carol"} for users in seen.values())

        await until(c_gone, "a and b to drop c's user")
        del since["kill"]
        status = await watchers["a"].status()
        say(f"node a now sees replica c as {status['replicas']['c']['status']}")

        old_vsn = c.vsn
        say("restarting node c on the same ports")
        await c.start([a.endpoint])
        say(f"node c is back as a new incarnation: vsn {c.vsn} (was {old_vsn})")

        await until(lambda: _true(apps["c"].resyncs > 0), "carol's app to notice the restart")
        say(
            "carol's app: node c answered 'unknown session' (it restarted), so the app "
            "opened a new session and re-tracked carol"
        )

        async def rejoined() -> bool:
            status = await watchers["a"].status()
            replica = status["replicas"].get("c", {})
            return replica.get("vsn") == c.vsn and replica.get("status") == "up"

        await until(rejoined, "node a to see the new c")
        await until(converged, "every node to list every user again")
        say(f"Rejoined: node a sees replica c up with vsn {c.vsn}")
        say(f"Converged again: every node sees {', '.join(sorted(everyone))} in {TOPIC}")

        command = ["tracker-zmq", "list", TOPIC, "--node", c.client_endpoint]
        say("any process can ask a node what it sees: " + " ".join(command))
        listing = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tracker_zmq", *command[1:], stdout=asyncio.subprocess.PIPE
        )
        output, _ = await listing.communicate()
        for line in output.decode().splitlines():
            print(f"         {line}")
        say("the apps close their sessions (bye): their users leave at once, everywhere")

    say("stopping the nodes with SIGTERM")
    codes = await asyncio.gather(*(node.terminate() for node in nodes.values()))
    say("exit codes: " + ", ".join(f"{n}={code}" for n, code in zip(nodes, codes, strict=True)))
    if any(codes):
        raise DemoFailed("a node did not shut down cleanly")


async def _true(value: bool) -> bool:
    return value


def show_logs(log_dir: Path) -> None:
    for log in sorted(log_dir.glob("*.log")):
        print(f"--- {log.name} (last lines)", file=sys.stderr)
        print("\n".join(log.read_text().splitlines()[-15:]), file=sys.stderr)


async def main_async() -> int:
    print("tracker-zmq demo: three nodes on 127.0.0.1, one of them crashes and comes back.")
    with tempfile.TemporaryDirectory(prefix="tracker-zmq-demo-") as tmp:
        log_dir = Path(tmp)
        nodes = {name: NodeProcess(name, log_dir) for name in USERS}
        try:
            await demo(log_dir, nodes)
        except DemoFailed as exc:
            print(f"\nDemo failed: {exc}", file=sys.stderr)
            show_logs(log_dir)
            return 1
        finally:
            # leave no process behind, whatever happened
            for node in nodes.values():
                node.kill()
            for node in nodes.values():
                if node.proc is not None:
                    await node.proc.wait()
    print(f"\nDone in {time.monotonic() - START:.1f} s; no process left running.")
    return 0


def main() -> int:
    try:
        return asyncio.run(main_async())
    except KeyboardInterrupt:
        print("\nInterrupted; every node process was stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

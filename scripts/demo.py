"""The demo `make demo` runs: a three-node tracker cluster on loopback survives a crash.

It starts three ``tracker-zmq node`` processes (a, b and c) on 127.0.0.1, tracks one
user on each node through the Python client (as three apps would), and watches every
node's diffs. Then it SIGKILLs node c: after ``down_period`` the other nodes report
c's user leaving. It restarts c on the same ports: c comes back as a new incarnation
(vsn), the user's app re-tracks through it, and every node converges again. Each line
says what happened, on which node, and when (seconds since the start). The demo stops
every process it started, also on failure or Ctrl-C. It takes about 15 seconds.

The nodes also serve browsers (``--websocket-bind``, ``--token-secret-file``,
``--websocket-demo-page``): the demo signs a token for a few users with a secret of its
own and prints one URL per user; open each in its own tab (or browser) and each tab is
that user, in the same room as the apps' users. Node b's HTTP API lists the room in the
terminal too. With ``--browse`` (``make demo`` gives it) the nodes keep serving after
the story until Enter or Ctrl-C, so the URLs stay open.

The crdt-state simulation that used to be the demo is ``scripts/demo_crdt.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the root, for tests.support
from tests.support.proc import CliNode, NodeError, free_port, spawner
from tracker_zmq import Client, ClientDiff

try:
    import jwt  # PyJWT, in tracker-zmq[web] as the websocket endpoint is
except ImportError:  # pragma: no cover - the venv has it
    jwt = None

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
BROWSER_USERS = {"a": "dana", "b": "eli", "c": "fern"}  # a tab each, on these nodes
DOWN_PERIOD = 2.0
DEADLINE = 20.0  # seconds any one step may take before the demo gives up

START = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - START:5.1f}s] {text}", flush=True)


class DemoFailed(Exception):
    """A step did not happen within its deadline."""


async def until(condition: Any, what: str, timeout: float = DEADLINE) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise DemoFailed(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def sign(secret: str, user: str, node: str) -> str:
    """A token as a backend signs it: ``user`` may join, be present and publish in
    ``room:*`` for a day (docs/node.md, Tokens)."""
    assert jwt is not None
    claims = {
        "sub": user,
        "exp": int(time.time()) + 24 * 3600,
        "meta": {"via": f"{node}, a browser"},
        "channels": ["room:*"],
        "track": ["room:*"],
        "publish": ["room:*"],
    }
    return str(jwt.encode(claims, secret, algorithm="HS256"))


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


async def demo(log_dir: Path, start: Callable[..., CliNode], browse: bool = False) -> None:
    say(f"starting nodes a, b and c on 127.0.0.1 (their logs: {log_dir})")
    ports = {name: (free_port(), free_port(), free_port()) for name in USERS}
    seed = f"tcp://127.0.0.1:{ports['a'][0]}"
    secret_file = log_dir / "token-secret"
    secret_file.write_text(secrets.token_hex(32) + "\n")
    secret_file.chmod(0o600)
    api_key_file = log_dir / "api-key"
    api_key_file.write_text(secrets.token_hex(32) + "\n")
    api_key_file.chmod(0o600)
    web = jwt is not None

    def launch(name: str) -> CliNode:
        peers = () if name == "a" else (seed,)  # c knows only a: it finds b by gossip
        port, client_port, web_port = ports[name]
        web_options = (
            "--websocket-bind", f"127.0.0.1:{web_port}",
            "--token-secret-file", str(secret_file),
            "--api-key-file", str(api_key_file),
            "--websocket-demo-page",
        ) if web else ()  # fmt: skip
        return start(
            name,
            log_dir,
            *NODE_OPTIONS,
            *web_options,
            peers=peers,
            port=port,
            client_port=client_port,
            strict=False,
        )

    started = await asyncio.gather(*(asyncio.to_thread(launch, name) for name in USERS))
    nodes = dict(zip(USERS, started, strict=True))
    for node in nodes.values():
        say(f"node {node.name} is up: vsn {node.vsn}, clients on {node.client_endpoint}")
    if web:
        secret = secret_file.read_text().strip()
        if browse:
            say("browsers: open each URL in its own tab; each tab is that user, in " + TOPIC)
        else:  # the nodes stop when the story ends: the URLs are good until then only
            say(f"browsers: each URL is that user in {TOPIC}; run with --browse to open them")
        for name, user in BROWSER_USERS.items():
            http = nodes[name].ready["websocket"].replace("ws://", "http://")
            page = http.removesuffix("/socket") + f"/?topic={TOPIC}&token="
            print(f"         {user} on node {name}: {page}{sign(secret, user, name)}", flush=True)
    else:
        say("(no browsers: PyJWT is missing; pip install 'tracker-zmq[web]')")

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

        everyone = set(USERS.values())

        async def lists(names: list[str]) -> dict[str, set[str]]:
            # the apps' users only: browser tabs may come and go meanwhile
            return {n: {str(k) for k, _ in await watchers[n].list(TOPIC)} & everyone for n in names}

        async def converged() -> bool:
            return all(seen == everyone for seen in (await lists(list(nodes))).values())

        await until(converged, "every node to list every user")
        say(f"Converged: every node sees {', '.join(sorted(everyone))} in {TOPIC}")
        if web:
            api_key = api_key_file.read_text().strip()
            listed = await asyncio.to_thread(presence_api, nodes["b"], api_key)
            say(
                f"node b's HTTP API (GET /api/presence/{TOPIC}, what a backend asks) lists: "
                + ", ".join(sorted(listed))
            )

        c = nodes["c"]
        say("SIGKILL node c: it dies without a word; the others notice only its silence")
        await asyncio.to_thread(c.kill)
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
        c = nodes["c"] = await asyncio.to_thread(launch, "c")
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
        if web and browse:
            say("the nodes keep serving the browser URLs above: press Enter (or Ctrl-C) to stop")
            await asyncio.to_thread(sys.stdin.readline)
        say("the apps close their sessions (bye): their users leave at once, everywhere")

    say("stopping the nodes with SIGTERM")
    codes = await asyncio.gather(*(asyncio.to_thread(n.terminate) for n in nodes.values()))
    say("exit codes: " + ", ".join(f"{n}={code}" for n, code in zip(nodes, codes, strict=True)))
    if any(codes):
        raise DemoFailed("a node did not shut down cleanly")


async def _true(value: bool) -> bool:
    return value


def presence_api(node: CliNode, api_key: str) -> dict[str, Any]:
    """``GET /api/presence/TOPIC`` of ``node``'s HTTP API, as a backend calls it."""
    http = node.ready["websocket"].replace("ws://", "http://").removesuffix("/socket")
    request = urllib.request.Request(f"{http}/api/presence/{TOPIC}")
    request.add_header("authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(request, timeout=DEADLINE) as response:
        listed: dict[str, Any] = json.loads(response.read())
        return listed


def show_logs(log_dir: Path) -> None:
    for log in sorted(log_dir.glob("*.log")):
        print(f"--- {log.name} (last lines)", file=sys.stderr)
        print("\n".join(log.read_text().splitlines()[-15:]), file=sys.stderr)


async def main_async(browse: bool = False) -> int:
    print("tracker-zmq demo: three nodes on 127.0.0.1, one of them crashes and comes back.")
    with tempfile.TemporaryDirectory(prefix="tracker-zmq-demo-") as tmp:
        log_dir = Path(tmp)
        try:
            # leave no process behind, whatever happened: SIGTERM, then SIGKILL
            with spawner(CliNode) as start:
                await demo(log_dir, start, browse)
        except (DemoFailed, NodeError) as exc:
            print(f"\nDemo failed: {exc}", file=sys.stderr)
            show_logs(log_dir)
            return 1
    print(f"\nDone in {time.monotonic() - START:.1f} s; no process left running.")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--browse",
        action="store_true",
        help="after the story, keep the nodes serving the browser URLs until Enter",
    )
    args = parser.parse_args()
    try:
        return asyncio.run(main_async(args.browse))
    except KeyboardInterrupt:
        print("\nInterrupted; every node process was stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

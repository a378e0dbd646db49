"""Install each package the way a user would, in fresh virtual environments, and import it.

crdt-state and pubsub-zmq must each install alone; tracker-zmq installs together with its
two siblings in one command, and ``tracker_zmq.channels`` imports there without any web
package. ``tracker-zmq[web]`` installs alone in another environment and serves one real
socket: a uvicorn server in-process, a ``websockets`` client that joins a channel and
gets its reply. Run by ``make check-install`` (part of ``make test``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES: list[tuple[str, list[str], str]] = [
    ("crdt-state", ["packages/crdt-state"], "crdt_state"),
    ("pubsub-zmq", ["packages/pubsub-zmq"], "pubsub_zmq"),
    (
        "tracker-zmq",
        ["packages/crdt-state", "packages/pubsub-zmq", "packages/tracker-zmq"],
        "tracker_zmq",
    ),
]

PURE_ASGI = """
import sys
import tracker_zmq.channels
web = {"uvicorn", "websockets", "jwt", "prometheus_client", "starlette"} & set(sys.modules)
assert not web, f"tracker_zmq.channels imports {web}"
print("tracker-zmq: tracker_zmq.channels imports no web package")
"""

SERVE_ONE_SOCKET = """
import asyncio, json
import uvicorn
from websockets.asyncio.client import connect
from pubsub_zmq import PubSub
from tracker_zmq import Presence
from tracker_zmq.channels import Channel, Endpoint

class Room(Channel):
    async def join(self, topic, payload):
        self.track("install-check", {})
        return {"joined": topic}

async def main():
    async with PubSub("install-check") as pubsub, Presence(pubsub) as presence:
        endpoint = Endpoint(presence, channels={"room:*": Room})
        config = uvicorn.Config(endpoint, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="off", ws="websockets-sansio")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/websocket?vsn=2.0.0"
        async with connect(url, subprotocols=["phoenix"]) as ws:
            await ws.send(json.dumps(["1", "1", "room:1", "phx_join", {}]))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        server.should_exit = True
        await task
        assert reply == ["1", "1", "room:1", "phx_reply",
                         {"status": "ok", "response": {"joined": "room:1"}}], reply
        print("tracker-zmq[web]: one socket joined a channel:", reply[4])

asyncio.run(main())
"""

DEMO_PAGE_FILES = """
from importlib import resources
static = resources.files("tracker_zmq.standalone").joinpath("static")
for name in ("index.html", "phoenix.mjs"):
    assert static.joinpath(name).is_file(), f"the wheel lacks standalone/static/{name}"
print("tracker-zmq[web]: the standalone node's demo page and phoenix.js are installed")
"""

WEB = ["packages/crdt-state", "packages/pubsub-zmq", "packages/tracker-zmq[web]"]


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="install-check-"))
    try:
        for name, paths, module in CASES:
            env_dir = base / name
            run([sys.executable, "-m", "venv", str(env_dir)])
            py = str(env_dir / "bin" / "python")
            run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *paths])
            code = (
                f"import {module}, sys; "
                f"assert 'hypothesis' not in sys.modules, 'imports an optional dependency'; "
                f"print('{name}: import {module} ok, version', {module}.__version__)"
            )
            run([py, "-c", code])
            if module == "tracker_zmq":
                run([py, "-c", PURE_ASGI])
        env_dir = base / "tracker-zmq-web"
        run([sys.executable, "-m", "venv", str(env_dir)])
        py = str(env_dir / "bin" / "python")
        run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *WEB])
        run([py, "-c", SERVE_ONE_SOCKET])
        run([py, "-c", DEMO_PAGE_FILES])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

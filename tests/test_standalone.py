"""The standalone node serves browsers: ``tracker-zmq node --websocket-bind ...``.

Real processes: two ``python -m tracker_zmq node`` processes clustered on 127.0.0.1, each
serving websockets with signed tokens (PyJWT, HS256, as a backend signs them) and the
HTTP API; real phoenix.js clients (``tests/js/channel_client.js`` under Node.js, the
``Client`` of tests/test_channels_js.py). The tests cover what a token allows (join,
track, publish, follow, the meta), what it refuses (a forged, expired or missing token:
HTTP 403; a join outside ``channels`` or of a reserved topic: ``unauthorized``; a push
outside ``publish``: ``forbidden``), a token that expires while connected, the backend's
HTTP API through either node (broadcast, disconnect, presence; its errors), a node
SIGKILLed under its users (they leave the others' lists after ``down_period``, and
reappear once a load balancer sends them to the other node), a flood of bad-token
connects from another process that does not stop a good client's broadcasts, the flags'
errors, and TLS.

The ban test (a ``disconnect`` with ``ban_seconds`` refuses reconnects until it ends)
needs the endpoint's ban enforcement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
import websockets.sync.client

from tests.support.js import node_binary
from tests.support.proc import (
    FAST_NODE_OPTIONS,
    ROOT,
    CliNode,
    NodeError,
    Process,
    spawner,
    wait_until,
)
from tests.test_channels_js import Client, is_message

pytestmark = pytest.mark.cluster

SECRET = "s3cr3t-" + "k" * 40  # the token secret the backend shares with the nodes
OLD_SECRET = "old-" + "o" * 40  # a second line of the file: it verifies too (rotation)
API_KEY = "api-" + "a" * 40
WAIT = 30.0
UNAUTHORIZED = {"reason": "unauthorized"}
UNMATCHED = {"reason": "unmatched topic"}


def write_secret(path: Path, *lines: str, mode: int = 0o600) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    path.chmod(mode)
    return path


def token(sub: str, secret: str = SECRET, ttl: float = 600, **claims: Any) -> str:
    """A token as a backend signs it: every right on ``room:*`` unless told otherwise."""
    body: dict[str, Any] = {
        "sub": sub,
        "exp": int(time.time() + ttl),
        "channels": ["room:*"],
        "track": ["room:*"],
        "publish": ["room:*"],
        **claims,
    }
    return jwt.encode(body, secret, algorithm="HS256")


class WebNode(CliNode):
    """A ``tracker-zmq node`` serving websockets; ``url`` (ws) and ``http`` from its ready line."""

    def __init__(self, name: str, log_dir: Path, *options: str, **kwargs: Any) -> None:
        super().__init__(name, log_dir, *FAST_NODE_OPTIONS, *options, **kwargs)
        self.url: str = self.ready["websocket"]
        self.http = self.url.replace("ws://", "http://").removesuffix("/socket")

    def tail(self) -> str:
        self._log.flush()
        return f"\n{self.log_path.read_text()[-3000:]}"


def api(
    node: WebNode, method: str, path: str, body: Any = None, key: str | None = API_KEY
) -> tuple[int, Any]:
    """One HTTP API request; ``(status, JSON body)``."""
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(node.http + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if key is not None:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


def raw_status(node: WebNode, request: bytes) -> int:
    """Send raw HTTP bytes to the node's port; the status code of its answer."""
    port = int(node.http.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return int(answer.split()[1])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("standalone")
    return {
        "dir": folder,
        "secret": write_secret(folder / "secret", OLD_SECRET, SECRET),
        "api": write_secret(folder / "api-key", API_KEY),
    }


def web_options(files: dict[str, Path], *more: str) -> tuple[str, ...]:
    return (
        "--websocket-bind", "127.0.0.1:0",
        "--token-secret-file", str(files["secret"]),
        "--api-key-file", str(files["api"]),
        "--token-leeway", "0",
        *more,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(files: dict[str, Path]) -> Iterator[tuple[WebNode, WebNode]]:
    """Two nodes serving websockets, clustered: each test uses its own topics and users."""
    node_binary()
    with spawner(WebNode) as start:
        a = start("a", files["dir"] / "logs", *web_options(files))
        b = start("b", files["dir"] / "logs", *web_options(files), peers=(a.endpoint,))
        wait_until(lambda: api(a, "GET", "/api/presence/room:none")[0] == 200, WAIT, "a's API")
        yield a, b


@pytest.fixture
def clients() -> Iterator[Callable[[str], Client]]:
    """Start phoenix.js clients: ``clients("alice")``; all stopped at the end."""
    node_binary()
    with spawner(Client) as start:
        yield start


def online(client: Client, url: str, tok: str, **options: Any) -> Client:
    """Connect ``client`` with the connect param ``token``; wait for the socket to open."""
    since = client.mark()
    client.connect(url, params={"token": tok}, **options)
    client.wait(lambda e: e["ev"] == "open", "open", since)
    return client


def refused(client: Client, url: str, **options: Any) -> dict[str, Any]:
    """Connect, and wait for the HTTP 403 phoenix.js reports; the socket never opens."""
    client.connect(url, reconnectAfterMs=600_000, **options)
    error = client.wait(lambda e: e["ev"] == "error", "a refused connection")
    assert "403" in error["message"], error
    client.command("disconnect")
    assert client.count("open") == 0
    return error


def test_users_on_two_nodes_see_each_other_as_their_tokens_allow(cluster, clients):
    a, b = cluster
    alice = online(clients("alice"), a.url, token("alice", meta={"name": "Alice"}))
    bob = clients("bob")  # phoenix.js's authToken, signed with the file's other secret
    bob.connect(b.url, authToken=token("bob", OLD_SECRET, meta={"name": "Bob"}))
    bob.wait(lambda e: e["ev"] == "open", "open")

    # a join's ok reply, then presence_state; the token's meta wins over the join's
    joined = alice.join("room:lobby", {"meta": {"name": "Mallory", "device": "laptop"}})
    assert joined == {"ev": "join", "topic": "room:lobby", "status": "ok", "response": {}}
    assert bob.join("room:lobby")["status"] == "ok"
    for client in (alice, bob):
        metas = client.present("room:lobby", {"alice", "bob"})
        assert [(m["name"], m.get("device")) for m in metas["alice"]] == [("Alice", "laptop")]
        assert [m["name"] for m in metas["bob"]] == ["Bob"]
    state = alice.wait(lambda e: is_message(e, "presence_state"), "presence_state")
    assert "alice" in state["payload"]
    for node in (a, b):
        status, listed = api(node, "GET", "/api/presence/room:lobby")
        assert status == 200
        assert listed.keys() == {"alice", "bob"}
        assert [m["name"] for m in listed["alice"]["metas"]] == ["Alice"]

    # publish: the others get the push, payload unchanged, on both nodes; the sender
    # does not (broadcast_from); the reply is ok {}
    since = alice.mark()
    reply = bob.push("room:lobby", "shout", {"body": "hi", "n": [1, 2]}, id=1)
    assert (reply["status"], reply["response"]) == ("ok", {})
    alice.wait(
        lambda e: is_message(e, "shout") and e["payload"] == {"body": "hi", "n": [1, 2]},
        "shout",
        since,
    )
    reply = alice.push("room:lobby", "shout", {"body": "back"}, id=2)
    assert reply["status"] == "ok"
    bob.wait(lambda e: is_message(e, "shout") and e["payload"] == {"body": "back"}, "shout")
    assert bob.messages("room:lobby", "shout") == [{"body": "back"}]

    # a watcher: may join but not track or publish; its join still gets presence_state
    carol = online(
        clients("carol"),
        a.url,
        token("carol", channels=["room:*", "friends:*"], track=[], publish=[], follow=["room:*"]),
    )
    assert carol.join("room:lobby")["status"] == "ok"
    carol.present("room:lobby", {"alice", "bob"})
    reply = carol.push("room:lobby", "shout", {"body": "let me in"}, id=3)
    assert (reply["status"], reply["response"]) == ("error", {"reason": "forbidden"})
    reply = alice.push("room:lobby", "phx_custom", {}, id=4)
    assert (reply["status"], reply["response"]) == ("error", {"reason": "forbidden"})

    # follow: the channel's view is the followed topics' union
    assert carol.join("friends:carol", {"follow": ["room:lobby"]})["status"] == "ok"
    carol.present("friends:carol", {"alice", "bob"})
    refused_follow = carol.join("friends:x", {"follow": ["secret:room"]}, presence=False)
    assert refused_follow["response"] == {"reason": "unauthorized"}

    # joins outside the token's channels, and of reserved topics, are refused; the
    # socket lives on
    for topic in ("secret:room", "user_socket:bob", "user_socket:alice", "phx_bans"):
        refused_join = alice.join(topic, presence=False)
        assert (refused_join["status"], refused_join["response"]) == (
            "error",
            {"reason": "unauthorized"},
        ), topic
        alice.command("leave", topic=topic)  # phoenix.js would retry the join
    # a raw frame pushed to a socket-id topic (phoenix.js would not send it unjoined)
    # reaches nothing: bob stays connected
    uri = f"{a.url}/websocket?vsn=2.0.0&token={token('mallory', channels=['*'])}"
    with websockets.sync.client.connect(uri, open_timeout=WAIT) as raw:
        for frame in (
            [None, "1", "user_socket:bob", "disconnect", {}],
            [None, "2", "phx_bans", "ban", {"socket_id": "user_socket:bob", "ban_seconds": 60}],
        ):
            raw.send(json.dumps(frame))
            reply = json.loads(raw.recv(WAIT))
            assert reply[3:] == ["phx_reply", {"status": "error", "response": UNMATCHED}]
        raw.send(json.dumps(["3", "3", "user_socket:bob", "phx_join", {}]))
        reply = json.loads(raw.recv(WAIT))
        assert reply[3:] == ["phx_reply", {"status": "error", "response": UNAUTHORIZED}]
    assert bob.count("close") == alice.count("close") == 0

    # a leave: alice leaves both nodes' lists
    alice.command("leave", topic="room:lobby")
    bob.present("room:lobby", {"bob"})


def test_missing_forged_and_expired_tokens_are_refused_at_connect(cluster, clients):
    a, b = cluster
    refused(clients("nothing"), a.url)
    refused(clients("forged"), a.url, params={"token": token("mallory", "x" * 40)})
    refused(clients("garbage"), b.url, authToken="not-a-jwt")
    refused(clients("expired"), b.url, params={"token": token("old", ttl=-60)})
    no_exp = jwt.encode({"sub": "eve", "channels": ["*"]}, SECRET, algorithm="HS256")
    refused(clients("no-exp"), a.url, params={"token": no_exp})
    none = jwt.encode({"sub": "eve", "exp": int(time.time()) + 60}, None, algorithm="none")  # type: ignore[arg-type]
    refused(clients("alg-none"), a.url, params={"token": none})
    # the same-host Origin rule of the Endpoint
    refused(
        clients("evil-origin"), a.url, params={"token": token("eve")}, origin="http://evil.example"
    )


def test_tokens_never_reach_the_nodes_log(cluster, clients):
    """uvicorn logs each handshake with its query string; the token's value is filtered."""
    a, _ = cluster
    good, forged = token("ivy"), token("ivy", "f" * 40)
    before = a.log().count("token=[FILTERED]")
    online(clients("ivy"), a.url, good)
    refused(clients("ivy-forged"), a.url, params={"token": forged})
    lines = lambda: a.log().count("token=[FILTERED]") >= before + 2  # noqa: E731
    wait_until(lines, WAIT, "the two handshake lines")
    log_text = a.log()
    assert good not in log_text, log_text
    assert forged not in log_text, log_text


def test_a_socket_closes_when_its_token_expires(cluster, clients):
    a, _ = cluster
    dora = online(clients("dora"), a.url, token("dora", ttl=4), reconnectAfterMs=600_000)
    assert dora.join("room:expiry")["status"] == "ok"
    closed = dora.wait(lambda e: e["ev"] == "close", "close at exp", timeout=WAIT)
    assert closed["code"] == 1008, closed
    wait_until(lambda: api(a, "GET", "/api/presence/room:expiry")[1] == {}, WAIT, "dora gone")


def test_backend_broadcast_and_presence_through_the_http_api_of_either_node(cluster, clients):
    a, b = cluster
    ed = online(clients("ed"), a.url, token("ed"))
    fay = online(clients("fay"), b.url, token("fay", publish=[]))
    for client in (ed, fay):
        assert client.join("room:news")["status"] == "ok"
    fay.present("room:news", {"ed", "fay"})
    for n, node in enumerate((a, b)):
        status, body = api(
            node,
            "POST",
            "/api/broadcast",
            {"topic": "room:news", "event": "notice", "payload": {"n": n}},
        )
        assert (status, body) == (200, {"ok": True})
        want = {"n": n}
        for client in (ed, fay):
            client.wait(lambda e, w=want: is_message(e, "notice") and e["payload"] == w, "notice")

    # the API's errors: no key, a wrong key, bad bodies, a body too large, a wrong method
    body = {"topic": "room:news", "event": "notice", "payload": {}}
    assert api(a, "POST", "/api/broadcast", body, key=None)[0] == 401
    assert api(a, "POST", "/api/broadcast", body, key="wrong" * 10)[0] == 401
    assert api(a, "GET", "/api/presence/room:news", key=None)[0] == 401
    for bad in (
        b"not json",
        b"[1]",
        {"topic": "room:news", "event": "notice", "payload": [1]},
        {"topic": "", "event": "notice"},
        {"topic": "room:news"},
        {"topic": "user_socket:ed", "event": "disconnect"},
        {"topic": "room:news", "event": "phx_close"},
        {**body, "extra": 1},
    ):
        status, error = api(a, "POST", "/api/broadcast", bad)
        assert (status, type(error["error"])) == (400, str), (bad, status, error)
    reserved = {"topic": "user_socket:ed", "event": "disconnect"}
    assert "POST /api/disconnect" in api(a, "POST", "/api/broadcast", reserved)[1]["error"]
    for bad in ({"socket_id": ""}, {"socket_id": "user_socket:ed", "ban_seconds": -1}, {}):
        status, error = api(b, "POST", "/api/disconnect", bad)
        assert (status, "error" in error) == (400, True), (bad, status, error)
    # a body over 1 MiB: declared (refused before it is read) or chunked (once read past
    # the bound); the client sends no more than that, so it reads the answer
    head = f"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
    assert raw_status(a, f"{head}Content-Length: {2 << 20}\r\n\r\n".encode()) == 413
    chunk = b"y" * (64 << 10)
    chunked = f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()
    chunked += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17))
    assert raw_status(b, chunked) == 413
    assert api(a, "GET", "/api/broadcast")[0] == 405
    assert api(a, "GET", "/api/nothing")[0] == 404
    assert ed.count("close") == fay.count("close") == 0
    assert ed.messages("room:news", "notice") == [{"n": 0}, {"n": 1}]


def test_backend_disconnect_through_the_http_api_closes_the_user_on_both_nodes(cluster, clients):
    a, b = cluster
    gil_a = online(clients("gil-a"), a.url, token("gil"), reconnectAfterMs=600_000)
    gil_b = online(clients("gil-b"), b.url, token("gil"), reconnectAfterMs=600_000)
    hal = online(clients("hal"), a.url, token("hal"), reconnectAfterMs=600_000)
    for client in (gil_a, gil_b, hal):
        assert client.join("room:kick")["status"] == "ok"
    since = hal.mark()
    hal.present("room:kick", {"gil", "hal"})
    assert api(b, "POST", "/api/disconnect", {"socket_id": "user_socket:gil"}) == (
        200,
        {"ok": True},
    )
    for client in (gil_a, gil_b):
        client.wait(lambda e: e["ev"] == "close", "close by the backend")
    hal.present("room:kick", {"hal"}, since)
    assert hal.count("close") == 0


def test_a_ban_refuses_reconnects_until_it_ends(cluster, clients):
    """Needs the endpoint's ban enforcement (the Endpoint refuses a banned socket id)."""
    a, b = cluster
    ivy = online(clients("ivy"), a.url, token("ivy"), reconnectAfterMs=300)
    assert ivy.join("room:ban")["status"] == "ok"
    since = ivy.mark()
    status, _ = api(
        b, "POST", "/api/disconnect", {"socket_id": "user_socket:ivy", "ban_seconds": 4}
    )
    assert status == 200
    ivy.wait(lambda e: e["ev"] == "close", "close by the ban", since)
    # phoenix.js retries every 0.3 s: refused (403) while the ban lasts, then let in
    error = ivy.wait(lambda e: e["ev"] in ("error", "open"), "a refused reconnect", since)
    assert error["ev"] == "error", error
    assert "403" in error["message"], error
    ivy.wait(lambda e: e["ev"] == "open", "a reconnect once the ban ended", since)
    ivy.wait(
        lambda e: e["ev"] == "join" and e["topic"] == "room:ban" and e["status"] == "ok",
        "rejoin",
        since,
    )
    # another user was never refused
    assert online(clients("jay"), b.url, token("jay")).count("error") == 0


class Balancer:
    """A TCP load balancer on 127.0.0.1 for one test: it forwards to its ``target`` port.

    Runs an asyncio loop in a thread; :meth:`point` changes the target for new
    connections (as a balancer does once its health check finds a node gone).
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(WAIT):
            raise NodeError("the balancer did not start")

    def point(self, target: int) -> None:
        self.target = target

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            for writer in self.writers:
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()


def test_a_node_killed_under_its_users_then_its_clients_reconnect_to_the_other(files, clients):
    node_binary()
    with spawner(WebNode) as start:
        a = start("ka", files["dir"] / "logs", *web_options(files))
        b = start("kb", files["dir"] / "logs", *web_options(files), peers=(a.endpoint,))
        port_of = lambda node: int(node.url.rsplit(":", 1)[1].split("/")[0])  # noqa: E731
        balancer = Balancer(port_of(a))
        try:
            url = f"ws://127.0.0.1:{balancer.port}/socket"
            kim = online(clients("kim"), url, token("kim"), reconnectAfterMs=300, rejoinAfterMs=300)
            lou = online(clients("lou"), b.url, token("lou"))
            for client in (kim, lou):
                assert client.join("room:crash")["status"] == "ok"
            lou.present("room:crash", {"kim", "lou"})
            since = lou.mark()
            a.kill()  # SIGKILL: no goodbye; b sees it down after down_period
            lou.present("room:crash", {"lou"}, since)
            # the balancer sends kim's reconnects to b; phoenix.js rejoins there
            balancer.point(port_of(b))
            since = lou.mark()
            kim.wait(lambda e: e["ev"] == "close", "close when a died")
            lou.present("room:crash", {"kim", "lou"}, since)
            kim.present("room:crash", {"kim", "lou"})
        finally:
            balancer.close()


def test_a_flood_of_bad_token_connects_does_not_stop_a_good_clients_broadcasts(cluster, clients):
    a, b = cluster
    port = int(a.url.rsplit(":", 1)[1].split("/")[0])
    # phoenix.js gives up on a reply after 10 s by default: on a loaded machine the flood
    # may delay one that long, and this test asserts delivery, not timing
    mia = online(clients("mia"), a.url, token("mia"), timeout=int(WAIT * 1000))
    ned = online(clients("ned"), b.url, token("ned"))
    for client in (mia, ned):
        assert client.join("room:flood")["status"] == "ok"
    ned.present("room:flood", {"mia", "ned"})
    flood = Process(
        "flood",
        [
            sys.executable,
            str(ROOT / "tests" / "standalone_flood.py"),
            "--port",
            str(port),
            "--rate",
            "1000",
            "--seconds",
            "3",
        ],
    )
    try:
        assert json.loads(flood.readline(WAIT)) == {"ready": "flood"}
        sent = 0
        while flood.running():  # mia publishes while the flood lasts: ned gets every one
            reply = mia.push("room:flood", "tick", {"n": sent}, id=1000 + sent)
            assert reply["status"] == "ok", reply
            sent += 1
        counts = json.loads(flood.readline(WAIT))
    finally:
        flood.stop()
    ned.wait(lambda e: is_message(e, "tick") and e["payload"] == {"n": sent - 1}, "the last tick")
    assert [m["n"] for m in ned.messages("room:flood", "tick")] == list(range(sent))
    assert sent >= 2
    assert counts["accepted"] == 0, counts
    assert counts["refused"] >= 500, counts  # the flood did happen
    assert mia.count("close") == ned.count("close") == 0


# ------------------------------------------------------------------- flags and TLS


def run_nodes(*argvs: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Start ``tracker-zmq node`` with each argument list at once; (status, stdout, stderr)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tracker_zmq", "node", "--name", "x", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # no terminal: OpenSSL asks no pass phrase on a tty
        )
        for args in argvs
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=WAIT)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def test_bad_flags_and_secret_files_are_refused_with_the_fix(files, tmp_path):
    bind = ("--websocket-bind", "127.0.0.1:0")
    secret = ("--token-secret-file", str(files["secret"]))
    open_file = write_secret(tmp_path / "open", SECRET, mode=0o640)
    if os.geteuid() == 0:  # a file owned by root may be group-readable (PostgreSQL's rule)
        os.chown(open_file, 65534, 65534)  # so this one belongs to nobody, as a user's would
    open_key = write_secret(tmp_path / "key", API_KEY, mode=0o604)
    cases = [
        (bind, "--websocket-bind needs --token-secret-file"),
        (secret, "need(s) --websocket-bind"),
        (("--websocket-bind", "nowhere", *secret), "HOST:PORT"),
        ((*bind, "--token-secret-file", str(tmp_path / "missing")), "does not exist"),
        ((*bind, "--token-secret-file", str(open_file)), f"chmod 600 {open_file}`"),
        ((*bind, "--token-secret-file", str(write_secret(tmp_path / "empty"))), "no secret"),
        ((*bind, *secret, "--api-key-file", str(open_key)), f"chmod 600 {open_key}`"),
        ((*bind, *secret, "--websocket-certfile", str(files["secret"])), "go together"),
    ]
    results = run_nodes(*(args for args, _ in cases))
    for (args, message), (status, out, err) in zip(cases, results, strict=True):
        assert status == 2, (args, err)
        assert message in err, (args, err)
        assert out == ""


def test_tls_files_that_do_not_load_are_named_in_the_error(files, tmp_path):
    cert = tmp_path / "not-a-cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    key = write_secret(tmp_path / "key.pem", "not a key either")
    encrypted = tmp_path / "encrypted.pem"  # a key with a pass phrase, and its certificate
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-passout", "pass:secret",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(encrypted),
         "-out", str(tmp_path / "cert.pem")],
        capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    pairs = [(cert, key), (tmp_path / "cert.pem", encrypted)]
    results = run_nodes(
        *((*web_options(files), "--websocket-certfile", str(c), "--websocket-keyfile", str(k))
          for c, k in pairs)
    )  # fmt: skip
    for (c, k), (status, out, err) in zip(pairs, results, strict=True):
        assert status == 1, err
        assert f"the TLS certificate {c} and key {k} do not load" in err, err
        assert "unencrypted PEM private key" in err
        assert out == ""


def test_tls_and_the_api_off_without_a_key_file(files, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    options = (
        "--websocket-bind", "127.0.0.1:0",
        "--token-secret-file", str(files["secret"]),
        "--websocket-certfile", str(cert),
        "--websocket-keyfile", str(key),
        "--websocket-allowed-origins", "https://app.example.com,https://www.example.com",
    )  # fmt: skip
    with spawner(CliNode) as start:
        node = start("tls", files["dir"] / "logs", *FAST_NODE_OPTIONS, *options)
        url = node.ready["websocket"]
        assert url.startswith("wss://127.0.0.1:")
        assert url.endswith("/socket")
        context = ssl.create_default_context(cafile=str(cert))

        async def talk(origin: str | None = "https://www.example.com") -> Any:
            uri = f"{url}/websocket?vsn=2.0.0&token={token('tess')}"
            async with websockets.connect(uri, ssl=context, open_timeout=WAIT, origin=origin) as ws:
                await ws.send(json.dumps(["1", "1", "room:tls", "phx_join", {}]))
                return json.loads(await asyncio.wait_for(ws.recv(), WAIT))

        assert asyncio.run(talk()) == [
            "1",
            "1",
            "room:tls",
            "phx_reply",
            {"status": "ok", "response": {}},
        ]

        async def forged() -> None:
            uri = f"{url}/websocket?vsn=2.0.0&token=forged"
            async with websockets.connect(uri, ssl=context, open_timeout=WAIT):
                pass

        with pytest.raises(websockets.InvalidStatus, match="403"):
            asyncio.run(forged())
        # --websocket-allowed-origins: a page of another origin is refused
        with pytest.raises(websockets.InvalidStatus, match="403"):
            asyncio.run(talk("https://evil.example"))
        # no --api-key-file: the API is off
        https = url.replace("wss://", "https://").removesuffix("/socket")
        request = urllib.request.Request(f"{https}/api/presence/room:tls")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=WAIT, context=context)
        assert info.value.code == 404
        info.value.close()
        assert node.terminate() == 0

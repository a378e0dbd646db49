"""The web app guide's page in a real browser: headless Chromium, two users, two servers.

Two ``docs/examples/webapp.py`` processes (FastAPI, a ``tracker_zmq.channels.Endpoint``,
clustered over pubsub-zmq) serve the page, which loads phoenix.js (``phoenix.mjs`` from
the npm package's ``priv/static``) and shows who is in the room with phoenix.js's
``Presence``. Chromium (Debian's ``chromium``, headless) opens alice's page on the first
server and bob's on the second, each in its own browser context, and the test reads what
each page shows through the DevTools protocol (a small client over ``websockets``): both
list alice and bob; a message alice sends shows on bob's page; when alice's tab closes,
bob's page lists bob alone. No page may throw.

Without Chromium this test skips and says how to install it (``make browser-deps``, as
root: ``apt-get install -y chromium chromium-driver``); ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.proc import NodeError, Process, spawner, wait_until
from tests.test_webapp_example import App

pytestmark = pytest.mark.cluster

# The flags Chromium needs on a machine with a closed network, as root, without a screen
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
WAIT = 30.0


def chromium_binary() -> str:
    """Debian's Chromium; skips the test (saying how to install it) when it is missing."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip(
            "Chromium is not installed: run `make browser-deps` as root (it runs "
            "`apt-get install -y chromium chromium-driver`); .ci/run does"
        )
    return binary


class DevTools:
    """A DevTools-protocol client over one websocket: commands, and the events seen."""

    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()  # websockets wants connect() as a context
        self.ws: ClientConnection = self._stack.enter_context(
            connect(url, max_size=None, proxy=None, open_timeout=WAIT)
        )
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command (to a page's ``session``, or the browser); its result."""
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodeError(f"Chromium did not answer {method} within {WAIT} s")
            answer = json.loads(self.ws.recv(timeout=left))
            if answer.get("id") != self.last_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise NodeError(f"Chromium refused {method}: {answer['error']}")
            result: dict[str, Any] = answer["result"]
            return result

    def close(self) -> None:
        self._stack.close()


class Browser(Process):
    """Headless Chromium with a fresh profile under ``profile``; its DevTools client.

    Args:
        profile: An empty folder for ``--user-data-dir``.
    """

    def __init__(self, profile: Path) -> None:
        command = [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.log_path = profile.parent / "chromium.log"
        self._log = self.log_path.open("w")
        super().__init__("chromium", command, stderr=self._log)
        try:
            # Chromium writes the port it picked and the browser's path to this file
            port_file = profile / "DevToolsActivePort"
            wait_until(
                lambda: len(port_file.read_text().split()) >= 2 if port_file.exists() else False,
                WAIT,
                "Chromium's DevToolsActivePort",
            )
            port, path = port_file.read_text().split()[:2]
            self.devtools = DevTools(f"ws://127.0.0.1:{port}{path}")
        except BaseException:
            self.stop()
            raise

    def tail(self) -> str:
        self._log.flush()
        return f"\n{self.log_path.read_text()[-3000:]}"

    def stop(self, grace: float = 5.0) -> None:
        """Close the browser through DevTools (its children go with it), then stop it."""
        devtools = getattr(self, "devtools", None)
        if devtools is not None and self.running():
            with contextlib.suppress(Exception):  # it may already be going: stop it anyway
                devtools.call("Browser.close")
            devtools.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        super().stop(grace)
        self._log.close()


class Page:
    """One tab, in its own browser context (cookies, storage): one user."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.devtools = browser.devtools
        context = self.devtools.call("Target.createBrowserContext")["browserContextId"]
        self.target = self.devtools.call(
            "Target.createTarget", url="about:blank", browserContextId=context
        )["targetId"]
        attached = self.devtools.call("Target.attachToTarget", targetId=self.target, flatten=True)
        self.session: str = attached["sessionId"]
        # listen before the page loads, so that no exception is missed
        self.devtools.call("Runtime.enable", self.session)
        self.devtools.call("Page.navigate", self.session, url=url)

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.devtools.call(
            "Runtime.evaluate", self.session, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise NodeError(f"the page threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[Any]:
        """The exceptions the page threw and the errors it logged."""
        return [
            event["params"]
            for event in self.devtools.events
            if event.get("sessionId") == self.session
            and (
                event.get("method") == "Runtime.exceptionThrown"
                or (
                    event.get("method") == "Runtime.consoleAPICalled"
                    and event["params"].get("type") == "error"
                )
            )
        ]

    def shows(self, expression: str, want: Any, what: str) -> None:
        """Wait until ``expression`` evaluates to ``want`` in the page."""
        deadline = time.monotonic() + WAIT
        while (value := self.eval(expression)) != want:
            if time.monotonic() > deadline:
                raise NodeError(
                    f"the page never showed {what}: {expression} is {value!r}, not {want!r}; "
                    f"problems: {self.problems()}"
                )
            time.sleep(0.1)

    def close(self) -> None:
        self.devtools.call("Target.closeTarget", targetId=self.target)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Headless Chromium with a fresh profile; closed at the end, also on failure."""
    (tmp_path / "profile").mkdir()
    with spawner(Browser) as start:
        yield start(tmp_path / "profile")


def test_two_users_on_two_servers_see_each_other_in_chromium(browser, tmp_path):
    with spawner(lambda *args: App(args[0], tmp_path, *args[1:])) as start:
        web1 = start("web-1")
        web2 = start("web-2", (web1.pubsub,))
        alice = Page(browser, f"{web1.http}/?user=alice&room=lobby")
        bob = Page(browser, f"{web2.http}/?user=bob&room=lobby")

        who = "document.getElementById('who').textContent"
        for page in (alice, bob):
            page.shows(who, "alice, bob", "alice and bob in the room")

        alice.eval(
            "document.getElementById('text').value = 'hello from alice';"
            "document.getElementById('say').requestSubmit(); true"
        )
        log = "Array.from(document.querySelectorAll('#log li'), (li) => li.textContent)"
        for page in (alice, bob):
            page.shows(log, ["alice: hello from alice"], "alice's message")

        assert alice.problems() == []
        alice.close()
        bob.shows(who, "bob", "bob alone once alice's tab closed")
        assert bob.problems() == []

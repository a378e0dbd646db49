"""The standalone node's demo page in a real browser: headless Chromium, two users, two nodes.

Two ``tracker-zmq node --websocket-bind ... --websocket-demo-page`` processes, clustered,
serve the page ``make demo`` prints URLs of (the vendored phoenix.js, no build step).
Chromium opens alice's page on node a and bob's on node b, each with its own signed
token and in its own browser context; both pages list alice and bob (phoenix.js's
``Presence`` over the built-in channel), a message alice sends shows on bob's page, and
once alice's tab closes bob's page lists bob alone. No page may throw. The helpers and
the skip rule (no Chromium: ``make browser-deps``) are tests/test_browser.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proc import spawner
from tests.test_browser import Browser, Page
from tests.test_standalone import API_KEY, OLD_SECRET, SECRET, WebNode, token, write_secret

pytestmark = pytest.mark.cluster


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Headless Chromium with a fresh profile; closed at the end, also on failure."""
    (tmp_path / "profile").mkdir()
    with spawner(Browser) as start:
        yield start(tmp_path / "profile")


def test_the_demo_page_shows_users_of_two_nodes_to_each_other(browser, tmp_path):
    options = (
        "--websocket-bind", "127.0.0.1:0",
        "--token-secret-file", str(write_secret(tmp_path / "secret", SECRET, OLD_SECRET)),
        "--api-key-file", str(write_secret(tmp_path / "api", API_KEY)),
        "--websocket-demo-page",
    )  # fmt: skip
    with spawner(WebNode) as start:
        a = start("a", tmp_path / "logs", *options)
        b = start("b", tmp_path / "logs", *options, peers=(a.endpoint,))
        alice = Page(browser, f"{a.http}/?topic=room:lobby&token={token('alice')}")
        bob = Page(browser, f"{b.http}/?topic=room:lobby&token={token('bob')}")

        who = "document.body.dataset.who || ''"
        for page in (alice, bob):
            page.shows(who, "alice,bob", "alice and bob in the room")
            page.shows("document.getElementById('status').textContent", "joined", "joined")

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

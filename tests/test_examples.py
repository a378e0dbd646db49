"""The demo and every example file the docs include run, and say what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Servers run until stopped: each has its own test (webapp.py: tests/test_webapp_example.py).
SERVERS = {"webapp.py"}
EXAMPLES = sorted(p for p in (ROOT / "docs" / "examples").glob("*.py") if p.name not in SERVERS)


def run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


@pytest.mark.cluster
def test_the_demo_survives_a_crash_and_says_so():
    done = run(ROOT / "scripts" / "demo.py")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Converged: every node sees alice, bob, carol in room:lobby" in out
    assert "SIGKILL node c" in out
    for node in ("a", "b"):
        assert f"node {node} reports carol left room:lobby (tracked on c, " in out
    assert "node c is back as a new incarnation" in out
    assert "re-tracked carol" in out
    assert "Rejoined: node a sees replica c up" in out
    assert "Converged again" in out
    assert "exit codes: a=0, b=0, c=0" in out
    assert "no process left running" in out


def test_the_crdt_demo_converges_and_says_so():
    done = run(ROOT / "scripts" / "demo_crdt.py")
    assert done.returncode == 0, done.stderr
    assert "netsplit" in done.stdout
    assert "Converged: yes" in done.stdout
    assert "c reports alice left room:lobby (tracked on a)" in done.stdout


def test_there_are_doc_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_doc_example_runs(path: Path):
    done = run(path)
    assert done.returncode == 0, done.stderr


def test_social_graph_tells_friends_only():
    done = run(ROOT / "docs" / "examples" / "social_graph.py")
    assert done.returncode == 0, done.stderr
    heard = dict(
        line.split(" heard: ", 1) for line in done.stdout.splitlines() if " heard: " in line
    )
    bob = heard["bob"].split("; ")
    assert sorted(bob) == sorted(
        ["carol is online", "alice is online", "alice is away", "alice went offline"]
    )
    assert [e for e in bob if "alice" in e] == [
        "alice is online",
        "alice is away",
        "alice went offline",
    ]
    assert heard["alice"] == "bob is online"
    # carol is not alice's friend: she never subscribed to user:alice, so heard nothing
    assert heard["carol"] == "bob is online"
    assert "alice" not in heard["carol"]

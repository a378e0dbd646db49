"""The demo and every example file the docs include run, and say what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))


def run(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_demo_converges_and_says_so():
    done = run(ROOT / "scripts" / "demo.py")
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

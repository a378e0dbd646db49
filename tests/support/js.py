"""Node.js for the tests that run the real phoenix npm client (tests/js)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent.parent / "js"
"""tests/js: the pinned npm packages (``npm ci`` by the Makefile) and the drivers."""


def node_binary(packages: tuple[str, ...] = ("phoenix", "ws")) -> str:
    """The ``node`` executable; fails (never skips) when Node.js or a package is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "`node` is not on PATH: these tests run the phoenix npm client under Node.js "
            "(>= 18); install Node.js, then `make pytest` (it runs npm ci in tests/js, and "
            "installs Node.js from PyPI into .venv where the machine has none)"
        )
    for package in packages:
        if not (JS / "node_modules" / package / "package.json").exists():
            pytest.fail(
                f"the {package} npm package is not installed in tests/js: run "
                "`npm ci --prefix tests/js --no-audit --no-fund` (make pytest does)"
            )
    return node

"""Fixtures shared by the cross-package tests (the harness itself is tests/support)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.proc import Process, spawner


@pytest.fixture
def spawn(request: pytest.FixtureRequest) -> Iterator[Callable[..., Process]]:
    """Start node processes of the test module's ``Node`` class: ``spawn("a", ...)``.

    Every node started is stopped at teardown, also on failure.
    """
    with spawner(request.module.Node) as start:
        yield start

"""asyncio helpers shared by the test suites (package tests import them as ``tests.aio``).

Tests wait on conditions with deadlines, never on fixed sleeps, and every async test
body runs in a fresh event loop that must end with no task left behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any


async def until(
    condition: Callable[[], bool],
    timeout: float = 5.0,  # noqa: ASYNC109 (a deadline for polling, not a cancel scope)
    message: str = "condition",
) -> float:
    """Poll ``condition`` until true; fail after ``timeout`` s. Returns the time taken."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run an async test body in a fresh loop; fail if it leaves a task behind."""

    async def main() -> Any:
        result = await coro_fn()
        await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"tasks leaked: {leftover}"
        return result

    return asyncio.run(main())

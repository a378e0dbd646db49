"""asyncio helpers of every test suite: run a test body, wait on a condition.

Tests wait on conditions with deadlines, never on fixed sleeps, and every async test
body runs in a fresh event loop that must end with no task left behind. pubsub-zmq is
the lowest asyncio layer, so the helpers live with its tests; pytest's ``pythonpath``
puts this folder on the path, and the pubsub-zmq, tracker-zmq and cross-package tests
import them as ``aio``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,  # noqa: ASYNC109 (a deadline for polling, not a cancel scope)
    message: str = "condition",
    *,
    interval: float = 0.005,
) -> float:
    """Poll ``condition`` (sync or async) every ``interval`` s until true.

    Returns the time taken; fails after ``timeout`` s.
    """
    start = time.monotonic()
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(interval)


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run an async test body in a fresh loop; fail if it leaves a task behind."""

    async def main() -> Any:
        result = await coro_fn()
        await asyncio.sleep(0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"tasks leaked: {leftover}"
        return result

    return asyncio.run(main())

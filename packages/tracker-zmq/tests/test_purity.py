"""The protocol core stays pure: no I/O, clock, threads, ZeroMQ or module-level randomness.

The Shard, its replicas, options and wire messages must behave the same under the
asyncio layer and under the simulator, so time and randomness come in as arguments.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tracker_zmq

SOURCE = Path(tracker_zmq.__file__).resolve().parent
PURE = ["errors.py", "options.py", "replica.py", "shard.py", "wire.py"]
FORBIDDEN = {"zmq", "asyncio", "socket", "threading", "time", "os", "io", "select", "pubsub_zmq"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def module_level_random_calls(path: Path) -> list[str]:
    """Calls such as ``random.random()``: randomness must come from an injected Random."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "random"
            and node.func.attr != "Random"
        ):
            calls.append(node.func.attr)
    return calls


@pytest.mark.parametrize("name", PURE)
def test_pure_module_imports_nothing_impure(name: str):
    bad = imports(SOURCE / name) & FORBIDDEN
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", PURE)
def test_pure_module_draws_no_module_level_randomness(name: str):
    assert not module_level_random_calls(SOURCE / name)

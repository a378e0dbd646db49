"""The pure modules import no I/O, no event loop and no clock (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "pubsub_zmq"
PURE = ["registry.py", "wire.py", "membership.py", "errors.py", "outbox.py", "options.py"]
FORBIDDEN = {"zmq", "asyncio", "socket", "threading", "time", "select", "selectors"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def local_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module + ".py")
    return out


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_nothing_impure(module: str) -> None:
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = SRC / name
        bad = imported(path) & FORBIDDEN
        assert not bad, f"{name} (reached from {module}) imports {bad}"
        todo.extend(local_imports(path))
    assert seen <= set(PURE), f"{module} reaches impure modules {seen - set(PURE)}"


@pytest.mark.parametrize("module", PURE)
def test_pure_module_uses_no_module_level_random(module: str) -> None:
    tree = ast.parse((SRC / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert not (node.value.id == "random" and node.attr != "Random"), (
                f"{module} calls random.{node.attr}: inject a random.Random instead"
            )

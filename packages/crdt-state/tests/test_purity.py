"""crdt_state stays pure: no I/O, clock, threads or module-level randomness, no globals.

Walks the source of every module: the State must behave the same wherever it runs, so
that the simulator and the tracker can drive it with injected time and randomness.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import crdt_state

SOURCE = Path(crdt_state.__file__).resolve().parent
MODULES = sorted(SOURCE.glob("*.py"))
FORBIDDEN = {"zmq", "asyncio", "socket", "threading", "time", "random", "os", "io", "select"}
# crdt_state.testing drives Hypothesis, whose randomness is the point; it still may not
# reach for I/O or clocks itself.
ALLOWED = {"testing.py": {"random"}}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_nothing_impure(path: Path):
    bad = (imported_modules(path) & FORBIDDEN) - ALLOWED.get(path.name, set())
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_import_crdt_state_pulls_in_no_optional_or_impure_module():
    code = (
        "import sys; import crdt_state; "
        "bad = [m for m in ('hypothesis', 'zmq', 'asyncio') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

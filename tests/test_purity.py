"""The pure modules stay pure: no I/O, event loop, clock, threads or module-level random.

STYLE.md: all of crdt_state, pubsub_zmq's local dispatch, wire format, membership view,
options, outgoing batch and version negotiation, and the tracker's protocol core (shard,
replica, wire, the client protocol and sessions, options, the simulator) behave the same
wherever they run: time comes in as an argument, randomness as an injected
``random.Random``. For each such module, this walks its imports and the imports of every
module of its own package that it reaches: none may import a forbidden module, each one
reached must be pure itself, and none may call module-level ``random`` functions. A
listed module that does not exist fails: the list is kept by hand.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import crdt_state
import pubsub_zmq
import tracker_zmq

FORBIDDEN = {"zmq", "asyncio", "socket", "threading", "time", "os", "io", "select", "selectors"}
"""Modules no pure module imports: I/O, event loops, clocks and threads."""

PACKAGES = {
    # package: (its folder, its pure modules, what they may not import besides FORBIDDEN)
    "crdt_state": (
        Path(crdt_state.__file__).resolve().parent,
        None,  # all of it
        {"random", "pubsub_zmq", "tracker_zmq"},
    ),
    "pubsub_zmq": (
        Path(pubsub_zmq.__file__).resolve().parent,
        ["errors", "membership", "options", "outbox", "partitions", "registry", "versions", "wire"],
        {"tracker_zmq"},
    ),
    "tracker_zmq": (
        Path(tracker_zmq.__file__).resolve().parent,
        [
            "channels.bans",
            "channels.coalesce",
            "channels.errors",
            "channels.wire",
            "errors",
            "options",
            "protocol",
            "replica",
            "sessions",
            "shard",
            "sharding",
            "standalone.tokens",
            "testing",
            "wire",
        ],
        {"pubsub_zmq"},
    ),
}


def pure_modules(package: str) -> list[str]:
    """The package's pure modules, dotted below the package ("state", "testing.model")."""
    folder, listed, _ = PACKAGES[package]
    if listed is not None:
        return listed
    found = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__")
    return found


CASES = [(package, module) for package in PACKAGES for module in pure_modules(package)]


def source(package: str, module: str) -> Path:
    """The file of ``package.module`` (a module or a subpackage's ``__init__``)."""
    folder = PACKAGES[package][0]
    if module == "__init__":
        return folder / "__init__.py"
    base = folder.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imports(package: str, module: str) -> tuple[set[str], set[str]]:
    """What a module imports: top-level names of everything, and modules of its package."""
    path = source(package, module)
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "__init__":
        here = []
    names: set[str] = set()
    local: set[str] = set()

    def own(dotted: list[str], name: str | None) -> None:
        # ``from pkg.a import b``: pkg/a/b.py when b is a module, else pkg/a itself
        if name is not None and source(package, ".".join([*dotted, name])).exists():
            local.add(".".join([*dotted, name]))
        else:
            local.add(".".join(dotted) or "__init__")

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, *rest = alias.name.split(".")
                names.add(top)
                if top == package:
                    own(rest, None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                dotted = [*base, *(node.module.split(".") if node.module else [])]
                for alias in node.names:
                    own(dotted, alias.name)
            elif node.module:
                top, *rest = node.module.split(".")
                names.add(top)
                if top == package:
                    for alias in node.names:
                        own(rest, alias.name)
    return names, local


def module_level_random(package: str, module: str) -> list[str]:
    """Uses such as ``random.random``: randomness must come from an injected Random."""
    tree = ast.parse(source(package, module).read_text())
    return [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "random"
        and node.attr != "Random"
    ]


@pytest.mark.parametrize(("package", "module"), CASES, ids=[f"{p}.{m}" for p, m in CASES])
def test_pure_module_reaches_nothing_impure(package: str, module: str) -> None:
    assert source(package, module).exists(), f"{package}.{module} is listed but does not exist"
    forbidden = FORBIDDEN | PACKAGES[package][2]
    pure = set(pure_modules(package))
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        names, local = imports(package, name)
        bad = names & forbidden
        assert not bad, f"{package}.{name} (reached from {module}) imports {sorted(bad)}"
        assert not module_level_random(package, name), (
            f"{package}.{name} calls module-level random: inject a random.Random instead"
        )
        todo.extend(local)
    assert seen <= pure, f"{package}.{module} reaches impure modules {sorted(seen - pure)}"


def test_import_crdt_state_pulls_in_no_optional_or_impure_module() -> None:
    code = (
        "import sys; import crdt_state; "
        "bad = [m for m in ('hypothesis', 'zmq', 'asyncio') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

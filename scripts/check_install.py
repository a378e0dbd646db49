"""Install each package the way a user would, in fresh virtual environments, and import it.

crdt-state and pubsub-zmq must each install alone; tracker-zmq installs together with its
two siblings in one command. Run by ``make check-install`` (part of ``make test``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES: list[tuple[str, list[str], str]] = [
    ("crdt-state", ["packages/crdt-state"], "crdt_state"),
    ("pubsub-zmq", ["packages/pubsub-zmq"], "pubsub_zmq"),
    (
        "tracker-zmq",
        ["packages/crdt-state", "packages/pubsub-zmq", "packages/tracker-zmq"],
        "tracker_zmq",
    ),
]


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="install-check-"))
    try:
        for name, paths, module in CASES:
            env_dir = base / name
            run([sys.executable, "-m", "venv", str(env_dir)])
            py = str(env_dir / "bin" / "python")
            run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *paths])
            code = (
                f"import {module}, sys; "
                f"assert 'hypothesis' not in sys.modules, 'imports an optional dependency'; "
                f"print('{name}: import {module} ok, version', {module}.__version__)"
            )
            run([py, "-c", code])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

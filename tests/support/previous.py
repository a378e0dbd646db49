"""The previous release, installed from this repository's own history (mixed-version tests).

:func:`install` makes, once per commit, ``.previous-release/<commit>/`` at the
repository root (git-ignored, removed by ``make clean``):

* ``src/``: ``packages/`` and ``tests/`` of that commit (``git archive <commit> packages
  tests | tar -x``);
* ``venv/``: a virtualenv holding the three packages of that commit, installed by pip
  as a user installs them (not editable);
* ``installed``: written last, so a build that was cut short is started over.

The build holds a lock file (``.previous-release/<commit>.lock``), so test runs that start
together build it once; later runs reuse it. A clone without the commit (a shallow clone)
raises :class:`PreviousReleaseError` saying to fetch the full history: the tests that need
the release fail, they are never skipped.

:class:`Release` names what the tests run of it: its interpreter (which runs its
``python -m tracker_zmq node`` and its :class:`~tracker_zmq.Client`), its CLI, and the
node scripts of its own ``tests/`` (``tracker_node.py`` drives an old node through the
in-process Tracker API, ``pubsub_node.py`` an old PubSub).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.previous_release import PREVIOUS_RELEASE
from tests.support.proc import ROOT

CACHE = ROOT / ".previous-release"
"""Where the installed releases are kept, one folder per commit."""

PACKAGES = ("packages/crdt-state", "packages/pubsub-zmq", "packages/tracker-zmq")
"""The three packages, in the order pip gets them."""

_INSTALL_TIMEOUT = 600.0  # seconds pip may take (it fetches orjson, pyzmq, setuptools)


class PreviousReleaseError(RuntimeError):
    """The previous release cannot be installed (not in this clone's history, or pip failed)."""


@dataclass(frozen=True, slots=True)
class Release:
    """One installed release of this repository.

    Attributes:
        commit: The full commit id.
        root: Its folder in the cache.
    """

    commit: str
    root: Path

    @property
    def source(self) -> Path:
        """``packages/`` and ``tests/`` of the commit, as archived."""
        return self.root / "src"

    @property
    def venv(self) -> Path:
        """The virtualenv holding its packages."""
        return self.root / "venv"

    @property
    def python(self) -> str:
        """Its interpreter: ``python -m tracker_zmq`` and ``import tracker_zmq`` are this
        release's."""
        return str(self.venv / "bin" / "python")

    @property
    def cli(self) -> str:
        """Its ``tracker-zmq`` command."""
        return str(self.venv / "bin" / "tracker-zmq")

    def script(self, name: str) -> Path:
        """A file of its own ``tests/`` folder (a node script such as ``tracker_node.py``)."""
        path = self.source / "tests" / name
        if not path.is_file():
            raise PreviousReleaseError(f"release {self.commit[:12]} has no tests/{name}")
        return path


def install(commit: str = PREVIOUS_RELEASE, cache: Path = CACHE, repo: Path = ROOT) -> Release:
    """The release of ``commit``, installed into ``cache`` unless it already is.

    Args:
        commit: A commit of this repository (any form ``git rev-parse`` reads).
        cache: The cache folder.
        repo: The clone whose history holds the commit (this one).

    Raises:
        PreviousReleaseError: The commit is not in this clone's history, or the install
            failed (with pip's output).
    """
    full = _resolve(repo, commit)
    cache.mkdir(parents=True, exist_ok=True)
    release = Release(full, cache / full[:12])
    done = release.root / "installed"
    with _locked(cache / f"{full[:12]}.lock"):
        if done.is_file() and done.read_text().strip() == full:
            return release
        if release.root.exists():  # an earlier build was cut short
            shutil.rmtree(release.root)
        release.source.mkdir(parents=True)
        _archive(repo, full, release.source)
        _run([sys.executable, "-m", "venv", str(release.venv)], "create the virtualenv")
        _run(
            [release.python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            + [str(release.source / package) for package in PACKAGES],
            "install the packages",
        )
        _check(release)
        done.write_text(full + "\n")
    return release


def _resolve(repo: Path, commit: str) -> str:
    found = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        shallow = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--is-shallow-repository"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        why = "this clone is shallow" if shallow == "true" else "it is not in this clone"
        raise PreviousReleaseError(
            f"the previous release {commit} (tests/previous_release.py) cannot be installed: "
            f"{why}. The mixed-version tests install it from the repository's history: "
            f"fetch the full history (`git fetch --unshallow`, or `git fetch origin "
            f"{commit}`) and run them again."
        )
    return found.stdout.strip()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _archive(repo: Path, commit: str, into: Path) -> None:
    """``git archive <commit> packages tests | tar -x -C <into>``."""
    archive = subprocess.Popen(
        ["git", "-C", str(repo), "archive", "--format=tar", commit, "packages", "tests"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert archive.stdout is not None
    try:
        tar = subprocess.run(
            ["tar", "-x", "-C", str(into)],
            stdin=archive.stdout,
            capture_output=True,
            check=False,
        )
    finally:
        archive.stdout.close()
        _, archive_err = archive.communicate()
    if archive.returncode != 0 or tar.returncode != 0:
        raise PreviousReleaseError(
            f"git archive {commit[:12]} | tar -x failed: "
            f"{archive_err.decode(errors='replace')}{tar.stderr.decode(errors='replace')}"
        )


def _run(command: list[str], what: str) -> None:
    # the tests' own environment points at this tree: the old release must not see it
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=env,
            timeout=_INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PreviousReleaseError(f"could not {what} within {_INSTALL_TIMEOUT} s") from None
    if done.returncode != 0:
        raise PreviousReleaseError(
            f"could not {what} of the previous release ({' '.join(command)}):\n"
            f"{done.stdout}{done.stderr}"
        )


def _check(release: Release) -> None:
    """Its interpreter imports the three packages from its own virtualenv, not this tree."""
    probe = (
        "import crdt_state, pubsub_zmq, tracker_zmq; "
        "print('\\n'.join(m.__file__ for m in (crdt_state, pubsub_zmq, tracker_zmq)))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [release.python, "-c", probe], capture_output=True, text=True, env=env, check=False
    )
    files = done.stdout.split()
    if done.returncode != 0 or len(files) != 3:
        raise PreviousReleaseError(f"the installed release does not import: {done.stderr}")
    for file in files:
        if not Path(file).resolve().is_relative_to(release.venv.resolve()):
            raise PreviousReleaseError(f"the installed release imports {file}, not its own")

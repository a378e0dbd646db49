"""The previous release: the commit of this repository that a rolling upgrade starts from.

``tests/test_rolling.py`` installs the three packages of this commit from the
repository's own history (:mod:`tests.support.previous`) and runs clusters that mix its
nodes and clients with this tree's. A release updates this commit to its own last
commit before the next wave of changes begins, so that every release is proven to
upgrade in place from the one before it.

The commit must be in the clone's history: a shallow clone fails the mixed-version tests
with a message saying to fetch the full history (``git fetch --unshallow``).
"""

from __future__ import annotations

PREVIOUS_RELEASE = "316520a"
"""The last commit before this release's wave (issue 11 names it): the release a rolling
upgrade to this tree starts from."""

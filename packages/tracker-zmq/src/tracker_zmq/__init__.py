"""Replicated presence tracker over ZeroMQ (a port of Phoenix.Tracker).

Not built yet: the tracker arrives with its own issue. The package installs and imports so
that the monorepo's install checks cover it from the start.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

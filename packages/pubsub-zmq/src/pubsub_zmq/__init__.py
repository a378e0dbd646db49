"""Cluster-wide pub/sub over a ZeroMQ mesh (a port of Phoenix.PubSub)."""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""DNS seeds: names that stand for the nodes of a cluster, looked up again and again.

Not pure (the default resolver asks the operating system). Phoenix clusters find each
other through libcluster's DNS strategies (``Cluster.Strategy.DNSPoll``: every address
a name resolves to is a node, polled periodically); this is the same for the ZeroMQ
mesh: ``PubSub(peer_dns=["tracker:4000"])`` makes every address ``tracker`` resolves to
a seed ``tcp://ADDRESS:4000``, looked up again every gossip round. A Kubernetes headless
service or a scaled compose service is such a name. The member table
(:mod:`pubsub_zmq.membership`) keeps the seeds; :class:`~pubsub_zmq.PubSub` runs the
lookups off the event loop and excludes its own endpoint.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["DnsSeed", "endpoint_for", "parse_dns_seed", "resolve"]


@dataclass(frozen=True, slots=True)
class DnsSeed:
    """A ``peer_dns`` entry: a name to look up, the port of every address it gives.

    Attributes:
        host: the name (or an address) to resolve.
        port: the control port of every node it stands for.
        key: the CURVE public key of those nodes (one key pair shared by the nodes of a
            service), or None without CURVE.
    """

    host: str
    port: int
    key: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_dns_seed(spec: str, key: str | None = None) -> DnsSeed:
    """Parse ``"HOST:PORT"`` (``"[v6 address]:PORT"`` for an IPv6 literal).

    Args:
        spec: the text, as given to ``peer_dns`` or ``--peer-dns``.
        key: the CURVE public key of the nodes behind it.

    Raises:
        ConfigError: not HOST:PORT with a port from 1 to 65535.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"a peer_dns entry is 'HOST:PORT', got {spec!r}")
    host, sep, port_text = spec.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or "://" in spec or not port_text.isdigit():
        raise ConfigError(f"a peer_dns entry is 'HOST:PORT' (no tcp://), got {spec!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"the port of peer_dns entry {spec!r} must be 1 to 65535")
    return DnsSeed(host, port, key)


def endpoint_for(address: str, port: int) -> str:
    """The control endpoint ``tcp://ADDRESS:PORT`` (an IPv6 address in brackets).

    Raises:
        ValueError: ``address`` is not a non-empty str.
    """
    if not isinstance(address, str) or not address or "/" in address:
        raise ValueError(f"a resolver returned {address!r}, not an address")
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"tcp://[{address}]:{port}"
    except ValueError:
        pass  # a host name: ZeroMQ resolves it when it connects
    return f"tcp://{address}:{port}"


async def resolve(host: str, port: int) -> list[str]:
    """The default resolver: the IPv4 addresses of ``host``, sorted.

    It asks the system resolver (``getaddrinfo``, which follows ``/etc/hosts`` and the
    cluster's DNS) through :meth:`asyncio.loop.getaddrinfo`, which runs it in a thread,
    so the event loop never waits on a slow name server. IPv4 only: the mesh's sockets
    are IPv4 sockets.

    Raises:
        OSError: the lookup failed (``socket.gaierror`` for an unknown name).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})

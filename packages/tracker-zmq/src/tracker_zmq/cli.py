"""The ``tracker-zmq`` command: run a standalone node, or ask one what it sees.

Not pure (sockets, signals, files). ``tracker-zmq node`` runs a :class:`~tracker_zmq.node.Node`
until SIGTERM or SIGINT; ``tracker-zmq list TOPIC --node ENDPOINT`` and ``tracker-zmq
status --node ENDPOINT`` talk to a running node's client endpoint. ``docs/node.md``
describes every option.

Exit status: 0 on success (and after a clean shutdown on a signal), 1 when the node
cannot start or does not answer, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import zmq.auth

from pubsub_zmq import ConfigError as PubSubConfigError
from pubsub_zmq import Options as PubSubOptions
from pubsub_zmq import Peer, PubSubError, load_keypair
from pubsub_zmq.curve import normalize_key
from tracker_zmq.client import Client, ClientError
from tracker_zmq.errors import ConfigError, TrackerError
from tracker_zmq.node import Node
from tracker_zmq.options import Options, check_positive
from tracker_zmq.sessions import ClientLimits

__all__ = ["main"]

log = logging.getLogger("tracker_zmq.cli")

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# every default is read from the class that owns it, never restated here
_TRACKER = Options.defaults()
_CLIENT = ClientLimits()
_PUBSUB = PubSubOptions()


class _UsageError(Exception):
    """A bad argument found after parsing (a key file that does not load, ...)."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    try:
        return check_positive("value", value)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _endpoint(text: str) -> str:
    if not text.startswith(("tcp://", "ipc://", "inproc://")):
        raise argparse.ArgumentTypeError(
            f"an endpoint looks like tcp://HOST:PORT or ipc:///PATH, not {text!r}"
        )
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracker-zmq",
        description="Run a standalone tracker node, or ask a running one what it sees.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = commands.add_parser(
        "node",
        help="run a node (PubSub + Tracker + client endpoint) until SIGTERM/SIGINT",
        description="Run a standalone tracker node until SIGTERM or SIGINT.",
    )
    node.add_argument("--name", required=True, help="this node's name, unique in the cluster")
    node.add_argument(
        "--bind",
        type=_endpoint,
        default="tcp://127.0.0.1:0",
        help="cluster endpoint other nodes list as --peer (default: tcp://127.0.0.1:0)",
    )
    node.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="ENDPOINT[,KEY]",
        help="a seed node's cluster endpoint; with CURVE add its public key (Z85 text or "
        "a key file) after a comma; repeat for several",
    )
    node.add_argument(
        "--client-bind",
        type=_endpoint,
        default="tcp://127.0.0.1:0",
        help="client endpoint (ROUTER) to bind (default: tcp://127.0.0.1:0)",
    )
    node.add_argument("--advertise-host", help="host peers should use when --bind is a wildcard")
    node.add_argument("--tracker-name", default="presence", help="tracker name (default: presence)")

    periods = node.add_argument_group("tracker periods (seconds), pool and presence limit")
    for name, kind in (
        ("broadcast_period", _positive_float),
        ("max_silent_periods", _positive_int),
    ):
        periods.add_argument(_flag(name), type=kind, default=_TRACKER[name])
    periods.add_argument(
        "--down-period",
        type=_positive_float,
        default=_TRACKER["down_period"],
        help="default: broadcast-period * max-silent-periods * 2",
    )
    for name, kind in (
        ("permdown_period", _positive_float),
        ("clock_sample_periods", _positive_int),
        ("pool_size", _positive_int),
    ):
        periods.add_argument(_flag(name), type=kind, default=_TRACKER[name])
    periods.add_argument(
        "--broadcast-pool-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="while changing --pool-size in two deployments: the pool size the other "
        "nodes still run (the first deployment sets both, the second --pool-size alone; "
        "see the operating guide, Re-sharding)",
    )
    periods.add_argument(
        "--max-presences",
        type=_positive_int,
        default=_TRACKER["max_presences"],
        metavar="N",
        help="most presences this node tracks at once, over all its clients; a track "
        "beyond it gets limit_exceeded (default: no limit)",
    )

    cluster = node.add_argument_group("cluster membership (seconds)")
    for name in ("gossip_interval", "peer_timeout", "start_timeout"):
        cluster.add_argument(_flag(name), type=_positive_float, default=getattr(_PUBSUB, name))
    cluster.add_argument(
        "--pubsub-pool-size",
        type=_positive_int,
        default=1,
        metavar="N",
        help="partitions of the mesh: PUB sockets and ZeroMQ I/O threads (default: 1)",
    )
    cluster.add_argument(
        "--pubsub-broadcast-pool-size",
        type=_positive_int,
        default=None,
        metavar="M",
        help="while changing --pubsub-pool-size in two deployments: the partitions "
        "broadcasts go out on (at most --pubsub-pool-size)",
    )

    curve = node.add_argument_group("CURVE security (keys from `pubsub-zmq keygen --out`)")
    curve.add_argument(
        "--curve-secret-key", type=Path, metavar="FILE", help="this node's NAME.key_secret file"
    )
    curve.add_argument(
        "--curve-allow",
        action="append",
        default=[],
        metavar="[NAME=]FILE|DIR",
        help="peers' public key files (or a directory of them); NAME= binds a key to a "
        "node name; repeat for several",
    )
    curve.add_argument(
        "--curve-client-allow",
        action="append",
        default=[],
        metavar="FILE|DIR",
        help="public key files of allowed clients (default: the --curve-allow keys)",
    )

    clients = node.add_argument_group("client sessions")
    for name, kind, text in (
        ("lease", _positive_float, "default lease, s"),
        ("min_lease", _positive_float, "shortest lease, s"),
        ("max_lease", _positive_float, "longest lease, s"),
        ("max_presences", _positive_int, "per session"),
        ("max_subscriptions", _positive_int, "per session"),
        ("max_sessions", _positive_int, "at once"),
        ("max_frame_bytes", _positive_int, "bytes"),
    ):
        clients.add_argument(
            _flag(f"client_{name}"),
            type=kind,
            default=getattr(_CLIENT, name),
            help=f"{text} (%(default)s)",
        )

    out = node.add_argument_group("logging and shutdown")
    out.add_argument(
        "--log-level",
        choices=_LEVELS,
        type=str.upper,
        default="INFO",
        help="least level of the log lines written to stderr (default: INFO)",
    )
    out.add_argument(
        "--event-log-level",
        choices=_LEVELS,
        type=str.upper,
        default="INFO",
        help="level of the replica up/down/permdown, diff and session lines (default: INFO)",
    )
    out.add_argument(
        "--permdown-on-shutdown",
        action="store_true",
        help="on SIGTERM/SIGINT tell peers to drop this node's presences at once",
    )

    for name, helptext in (
        ("list", "list the presences of a topic, cluster-wide, as a node sees them"),
        ("status", "show a node's replicas, peers and counters"),
    ):
        sub = commands.add_parser(name, help=helptext, description=helptext)
        if name == "list":
            sub.add_argument("topic", metavar="TOPIC")
            sub.add_argument("--int", action="store_true", help="TOPIC is an integer topic")
        sub.add_argument("--node", type=_endpoint, required=True, help="the node's client endpoint")
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        sub.add_argument("--timeout", type=_positive_float, default=3.0, help="seconds to wait (3)")
        sub.add_argument("--curve-secret-key", type=Path, metavar="FILE")
        sub.add_argument(
            "--curve-server-key", metavar="KEY|FILE", help="the node's public key (with CURVE)"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "node":
            return _node(args)
        return asyncio.run(_ask(args))
    except _UsageError as exc:
        parser.error(str(exc))  # exits with 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `tracker-zmq status --json | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (no flush error at exit)
        return 1


# ------------------------------------------------------------------ keys


def _public_key(text: str) -> str:
    """A public key: Z85 text, or a key file (zmq.auth certificate)."""
    if len(text) == 40:
        try:
            return normalize_key(text)
        except PubSubConfigError:
            pass
    path = Path(text)
    if not path.is_file():
        raise _UsageError(f"{text!r} is neither a Z85 public key nor a key file")
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise _UsageError(f"cannot read the public key in {path}: {exc}") from None
    return str(public.decode("ascii"))


def _key_files(spec: str) -> list[str]:
    path = Path(spec)
    if path.is_dir():
        keys = [key.decode("ascii") for key in zmq.auth.load_certificates(str(path))]
        if not keys:
            raise _UsageError(f"no public key files in {path}")
        return keys
    return [_public_key(spec)]


def _secret_key(path: Path) -> str:
    try:
        return load_keypair(path).secret
    except (OSError, ValueError) as exc:
        raise _UsageError(f"cannot read the secret key in {path}: {exc}") from None


def _curve_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.curve_secret_key is None:
        if args.curve_allow or args.curve_client_allow:
            raise _UsageError("--curve-allow and --curve-client-allow need --curve-secret-key")
        return {}
    named: dict[str, str] = {}
    plain: list[str] = []
    for spec in args.curve_allow:
        name, sep, file = spec.partition("=")
        if sep and not Path(spec).exists():
            named[name] = _public_key(file)
        else:
            plain.extend(_key_files(spec))
    if named and plain:
        raise _UsageError("--curve-allow: give every key a NAME= or none of them")
    client_keys = [key for spec in args.curve_client_allow for key in _key_files(spec)]
    return {
        "curve_secret_key": _secret_key(args.curve_secret_key),
        "curve_allow": named or plain,
        "curve_client_allow": client_keys or None,
    }


def _peers(args: argparse.Namespace) -> list[Peer]:
    peers: list[Peer] = []
    for spec in args.peer:
        endpoint, sep, key = spec.partition(",")
        _endpoint_or_error(endpoint)
        if sep:
            peers.append((endpoint, _public_key(key)))
        else:
            peers.append(endpoint)
    return peers


def _endpoint_or_error(text: str) -> None:
    try:
        _endpoint(text)
    except argparse.ArgumentTypeError as exc:
        raise _UsageError(f"--peer: {exc}") from None


# ------------------------------------------------------------------ node


def _node(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    peers = _peers(args)
    curve = _curve_options(args)
    tracker_options: dict[str, Any] = {
        "broadcast_period": args.broadcast_period,
        "max_silent_periods": args.max_silent_periods,
        "down_period": args.down_period,
        "permdown_period": args.permdown_period,
        "clock_sample_periods": args.clock_sample_periods,
        "pool_size": args.pool_size,
        "max_presences": args.max_presences,
    }
    if args.broadcast_pool_size is not None:
        tracker_options["broadcast_pool_size"] = args.broadcast_pool_size
    pubsub_options: dict[str, Any] = {
        "gossip_interval": args.gossip_interval,
        "peer_timeout": args.peer_timeout,
        "start_timeout": args.start_timeout,
    }
    if args.advertise_host:
        pubsub_options["advertise_host"] = args.advertise_host
    if args.pubsub_pool_size != 1 or args.pubsub_broadcast_pool_size is not None:
        pubsub_options["pool_size"] = args.pubsub_pool_size
        pubsub_options["broadcast_pool_size"] = args.pubsub_broadcast_pool_size
    try:
        limits = ClientLimits(
            lease=args.client_lease,
            min_lease=args.client_min_lease,
            max_lease=args.client_max_lease,
            max_presences=args.client_max_presences,
            max_subscriptions=args.client_max_subscriptions,
            max_sessions=args.client_max_sessions,
            max_frame_bytes=args.client_max_frame_bytes,
        )
        node = Node(
            args.name,
            args.bind,
            peers,
            client_bind=args.client_bind,
            tracker_name=args.tracker_name,
            tracker_options=tracker_options,
            pubsub_options=pubsub_options,
            limits=limits,
            permdown_on_shutdown=args.permdown_on_shutdown,
            log_level=getattr(logging, args.event_log_level),
            **curve,
        )
    except (ValueError, TypeError) as exc:  # ConfigErrors of every package
        raise _UsageError(str(exc)) from None
    try:
        asyncio.run(_serve(node))
    except (PubSubError, TrackerError, OSError) as exc:
        print(f"tracker-zmq node: error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(node: Node) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with node:
            # one line on stdout, for whoever started the node (scripts, tests)
            print(
                f"ready name={node.name} vsn={node.vsn} cluster={node.endpoint} "
                f"clients={node.client_endpoint}",
                flush=True,
            )
            await stop.wait()
            log.info("node %s: signal received, shutting down", node.name)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


# ------------------------------------------------------------------ list, status


async def _ask(args: argparse.Namespace) -> int:
    secret: str | None = None
    server: str | None = None
    if (args.curve_secret_key is None) != (args.curve_server_key is None):
        raise _UsageError("--curve-secret-key and --curve-server-key go together")
    if args.curve_secret_key is not None:
        secret = _secret_key(args.curve_secret_key)
        server = _public_key(args.curve_server_key)
    topic: str | int = args.topic if args.command == "list" else ""
    if args.command == "list" and args.int:
        try:
            topic = int(args.topic)
        except ValueError:
            raise _UsageError(f"--int: TOPIC {args.topic!r} is not an integer") from None
    client = Client(
        args.node,
        client_id="tracker-zmq-cli",
        timeout=args.timeout,
        curve_secret_key=secret,
        curve_server_key=server,
    )
    try:
        await client.open()
        if args.command == "list":
            presences = await client.list(topic)
            _print_list(topic, presences, args.json)
        else:
            _print_status(await client.status(), args.json)
    except ClientError as exc:
        print(f"tracker-zmq {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    return 0


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _print_list(topic: str | int, presences: list[tuple[Any, Any]], as_json: bool) -> None:
    if as_json:
        print(_json([[key, meta] for key, meta in presences]))
        return
    count = len(presences)
    print(f"{topic}: {count} presence{'s' if count != 1 else ''}")
    rows = sorted(presences, key=lambda p: (str(p[0]), str(p[1].get("phx_ref"))))
    width = max((len(str(key)) for key, _ in rows), default=0)
    for key, meta in rows:
        shown = {k: v for k, v in meta.items() if k not in ("phx_ref", "phx_ref_prev")}
        print(f"  {key!s:<{width}}  {orjson.dumps(shown).decode()}  ref={meta.get('phx_ref')}")


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(_json(status))
        return
    print(f"node {status['node']} (vsn {status['vsn']}), up {status['uptime']:.1f} s")
    ops = status.get("ops")
    served = ", ".join(ops) if isinstance(ops, list) else "not listed (a node of the first release)"
    print(f"  client protocol: v{status.get('protocol', 1)}, ops: {served}")
    print(f"  cluster endpoint: {status['endpoint']}")
    print(f"  client endpoint:  {status['client_endpoint']}")
    peers = status.get("peers") or []
    print(f"  peers: {', '.join(peers) if peers else 'none'}")
    replicas = status.get("replicas") or {}
    print(f"  replicas ({len(replicas)}):")
    for name, info in replicas.items():
        print(f"    {name:<16} {info['status']:<6} vsn {info['vsn']}")
    clients = status.get("clients", {})
    print(f"  presences (cluster-wide, held here): {status.get('presences', 0)}")
    print(
        f"  clients: {clients.get('sessions', 0)} sessions, "
        f"{clients.get('presences', 0)} presences, "
        f"{clients.get('subscriptions', 0)} subscriptions"
    )
    print(
        f"  client frames: {clients.get('requests', 0)} requests, "
        f"{clients.get('errors', 0)} errors, {clients.get('garbage', 0)} dropped"
    )
    totals = status.get("tracker_stats", {}).get("totals", {})
    drops = totals.get("drops") or {}
    dropped = sum(drops.values()) if isinstance(drops, dict) else 0
    print(f"  tracker messages dropped: {dropped}")


if __name__ == "__main__":
    sys.exit(main())

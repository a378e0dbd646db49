"""The ``tracker-zmq`` command: run a standalone node, or ask one what it sees.

Not pure (sockets, signals, files). ``tracker-zmq node`` runs a :class:`~tracker_zmq.node.Node`
until SIGTERM or SIGINT; ``tracker-zmq list TOPIC --node ENDPOINT``, ``tracker-zmq
status --node ENDPOINT``, ``tracker-zmq broadcast TOPIC EVENT JSON --node ENDPOINT`` and
``tracker-zmq disconnect SOCKET_ID [--ban-seconds N] --node ENDPOINT`` talk to a running
node's client endpoint. ``docs/node.md``
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
from pubsub_zmq import Peer, PubSubError, auto_node_name, load_keypair
from pubsub_zmq.curve import normalize_key
from tracker_zmq.client import Client, ClientError
from tracker_zmq.errors import ConfigError, TrackerError
from tracker_zmq.health import HealthServer, parse_host_port
from tracker_zmq.logs import FORMATS
from tracker_zmq.logs import configure as configure_logs
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


def _host_port(text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    node.add_argument(
        "--name",
        help="this node's name, unique in the cluster (default: <hostname>-<pid>-<random>, "
        "which implies --permdown-on-shutdown: a name that never comes back)",
    )
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
        "--peer-dns",
        action="append",
        default=[],
        metavar="HOST:PORT[,KEY]",
        help="a name whose every address is a seed (tcp://ADDRESS:PORT), looked up again "
        "every gossip round: a headless service, a scaled compose service; with CURVE "
        "add the public key its nodes share; repeat for several",
    )
    node.add_argument(
        "--client-bind",
        type=_endpoint,
        default="tcp://127.0.0.1:0",
        help="client endpoint (ROUTER) to bind (default: tcp://127.0.0.1:0)",
    )
    node.add_argument(
        "--advertise-host",
        help="host peers should use when --bind is a wildcard (default: the address this "
        "host's name resolves to)",
    )
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
        ("max_batch", _positive_int, "presences per track_many/untrack_many"),
    ):
        clients.add_argument(
            _flag(f"client_{name}"),
            type=kind,
            default=getattr(_CLIENT, name),
            help=f"{text} (%(default)s)",
        )

    _websocket_arguments(node)

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
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text lines, or one JSON object a line (time, level, logger, event and the "
        "event's fields) (default: text)",
    )
    out.add_argument(
        "--metrics-bind",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve GET /metrics (Prometheus), /healthz and /readyz over HTTP there; "
        "port 0 picks a free one (the ready line says which)",
    )
    out.add_argument(
        "--permdown-on-shutdown",
        action="store_true",
        help="on SIGTERM/SIGINT tell peers to drop this node's presences at once",
    )

    for name, helptext in (
        ("list", "list the presences of a topic, cluster-wide, as a node sees them"),
        ("status", "show a node's replicas, peers and counters"),
        ("broadcast", "send an event to every websocket subscriber of a topic, on every node"),
        ("disconnect", "close a socket id's websockets on every node, optionally banning it"),
    ):
        sub = commands.add_parser(name, help=helptext, description=helptext)
        if name == "list":
            sub.add_argument("topic", metavar="TOPIC")
            sub.add_argument("--int", action="store_true", help="TOPIC is an integer topic")
        if name == "broadcast":
            sub.add_argument("topic", metavar="TOPIC", help="the channel topic")
            sub.add_argument("event", metavar="EVENT", help="the event name")
            sub.add_argument("payload", metavar="JSON", help="the payload, a JSON object")
        if name == "disconnect":
            sub.add_argument("socket_id", metavar="SOCKET_ID", help="e.g. user_socket:42")
            sub.add_argument(
                "--ban-seconds",
                type=float,
                default=0.0,
                metavar="N",
                help="refuse the socket id's connects on every node for N seconds (0)",
            )
        sub.add_argument("--node", type=_endpoint, required=True, help="the node's client endpoint")
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        sub.add_argument("--timeout", type=_positive_float, default=3.0, help="seconds to wait (3)")
        sub.add_argument("--curve-secret-key", type=Path, metavar="FILE")
        sub.add_argument(
            "--curve-server-key", metavar="KEY|FILE", help="the node's public key (with CURVE)"
        )
    return parser


def _websocket_arguments(node: argparse.ArgumentParser) -> None:
    web = node.add_argument_group(
        "browsers (websocket endpoint, signed tokens, HTTP API; needs tracker-zmq[web])"
    )
    web.add_argument(
        "--websocket-bind",
        metavar="HOST:PORT",
        help="serve phoenix.js at ws://HOST:PORT/socket (port 0: a free one); needs "
        "--token-secret-file",
    )
    web.add_argument(
        "--token-secret-file",
        type=Path,
        metavar="FILE",
        help="HS256 secrets the tokens are signed with, one per line (mode 600)",
    )
    web.add_argument(
        "--token-optional-exp", action="store_true", help="accept tokens without an exp claim"
    )
    web.add_argument("--token-audience", metavar="AUD", help="require this aud claim")
    web.add_argument("--token-issuer", metavar="ISS", help="require this iss claim")
    web.add_argument(
        "--token-leeway",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="clock skew allowed on exp/nbf/iat (default: 5)",
    )
    web.add_argument(
        "--websocket-allowed-origins",
        action="append",
        default=[],
        metavar="ORIGIN[,ORIGIN...]",
        help="browser origins allowed to connect (https://app.example.com, "
        "//*.example.com, * for any); repeatable; default: the request's own host",
    )
    web.add_argument("--websocket-certfile", type=Path, metavar="FILE", help="TLS cert (PEM)")
    web.add_argument("--websocket-keyfile", type=Path, metavar="FILE", help="TLS key (PEM)")
    web.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="bearer keys of the HTTP API under /api, one per line (mode 600); "
        "without it the API is off",
    )
    web.add_argument(
        "--websocket-demo-page",
        action="store_true",
        help="serve a demo page at / (each tab a user; `make demo` uses it)",
    )


def _web_options(args: argparse.Namespace) -> Any:
    """The WebOptions of the websocket flags, or None when --websocket-bind is absent."""
    given = [
        flag
        for flag, value in (
            ("--token-secret-file", args.token_secret_file),
            ("--token-optional-exp", args.token_optional_exp),
            ("--token-audience", args.token_audience),
            ("--token-issuer", args.token_issuer),
            ("--websocket-allowed-origins", args.websocket_allowed_origins),
            ("--websocket-certfile", args.websocket_certfile),
            ("--websocket-keyfile", args.websocket_keyfile),
            ("--api-key-file", args.api_key_file),
            ("--websocket-demo-page", args.websocket_demo_page),
        )
        if value
    ]
    if args.websocket_bind is None:
        if given:
            raise _UsageError(f"{', '.join(given)} need(s) --websocket-bind HOST:PORT")
        return None
    if args.token_secret_file is None:
        raise _UsageError("--websocket-bind needs --token-secret-file FILE (the token secrets)")
    if (args.websocket_certfile is None) != (args.websocket_keyfile is None):
        raise _UsageError("--websocket-certfile and --websocket-keyfile go together")
    try:  # the [web] extra: uvicorn, websockets, PyJWT
        from tracker_zmq.standalone import TokenConfig, WebOptions, parse_bind, read_secret_file
        from tracker_zmq.standalone.server import origin_check
    except ImportError as exc:
        raise _UsageError(
            f"--websocket-bind needs the web extra: pip install 'tracker-zmq[web]' ({exc})"
        ) from None
    try:
        host, port = parse_bind(args.websocket_bind)
        tokens = TokenConfig(
            secrets=read_secret_file(args.token_secret_file, "--token-secret-file"),
            require_exp=not args.token_optional_exp,
            audience=args.token_audience,
            issuer=args.token_issuer,
            leeway=args.token_leeway,
        )
        keys = (
            ()
            if args.api_key_file is None
            else read_secret_file(args.api_key_file, "--api-key-file")
        )
        for flag, path in (
            ("--websocket-certfile", args.websocket_certfile),
            ("--websocket-keyfile", args.websocket_keyfile),
        ):
            if path is not None and not path.is_file():
                raise _UsageError(f"{flag} {path} does not exist")
        return WebOptions(
            host=host,
            port=port,
            tokens=tokens,
            check_origin=origin_check(args.websocket_allowed_origins),
            certfile=None if args.websocket_certfile is None else str(args.websocket_certfile),
            keyfile=None if args.websocket_keyfile is None else str(args.websocket_keyfile),
            api_keys=keys,
            demo_page=args.websocket_demo_page,
        )
    except ValueError as exc:  # ConfigError, SecretFileError
        raise _UsageError(str(exc)) from None


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of ``command``: a usage error then shows that command's usage and name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            found: argparse.ArgumentParser = action.choices[command]
            return found
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
        _command_parser(parser, args.command).error(str(exc))  # exits with 2
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


def _peer_dns(args: argparse.Namespace) -> list[Peer]:
    entries: list[Peer] = []
    for spec in args.peer_dns:
        name, sep, key = spec.partition(",")
        entries.append((name, _public_key(key)) if sep else name)
    return entries


def _endpoint_or_error(text: str) -> None:
    try:
        _endpoint(text)
    except argparse.ArgumentTypeError as exc:
        raise _UsageError(f"--peer: {exc}") from None


# ------------------------------------------------------------------ node


def _node(args: argparse.Namespace) -> int:
    configure_logs(getattr(logging, args.log_level), args.log_format, sys.stderr)
    peers = _peers(args)
    curve = _curve_options(args)
    web = _web_options(args)
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
    if args.peer_dns:
        pubsub_options["peer_dns"] = _peer_dns(args)
    # a made-up name never comes back: leave no replica behind for peers to keep
    name = args.name if args.name is not None else auto_node_name()
    permdown_on_shutdown = args.permdown_on_shutdown or args.name is None
    try:
        limits = ClientLimits(
            lease=args.client_lease,
            min_lease=args.client_min_lease,
            max_lease=args.client_max_lease,
            max_presences=args.client_max_presences,
            max_subscriptions=args.client_max_subscriptions,
            max_sessions=args.client_max_sessions,
            max_frame_bytes=args.client_max_frame_bytes,
            max_batch=args.client_max_batch,
        )
        node_class: type[Node] = Node
        if web is not None:
            from tracker_zmq.standalone import WebNode

            node_class = WebNode
        node = node_class(
            name,
            args.bind,
            peers,
            client_bind=args.client_bind,
            tracker_name=args.tracker_name,
            tracker_options=tracker_options,
            pubsub_options=pubsub_options,
            limits=limits,
            permdown_on_shutdown=permdown_on_shutdown,
            log_level=getattr(logging, args.event_log_level),
            **curve,
        )
        health = None
        if args.metrics_bind is not None:
            health = HealthServer(node, *args.metrics_bind)
    except (ValueError, TypeError) as exc:  # ConfigErrors of every package
        raise _UsageError(str(exc)) from None
    try:
        asyncio.run(_serve(node, health, web))
    except (PubSubError, TrackerError, OSError) as exc:
        if args.log_format == "json":  # every stderr line a JSON object
            log.error("tracker-zmq node: error: %s", exc, extra={"error": str(exc)})
        else:
            print(f"tracker-zmq node: error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(node: Node, health: HealthServer | None = None, web_options: Any = None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if health is not None:  # first in, last out: /readyz says 503 while starting
                await stack.enter_async_context(health)
            await stack.enter_async_context(node)
            extra = ""
            if web_options is not None:  # the websocket endpoint stops (drains) first
                from tracker_zmq.standalone import WebNode, WebServer

                assert isinstance(node, WebNode)
                web = await stack.enter_async_context(WebServer(node, web_options))
                extra += f" websocket={web.url}"
                if health is not None:  # websocket_* metrics
                    health.add_endpoint(web.endpoint)
            # one line on stdout, for whoever started the node (scripts, tests)
            if health is not None:
                extra += f" metrics={health.url}"
            print(
                f"ready name={node.name} vsn={node.vsn} cluster={node.endpoint} "
                f"clients={node.client_endpoint}{extra}",
                flush=True,
            )
            await stop.wait()
            if health is not None:
                health.drain()  # not ready first, then stop as before
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
    payload: Any = None
    if args.command == "broadcast":
        try:
            payload = orjson.loads(args.payload)
        except orjson.JSONDecodeError as exc:
            raise _UsageError(f"JSON: not JSON: {exc}") from None
        if type(payload) is not dict:
            raise _UsageError(f"JSON: the payload must be a JSON object, not {args.payload!r}")
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
        elif args.command == "broadcast":
            await client.broadcast(args.topic, args.event, payload)
            _print_done({"topic": args.topic, "event": args.event}, args.json)
        elif args.command == "disconnect":
            await client.disconnect(args.socket_id, args.ban_seconds)
            done = {"socket_id": args.socket_id, "ban_seconds": args.ban_seconds}
            _print_done(done, args.json)
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


def _print_done(what: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(_json({"ok": True, **what}))
    elif "event" in what:
        print(f"broadcast {what['event']} to {what['topic']}")
    else:
        ban = what["ban_seconds"]
        banned = f", banned for {ban:g} s" if ban else ""
        print(f"disconnected {what['socket_id']}{banned}")


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

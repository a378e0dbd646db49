"""The standalone node's websocket server, beside its cluster and client endpoints.

Not pure (files, sockets, the event loop). ``tracker-zmq node --websocket-bind HOST:PORT
--token-secret-file FILE`` builds a :class:`WebNode` (a :class:`~tracker_zmq.node.Node`
made with ``presence=True``, whose tracker also feeds a :class:`~tracker_zmq.Presence`,
so browsers, the client endpoint's sessions and ``tracker-zmq list`` see the same
presences) and a
:class:`WebServer`: uvicorn's programmatic server running :class:`~tracker_zmq.
standalone.app.StandaloneApp` in the node's own event loop. The node owns the signals:
on SIGTERM the server drains its sockets in batches (1012, phoenix.js reconnects to
another node), then the node stops.

It needs the ``tracker-zmq[web]`` extra (uvicorn, websockets, PyJWT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from tracker_zmq.channels import Endpoint
from tracker_zmq.channels.server import DrainingServer
from tracker_zmq.channels.wire import OriginCheck
from tracker_zmq.errors import ConfigError
from tracker_zmq.health import parse_host_port
from tracker_zmq.node import Node
from tracker_zmq.presence import Presence

from .app import BuiltinChannel, StandaloneApp, TokenSocket
from .tokens import SecretFileError, TokenConfig, parse_secret_file

__all__ = ["WebNode", "WebOptions", "WebServer", "parse_bind", "read_secret_file"]

log = logging.getLogger("tracker_zmq.standalone")

_TOKEN_PARAM = re.compile(r"([?&]token=)[^&\s\"]*")


class _RedactTokens(logging.Filter):
    """Replace the value of a ``token`` query parameter in uvicorn's lines by ``[FILTERED]``.

    uvicorn logs every websocket handshake (``"WebSocket /socket/websocket?token=..."
    [accepted]``, or ``403``) on ``uvicorn.error`` at INFO, whatever ``access_log`` says:
    without this filter every browser's token would be written to the node's log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_PARAM.sub(r"\1[FILTERED]", record.msg)
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and "token=" in arg for arg in record.args
        ):
            record.args = tuple(
                _TOKEN_PARAM.sub(r"\1[FILTERED]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


_REDACT_TOKENS = _RedactTokens()


def read_secret_file(path: Path | str, what: str = "secret file") -> tuple[str, ...]:
    """Read and check a secret (or API key) file: one secret per line, mode 600.

    Args:
        path: The file.
        what: What it is, for the messages (``"--token-secret-file"``).

    Returns:
        Its secrets.

    Raises:
        SecretFileError: It is missing, unreadable, empty, open to group or others
            (``chmod 600``, the message says; a file owned by root may be readable by
            its group: mode 640 or 440), or holds a short secret.
    """
    file = Path(path)
    try:
        info = file.stat()
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretFileError(f"{what} {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"cannot read {what} {file}: {exc}") from None
    return parse_secret_file(text, info.st_mode, str(file), what, owner=info.st_uid)


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as ``(host, port)``; port 0 picks one.

    Raises:
        ConfigError: Not HOST:PORT, or a port outside 0..65535.
    """
    try:
        return parse_host_port(text)  # the one HOST:PORT rule of the node's flags
    except ConfigError:
        raise ConfigError(
            f"a websocket bind looks like HOST:PORT (port 0: a free one), not {text!r}"
        ) from None


class WebNode(Node):
    """A :class:`~tracker_zmq.node.Node` with a Presence: ``Node(..., presence=True)``.

    What ``tracker-zmq node --websocket-bind`` runs. Arguments are
    :class:`~tracker_zmq.node.Node`'s (``presence`` defaults to True here).

    Attributes:
        presence: The Presence over the node's tracker (list, track with a Task owner).
    """

    presence: Presence

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("presence", True)
        super().__init__(*args, **kwargs)
        if self.presence is None:
            raise ConfigError("a WebNode has a Presence: presence=False is a plain Node")


@dataclass(frozen=True, slots=True)
class WebOptions:
    """What ``tracker-zmq node`` serves on its websocket port.

    Attributes:
        host: The address to bind.
        port: The port (0: a free one).
        tokens: How tokens are verified.
        check_origin: The Origin rule (True: the request's own host).
        certfile: A TLS certificate chain (PEM) to serve ``wss://``, or None.
        keyfile: Its private key (PEM), or None.
        api_keys: The HTTP API's bearer keys (empty: the API is off).
        demo_page: Whether ``/`` serves the demo page.
        drain_batch_size: Sockets closed per batch on shutdown.
        drain_interval: Seconds between two batches.
    """

    host: str
    port: int
    tokens: TokenConfig
    check_origin: OriginCheck = True
    certfile: str | None = None
    keyfile: str | None = None
    api_keys: tuple[str, ...] = ()
    demo_page: bool = False
    drain_batch_size: int = 10_000
    drain_interval: float = 2.0

    def __post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("a TLS certificate file and key file go together")

    @property
    def scheme(self) -> str:
        """``wss`` with TLS, else ``ws``."""
        return "ws" if self.certfile is None else "wss"


class _Server(DrainingServer):
    # the node owns SIGTERM and SIGINT (it drains this server, then stops itself):
    # uvicorn must neither install its own handlers nor raise the signal again on exit
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class WebServer:
    """The websocket endpoint and HTTP API of a node with a Presence, served by uvicorn.

    ```python
    async with node, WebServer(node, options) as web:
        print(web.url)              # ws://127.0.0.1:PORT/socket
    ```

    Args:
        node: The node (a :class:`WebNode`, or a Node made with ``presence=True``):
            its presence and PubSub.
        options: What to serve.

    Attributes:
        endpoint: The websocket endpoint.
        app: The ASGI app.
        url: The socket URL phoenix.js connects to (``ws://HOST:PORT/socket``), known
            once started.

    Raises:
        ConfigError: The node has no Presence.
    """

    def __init__(self, node: Node, options: WebOptions) -> None:
        if node.presence is None:
            raise ConfigError("WebServer needs a node made with presence=True (a WebNode)")
        self.options = options
        self.endpoint = Endpoint(
            node.presence,
            socket=TokenSocket.with_config(options.tokens),
            channels={"*": BuiltinChannel},
            check_origin=options.check_origin,
            drain_batch_size=options.drain_batch_size,
            drain_interval=options.drain_interval,
        )
        self.app = StandaloneApp(
            self.endpoint, node.presence, options.api_keys, demo_page=options.demo_page
        )
        self.url = ""
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def __aenter__(self) -> WebServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind, and return once uvicorn serves.

        Raises:
            OSError: The address cannot be bound, or the TLS files do not load.
        """
        options = self.options
        family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        sock = socket.create_server((options.host, options.port), family=family)
        self._sock = sock
        port = sock.getsockname()[1]
        host = f"[{options.host}]" if ":" in options.host else options.host
        logging.getLogger("uvicorn.error").addFilter(_REDACT_TOKENS)  # once: the same filter
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            ws="websockets-sansio",
            log_config=None,  # the node's logging (stderr), never uvicorn's stdout
            access_log=False,
            server_header=False,
            ssl_certfile=options.certfile,
            ssl_keyfile=options.keyfile,
        )
        try:
            config.load()  # TLS files are read here: a bad one fails the start
        except OSError as exc:  # "[SSL] PEM lib", or EINVAL for an encrypted key: name the files
            sock.close()
            if options.certfile is None:
                raise
            raise OSError(
                f"the TLS certificate {options.certfile} and key {options.keyfile} do not load"
                f" ({exc}): give a PEM certificate (chain) and its unencrypted PEM private key"
            ) from exc
        except Exception:
            sock.close()
            raise
        server = self._server = _Server(config, [self.endpoint])
        task = self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                sock.close()
                await task
                raise OSError("the websocket server stopped before it served")
            await asyncio.sleep(0.01)
        self.url = f"{options.scheme}://{host}:{port}/socket"
        log.info("websocket endpoint %s", self.url)

    async def stop(self) -> None:
        """Drain the sockets in batches (code 1012), then stop serving. Idempotent."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._server = self._task = None
        if not task.done():
            await server.drain()
            await task
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def origin_check(origins: Sequence[str]) -> OriginCheck:
    """The Origin rule of ``--websocket-allowed-origins`` values.

    Args:
        origins: Origins (each may be a comma list); none: the same-host rule; ``*``:
            any origin.
    """
    listed = [o.strip() for text in origins for o in text.split(",") if o.strip()]
    if not listed:
        return True
    if "*" in listed:
        return False
    return listed

"""Structured logs: one JSON object a line, for log shippers (Loki, Elasticsearch, ...).

Not pure (it formats ``logging`` records; the time comes from the record). Every line is
an object with ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``event``
(the message, formatted) and the event's fields: whatever the log call passed in
``extra=`` (the tracker's replica lines carry ``replica``, ``replica_vsn``, ``status``,
``shard`` and ``tracker``; the node's diff lines ``topic``, ``joins`` and ``leaves``...),
plus ``exc`` (the traceback) when there is one. ``tracker-zmq node --log-format json``
uses it; an app that embeds a node uses it in its own logging setup::

    import logging
    from tracker_zmq.logs import JsonFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

__all__ = ["FORMATS", "TEXT_FORMAT", "JsonFormatter", "configure"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text format ``tracker-zmq node`` writes by default."""

FORMATS = ("text", "json")
"""The log formats :func:`configure` takes."""

# the attributes every LogRecord has: anything else on a record came from ``extra=``
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colour codes
}


def _default(value: object) -> str:
    return repr(value) if not isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (no newline inside; orjson writes it).

    Fields: ``time``, ``level``, ``logger``, ``event``, then the record's ``extra``
    fields (a value JSON cannot hold is written as its ``repr``), then ``exc`` and
    ``stack`` when the record has them. An extra field named like one of the four
    first ones is written with a leading underscore instead of replacing it.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        when = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                line["_" + name if name in line else name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


def configure(
    level: int | str = logging.INFO, fmt: str = "text", stream: TextIO | None = None
) -> None:
    """Send the root logger's records to ``stream`` (stderr) as text or JSON lines.

    Replaces the root logger's handlers (as ``logging.basicConfig(force=True)``).

    Args:
        level: The least level written.
        fmt: ``"text"`` (``TEXT_FORMAT``) or ``"json"`` (:class:`JsonFormatter`).
        stream: Where to write (default: ``sys.stderr``).

    Raises:
        ValueError: An unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)

"""options.py: PubSub's tuning options, one source for their defaults and checks."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from pubsub_zmq import ConfigError, Options, PubSub
from pubsub_zmq.options import MIN_FRAME_BYTES, check_option

FIELDS = [f.name for f in dataclasses.fields(Options)]


def test_pubsub_signature_defaults_are_the_options_defaults() -> None:
    parameters = inspect.signature(PubSub.__init__).parameters
    for field in dataclasses.fields(Options):
        parameter = parameters[field.name]  # every option is a PubSub keyword
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, field.name
        assert parameter.default == field.default, field.name


def test_pubsub_builds_its_options_from_its_keywords() -> None:
    ps = PubSub("n", max_batch=7, peer_timeout=3, send_hwm=0)
    assert ps.options == Options(max_batch=7, peer_timeout=3.0, send_hwm=0)
    assert ps.max_frame_bytes == ps.options.max_frame_bytes


def test_defaults_are_valid_and_seconds_become_floats() -> None:
    options = Options(start_timeout=2, gossip_interval=1, peer_timeout=3)
    assert isinstance(options.start_timeout, float)
    assert isinstance(options.peer_timeout, float)
    assert isinstance(Options().queue_size, int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_batch = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "bad", "good"),
    [
        ("queue_size", 0, 1),
        ("max_batch", 1.0, 1),
        ("batch_bytes", True, 1),
        ("max_frame_bytes", -1, MIN_FRAME_BYTES),
        ("send_hwm", -1, 0),
        ("recv_hwm", "10", 0),
        ("control_hwm", None, 0),
        ("start_timeout", -0.5, 0),
        ("forget_after", "1", 0.5),
        ("max_backoff", None, 0),
    ],
)
def test_each_option_is_checked(name: str, bad: Any, good: Any) -> None:
    with pytest.raises(ConfigError, match=name):
        Options(**{name: bad})
    with pytest.raises(ConfigError, match=name):
        check_option(name, bad)
    check_option(name, good)
    Options(**{name: good})


def test_rules_between_options() -> None:
    with pytest.raises(ConfigError, match="peer_timeout must exceed gossip_interval"):
        Options(gossip_interval=2.0, peer_timeout=1.0)
    with pytest.raises(ConfigError, match="both positive"):
        Options(gossip_interval=0)
    with pytest.raises(ConfigError, match=f"at least {MIN_FRAME_BYTES}"):
        Options(max_frame_bytes=MIN_FRAME_BYTES - 1)


def test_option_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Options(queue_size=0)


def test_every_field_has_a_rule() -> None:
    for name in FIELDS:
        check_option(name, getattr(Options(), name))

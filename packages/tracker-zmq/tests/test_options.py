"""One source for each default and check (tracker_zmq.options): the Tracker's signature and
the command line hold the same defaults as :class:`Options` and :class:`ClientLimits`,
and one positive-number check serves them all."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest

from pubsub_zmq import Options as PubSubOptions
from tracker_zmq import Client, ClientLimits, ConfigError, Options, Tracker
from tracker_zmq.cli import _parser
from tracker_zmq.options import check_positive

# Tracker arguments whose signature default differs from Options' on purpose, and why
DERIVED = {"transfer_part_bytes": "None: half the PubSub's max_frame_bytes"}


def test_the_trackers_signature_defaults_are_the_options_defaults() -> None:
    defaults = Options.defaults()
    shared = [p for p in inspect.signature(Tracker).parameters.values() if p.name in defaults]
    assert len(shared) >= 8  # the periods, the pool and the limits at least
    for param in shared:
        if param.name in DERIVED:
            assert param.default is None, DERIVED[param.name]
        else:
            assert param.default == defaults[param.name], param.name


def test_options_defaults_are_the_declared_field_defaults() -> None:
    defaults = Options.defaults()
    assert set(defaults) == {f.name for f in dataclasses.fields(Options)}
    assert defaults["down_period"] is None  # derived from the others at construction
    assert Options(**defaults) == Options()


def test_the_command_lines_defaults_are_the_options_and_limits_defaults() -> None:
    args = _parser().parse_args(["node", "--name", "a"])
    defaults = Options.defaults()
    for name in (
        "broadcast_period",
        "max_silent_periods",
        "down_period",
        "permdown_period",
        "clock_sample_periods",
        "pool_size",
        "max_presences",
    ):
        assert getattr(args, name) == defaults[name], name
    limits = ClientLimits()
    for field in dataclasses.fields(ClientLimits):
        if field.name != "check_interval":  # not a command-line option
            assert getattr(args, f"client_{field.name}") == getattr(limits, field.name)
    pubsub = PubSubOptions()
    for name in ("gossip_interval", "peer_timeout", "start_timeout"):
        assert getattr(args, name) == getattr(pubsub, name), name


@pytest.mark.parametrize("value", [1, 0.5, 1e9, 2**70])
def test_check_positive_takes_positive_numbers(value: float) -> None:
    assert check_positive("x", value) == float(value)
    assert type(check_positive("x", value)) is float


@pytest.mark.parametrize("value", [0, -1, -0.5, math.nan, math.inf, True, "1", None])
def test_check_positive_refuses_the_rest(value: object) -> None:
    with pytest.raises(ConfigError, match="x must be a positive number of seconds"):
        check_positive("x", value)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Options(broadcast_period=0), "broadcast_period"),
        (lambda: ClientLimits(min_lease=math.nan), "min_lease"),
        (lambda: ClientLimits(check_interval=-1), "check_interval"),
        (lambda: Client("tcp://127.0.0.1:1", timeout=True), "timeout"),
        (lambda: Client("tcp://127.0.0.1:1", heartbeat_interval=0), "heartbeat_interval"),
    ],
)
def test_every_period_goes_through_the_one_check(make: object, name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be a positive number of seconds"):
        make()  # type: ignore[operator]


def test_a_usage_error_found_after_parsing_shows_the_commands_usage(capsys) -> None:
    from tracker_zmq.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["node", "--websocket-bind", "127.0.0.1:0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tracker-zmq node "), err
    assert "tracker-zmq node: error: --websocket-bind needs --token-secret-file" in err
    with pytest.raises(SystemExit):
        main(["broadcast", "room:1", "ev", "[1]", "--node", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert "tracker-zmq broadcast: error: JSON: the payload must be a JSON object" in err

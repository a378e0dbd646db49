"""tracker_zmq.standalone.tokens: secret files, JWT verification, claims and patterns.

Pure: no sockets, no processes. Tokens are signed here with PyJWT, as a backend would.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from tracker_zmq.channels import Reject
from tracker_zmq.errors import ConfigError
from tracker_zmq.standalone.tokens import (
    MAX_JOIN_META_FIELDS,
    Claims,
    SecretFileError,
    TokenConfig,
    TokenError,
    join_meta,
    matches,
    parse_secret_file,
    reserved_topic,
    socket_id,
    verify_token,
)

OLD = "o" * 40
NEW = "n" * 40


def sign(claims: dict[str, Any], secret: str = NEW, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def fresh(**claims: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time()) + 60, **claims}


CONFIG = TokenConfig(secrets=(OLD, NEW), leeway=0)


# ------------------------------------------------------------------ secret files


def test_secret_file_one_secret_per_line_blank_lines_skipped():
    assert parse_secret_file(f"\n {OLD} \n\n{NEW}\n", 0o100600, "s") == (OLD, NEW)
    assert parse_secret_file(OLD, 0o400, "s") == (OLD,)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o601, 0o610, 0o100666])
def test_secret_file_any_group_or_other_bit_is_refused_with_the_fix(mode):
    with pytest.raises(SecretFileError, match="chmod 600 /etc/secret") as info:
        parse_secret_file(OLD, mode, "/etc/secret")
    assert f"{mode & 0o777:04o}" in str(info.value)


@pytest.mark.parametrize("mode", [0o640, 0o440, 0o100640])
def test_a_file_owned_by_root_may_be_readable_by_its_group_as_kubernetes_mounts_it(mode):
    assert parse_secret_file(OLD, mode, "/etc/secret", owner=0) == (OLD,)
    with pytest.raises(SecretFileError, match="chmod 600"):
        parse_secret_file(OLD, mode, "/etc/secret", owner=1000)


@pytest.mark.parametrize("mode", [0o660, 0o644, 0o604, 0o650])
def test_a_file_owned_by_root_is_still_refused_when_group_may_write_or_others_read(mode):
    with pytest.raises(SecretFileError, match="chmod 600"):
        parse_secret_file(OLD, mode, "/etc/secret", owner=0)


@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_an_empty_secret_file_is_refused(text):
    with pytest.raises(SecretFileError, match="holds no secret"):
        parse_secret_file(text, 0o600, "s")


def test_a_short_secret_is_refused_with_how_to_make_one():
    with pytest.raises(SecretFileError, match=r"secret 2 is shorter.*openssl rand -hex 32"):
        parse_secret_file(f"{OLD}\nshort\n", 0o600, "s")


def test_secret_file_errors_are_config_errors():
    assert issubclass(SecretFileError, ConfigError)
    assert issubclass(SecretFileError, ValueError)


def test_token_config_checks():
    with pytest.raises(ConfigError):
        TokenConfig(secrets=())
    with pytest.raises(ConfigError):
        TokenConfig(secrets=("",))
    with pytest.raises(ConfigError):
        TokenConfig(secrets=(OLD,), leeway=-1)
    with pytest.raises(ConfigError):
        TokenConfig(secrets=(OLD,), audience="")


# ------------------------------------------------------------------ verification


def test_every_secret_of_the_file_verifies():
    for secret in (OLD, NEW):
        claims = verify_token(sign(fresh(), secret), CONFIG)
        assert claims.sub == "alice"


def test_the_claims_are_read():
    token = sign(
        fresh(
            meta={"name": "Alice"},
            channels=["room:*", "lobby"],
            track=["room:*"],
            publish=["room:chat"],
            follow=["user:*"],
        )
    )
    claims = verify_token(token, CONFIG)
    assert claims.meta == {"name": "Alice"}
    assert claims.channels == ("room:*", "lobby")
    assert claims.track == ("room:*",)
    assert claims.publish == ("room:chat",)
    assert claims.follow == ("user:*",)
    assert claims.exp is not None
    assert claims.exp > time.time()
    assert socket_id(claims) == "user_socket:alice"


def test_missing_token_is_refused():
    for token in (None, "", 42):
        with pytest.raises(TokenError, match="no token"):
            verify_token(token, CONFIG)


def test_a_forged_token_is_refused():
    with pytest.raises(TokenError, match="no secret verifies"):
        verify_token(sign(fresh(), "x" * 40), CONFIG)
    # a token whose payload was changed after signing
    token = sign(fresh())
    head, _, rest = token.partition(".")
    _, _, signature = rest.partition(".")
    forged = base64.urlsafe_b64encode(json.dumps(fresh(sub="root")).encode()).rstrip(b"=")
    with pytest.raises(TokenError):
        verify_token(f"{head}.{forged.decode()}.{signature}", CONFIG)
    with pytest.raises(TokenError):
        verify_token("not.a.jwt", CONFIG)


def test_a_token_error_is_a_reject():
    assert issubclass(TokenError, Reject)  # the endpoint answers HTTP 403


def test_alg_none_and_other_algorithms_are_refused():
    unsigned = jwt.encode(fresh(), None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(TokenError):
        verify_token(unsigned, CONFIG)
    hs512 = jwt.encode(fresh(), NEW + NEW, algorithm="HS512")
    with pytest.raises(TokenError):
        verify_token(hs512, TokenConfig(secrets=(NEW + NEW,)))


def test_expired_tokens_and_the_leeway():
    past = fresh(exp=int(time.time()) - 30)
    with pytest.raises(TokenError, match="expired"):
        verify_token(sign(past), CONFIG)
    assert verify_token(sign(past), TokenConfig(secrets=(NEW,), leeway=120)).sub == "alice"


def test_exp_is_required_unless_optional():
    token = sign({"sub": "alice"})
    with pytest.raises(TokenError, match="exp"):
        verify_token(token, CONFIG)
    claims = verify_token(token, TokenConfig(secrets=(NEW,), require_exp=False))
    assert claims.exp is None


def test_sub_is_required_and_a_string():
    with pytest.raises(TokenError, match="sub"):
        verify_token(sign({"exp": int(time.time()) + 60}), CONFIG)
    with pytest.raises(TokenError):
        verify_token(sign(fresh(sub=42)), CONFIG)


def test_aud_and_iss_are_checked_only_when_configured():
    token = sign(fresh(aud="presence", iss="backend"))
    assert verify_token(token, CONFIG).sub == "alice"  # not configured: not checked
    strict = TokenConfig(secrets=(NEW,), audience="presence", issuer="backend")
    assert verify_token(token, strict).sub == "alice"
    for claims in (fresh(aud="other", iss="backend"), fresh(iss="backend"), fresh(aud="presence")):
        with pytest.raises(TokenError):
            verify_token(sign(claims), strict)
    with pytest.raises(TokenError):
        verify_token(sign(fresh(aud="presence", iss="mallory")), strict)


@pytest.mark.parametrize(
    "claims",
    [
        {"meta": "not an object"},
        {"channels": "room:*"},
        {"track": [1]},
        {"publish": ["a*b"]},
        {"follow": [""]},
        {"channels": ["x"] * 1000},
    ],
)
def test_malformed_claims_are_refused(claims):
    with pytest.raises(TokenError):
        verify_token(sign(fresh(**claims)), CONFIG)


# ------------------------------------------------------------------ patterns


def test_patterns_exact_or_prefix_star():
    assert matches(["room:lobby"], "room:lobby")
    assert not matches(["room:lobby"], "room:lobby2")
    assert matches(["room:*"], "room:lobby")
    assert matches(["room:*"], "room:")
    assert not matches(["room:*"], "rooms")
    assert matches(["*"], "anything")
    assert not matches([], "room:lobby")


def test_reserved_topics_match_no_pattern():
    for topic in ("user_socket:alice", "user_socket:", "phx_bans", "phoenix"):
        assert reserved_topic(topic)
        assert not matches(["*", topic, "user_socket:*"], topic)
    assert not reserved_topic("room:user_socket:alice")


# ------------------------------------------------------------------ join meta


def test_the_token_meta_wins_over_the_join_meta():
    claims = Claims(sub="alice", meta={"name": "Alice", "role": "admin"})
    assert join_meta(claims, None) == {"name": "Alice", "role": "admin"}
    merged = join_meta(claims, {"role": "root", "device": "phone"})
    assert merged == {"name": "Alice", "role": "admin", "device": "phone"}


@pytest.mark.parametrize(
    "meta",
    [
        "not an object",
        {"phx_ref": "x"},
        {"nested": {"a": 1}},
        {"list": [1]},
        {f"f{i}": i for i in range(MAX_JOIN_META_FIELDS + 1)},
        {"big": "x" * 2000},
    ],
)
def test_the_join_meta_is_bounded(meta):
    with pytest.raises(ValueError):
        join_meta(Claims(sub="alice"), meta)

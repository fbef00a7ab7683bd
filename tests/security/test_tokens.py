"""API keys, refresh tokens and JWT access tokens."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import jwt
import pytest

from roost.errors import Unauthorized
from roost.security.tokens import (
    api_key_prefix,
    constant_time_equals,
    decode_access_token,
    generate_api_key,
    generate_refresh_token,
    hash_api_key,
    hash_refresh_token,
    issue_access_token,
    looks_like_api_key,
    verify_api_key,
    verify_token_hash,
)

SECRET = "s" * 48
OTHER_SECRET = "o" * 48
USER = uuid.UUID("0190c0de-0000-7000-8000-00000000abcd")
SESSION = uuid.UUID("0190c0de-0000-7000-8000-00000000beef")


# --- API keys ---------------------------------------------------------------------------


def test_generate_api_key_shape_and_hash() -> None:
    key, prefix, digest = generate_api_key()
    assert key.startswith(f"rst_{prefix}_")
    assert len(prefix) == 8
    assert prefix.isascii() and prefix.isalnum() and prefix == prefix.lower()
    secret = key.split("_", 2)[2]
    assert len(secret) >= 32 and secret.isalnum()
    assert digest == hashlib.sha256(key.encode()).hexdigest() == hash_api_key(key)
    assert looks_like_api_key(key)
    assert api_key_prefix(key) == prefix


def test_api_keys_are_unique() -> None:
    keys = {generate_api_key()[0] for _ in range(200)}
    assert len(keys) == 200


def test_verify_api_key() -> None:
    key, _, digest = generate_api_key()
    assert verify_api_key(key, digest)
    assert verify_api_key(key, digest.upper())  # hex case does not matter
    assert not verify_api_key(key + "x", digest)
    assert not verify_api_key(generate_api_key()[0], digest)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "rst_",
        "rst_abcdefgh_short",
        "rst_ABCDEFGH_" + "a" * 43,  # prefix is lower-case
        "rst_abcdefg_" + "a" * 43,  # 7-char prefix
        "xyz_abcdefgh_" + "a" * 43,
        "rst_admin_" + "a" * 43,
        "eyJhbGciOiJIUzI1NiJ9.e30.sig",
        " rst_abcdefgh_" + "a" * 43,
    ],
)
def test_looks_like_api_key_rejects_other_shapes(value: str) -> None:
    assert not looks_like_api_key(value)
    assert api_key_prefix(value) is None


def test_constant_time_equals() -> None:
    assert constant_time_equals("abc", "abc")
    assert not constant_time_equals("abc", "abd")
    assert not constant_time_equals("abc", "abcd")
    assert constant_time_equals("ünï", "ünï")


# --- refresh tokens ---------------------------------------------------------------------


def test_refresh_tokens() -> None:
    token = generate_refresh_token()
    assert len(token) >= 43
    assert token != generate_refresh_token()
    digest = hash_refresh_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert verify_token_hash(token, digest)
    assert not verify_token_hash(generate_refresh_token(), digest)


# --- JWT access tokens ------------------------------------------------------------------


def test_access_token_round_trip() -> None:
    token = issue_access_token(
        SECRET, user_id=USER, session_id=SESSION, ttl_seconds=900, extra_claims={"scp": ["chat"]}
    )
    claims = decode_access_token(SECRET, token)
    assert claims["sub"] == str(USER)
    assert claims["sid"] == str(SESSION)
    assert claims["typ"] == "access"
    assert claims["iss"] == "roost"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["scp"] == ["chat"]
    assert len(claims["jti"]) == 32
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_each_token_has_a_unique_jti() -> None:
    a = issue_access_token(SECRET, user_id=USER, session_id=SESSION, ttl_seconds=60)
    b = issue_access_token(SECRET, user_id=USER, session_id=SESSION, ttl_seconds=60)
    assert decode_access_token(SECRET, a)["jti"] != decode_access_token(SECRET, b)["jti"]


def test_expired_token_is_rejected_with_its_own_message() -> None:
    token = issue_access_token(
        SECRET, user_id=USER, session_id=SESSION, ttl_seconds=60, now=time.time() - 120
    )
    with pytest.raises(Unauthorized) as info:
        decode_access_token(SECRET, token)
    assert info.value.detail == "token expired"
    assert info.value.status == 401


def test_leeway_tolerates_small_clock_skew() -> None:
    token = issue_access_token(
        SECRET, user_id=USER, session_id=SESSION, ttl_seconds=60, now=time.time() - 65
    )
    assert decode_access_token(SECRET, token, leeway=30)["sub"] == str(USER)


def _tamper_payload(token: str) -> str:
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["sub"] = "someone-else"
    forged = jwt.encode(claims, "x" * 32, algorithm="HS256").split(".")[1]
    return ".".join([header, forged, signature])


def _invalid(secret: str | list[str], token: str) -> None:
    with pytest.raises(Unauthorized) as info:
        decode_access_token(secret, token)
    assert info.value.detail == "invalid token"


def test_tampered_token_is_rejected() -> None:
    token = issue_access_token(SECRET, user_id=USER, session_id=SESSION, ttl_seconds=60)
    _invalid(SECRET, _tamper_payload(token))
    head, body, sig = token.split(".")
    middle = len(sig) // 2
    flipped = sig[:middle] + ("A" if sig[middle] != "A" else "B") + sig[middle + 1 :]
    _invalid(SECRET, f"{head}.{body}.{flipped}")
    _invalid(SECRET, "not-a-jwt")
    _invalid(SECRET, "")


def test_tampered_expired_token_reads_invalid_not_expired() -> None:
    token = issue_access_token(
        SECRET, user_id=USER, session_id=SESSION, ttl_seconds=1, now=time.time() - 100
    )
    _invalid(SECRET, _tamper_payload(token))


def test_wrong_secret_is_rejected() -> None:
    token = issue_access_token(SECRET, user_id=USER, session_id=SESSION, ttl_seconds=60)
    _invalid(OTHER_SECRET, token)


def test_secret_rotation_accepts_retired_secret() -> None:
    old_token = issue_access_token(OTHER_SECRET, user_id=USER, session_id=SESSION, ttl_seconds=60)
    assert decode_access_token([SECRET, OTHER_SECRET], old_token)["sub"] == str(USER)
    _invalid([SECRET], old_token)


def test_wrong_type_and_missing_claims_are_rejected() -> None:
    now = int(time.time())
    base = {"iss": "roost", "sub": "u", "sid": "s", "jti": "j", "iat": now, "exp": now + 60}
    _invalid(SECRET, jwt.encode({**base, "typ": "refresh"}, SECRET, algorithm="HS256"))
    no_sid = {k: v for k, v in base.items() if k != "sid"} | {"typ": "access"}
    _invalid(SECRET, jwt.encode(no_sid, SECRET, algorithm="HS256"))
    _invalid(
        SECRET, jwt.encode({**base, "typ": "access", "iss": "evil"}, SECRET, algorithm="HS256")
    )


def _well_formed_claims() -> dict[str, object]:
    now = int(time.time())
    return {"iss": "roost", "sub": str(USER), "sid": str(SESSION), "jti": "j",
            "typ": "access", "iat": now, "exp": now + 60}


def test_well_formed_hand_made_claims_are_accepted() -> None:
    claims = _well_formed_claims() | {"nbf": time.time() - 1, "exp": time.time() + 60.5}
    assert decode_access_token(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))["sub"] == str(USER)


@pytest.mark.parametrize(
    "change",
    [
        {"exp": str(int(time.time()) + 3600)},  # PyJWT would int() it and accept it
        {"exp": True},
        {"exp": None},
        {"exp": [int(time.time()) + 3600]},
        {"iat": str(int(time.time()))},
        {"iat": False},
        {"nbf": str(int(time.time()) - 10)},
        {"nbf": {"t": 0}},
        {"sub": 12345},
        {"sub": ""},
        {"sub": "not-a-uuid"},
        {"sid": ["0190c0de-0000-7000-8000-00000000beef"]},
        {"sid": "s"},
        {"jti": 7},
        {"jti": ""},
        {"typ": ["access"]},
        {"iss": ["roost"]},
    ],
)
def test_malformed_registered_claims_are_rejected(change: dict[str, object]) -> None:
    # Signed as raw JWS: PyJWT's encoder itself refuses some of these shapes.
    payload = json.dumps(_well_formed_claims() | change).encode()
    _invalid(SECRET, jwt.api_jws.encode(payload, SECRET, algorithm="HS256"))


def test_alg_none_and_other_algorithms_are_rejected() -> None:
    now = int(time.time())
    claims = {
        "iss": "roost",
        "sub": "u",
        "sid": "s",
        "jti": "j",
        "typ": "access",
        "iat": now,
        "exp": now + 60,
    }
    _invalid(SECRET, jwt.encode(claims, None, algorithm="none"))
    _invalid(SECRET, jwt.encode(claims, SECRET * 2, algorithm="HS512"))


def test_issue_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        issue_access_token("short", user_id=USER, session_id=SESSION, ttl_seconds=60)
    with pytest.raises(ValueError, match="positive"):
        issue_access_token(SECRET, user_id=USER, session_id=SESSION, ttl_seconds=0)
    with pytest.raises(ValueError, match="reserved"):
        issue_access_token(
            SECRET, user_id=USER, session_id=SESSION, ttl_seconds=60, extra_claims={"sub": "x"}
        )
    with pytest.raises(ValueError, match="at least one secret"):
        decode_access_token([], "x")

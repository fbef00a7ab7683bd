"""API keys, opaque refresh tokens and JWT access tokens.

API keys look like ``rst_<prefix>_<secret>``:

* ``rst_`` makes a leaked key recognisable to secret scanners and to people;
* ``<prefix>`` is 8 lower-case alphanumerics, stored in clear and shown in the UI so
  a user can tell keys apart ("rst_k3x9a0qz_...");
* ``<secret>`` is 43 characters from ``[A-Za-z0-9]`` (~256 bits).

Only the SHA-256 hex digest of the whole key is stored: the key
is high-entropy, so a slow password hash would add cost without adding safety, and
a plain digest allows an indexed lookup.  Refresh tokens are handled the same way.

Access tokens are short-lived HS256 JWTs with ``iss="roost"``, ``typ="access"``,
``sub`` (user id), ``sid`` (session id), ``jti``, ``iat`` and ``exp``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import string
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from roost.errors import Unauthorized

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "API_KEY_PREFIX",
    "JWT_ALGORITHM",
    "JWT_ISSUER",
    "MIN_JWT_SECRET_BYTES",
    "api_key_prefix",
    "constant_time_equals",
    "decode_access_token",
    "generate_api_key",
    "generate_refresh_token",
    "hash_api_key",
    "hash_refresh_token",
    "hash_token",
    "issue_access_token",
    "issue_refresh_token",
    "looks_like_access_token",
    "looks_like_api_key",
    "refresh_token_session",
    "verify_api_key",
    "verify_token_hash",
]

API_KEY_PREFIX = "rst_"
_JWT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_VISIBLE_PREFIX_LEN = 8
_SECRET_LEN = 43  # 43 * log2(62) ~= 256 bits
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
# Accept 32+ secret characters so a future change of length still parses.
_API_KEY_RE = re.compile(r"^rst_([a-z0-9]{8})_([A-Za-z0-9_-]{32,128})$")

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "roost"
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - a claim value, not a credential
# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output.
MIN_JWT_SECRET_BYTES = 32
_RESERVED_CLAIMS = frozenset({"iss", "sub", "sid", "jti", "typ", "iat", "nbf", "exp"})
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "jti", "sid", "typ"]
# RFC 7519 section 2 and 4.1: NumericDate claims are JSON numbers, the others strings.
# PyJWT converts a numeric string ("exp": "9999999999") with int(), so the shapes are
# checked here as well.
_NUMERIC_DATE_CLAIMS = ("exp", "iat", "nbf")
_STRING_CLAIMS = ("iss", "sub", "sid", "jti", "typ")


# --- hashing helpers -----------------------------------------------------------------


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a high-entropy token (API key, refresh token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    """``hmac.compare_digest`` for text: timing does not depend on where they differ."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def verify_token_hash(token: str, expected_hash: str) -> bool:
    """True when ``token`` hashes to ``expected_hash`` (constant-time compare)."""
    return constant_time_equals(hash_token(token), expected_hash.lower())


# --- API keys ------------------------------------------------------------------------


def _random_string(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def generate_api_key() -> tuple[str, str, str]:
    """A new key: ``(full_key, prefix, sha256_hex)``.

    Show ``full_key`` to the user once; store ``prefix`` (the 8 visible characters)
    and ``sha256_hex``.
    """
    prefix = _random_string(_PREFIX_ALPHABET, _VISIBLE_PREFIX_LEN)
    secret = _random_string(_SECRET_ALPHABET, _SECRET_LEN)
    full_key = f"{API_KEY_PREFIX}{prefix}_{secret}"
    return full_key, prefix, hash_api_key(full_key)


def hash_api_key(key: str) -> str:
    """SHA-256 hex digest of the full key (what the database stores)."""
    return hash_token(key)


def verify_api_key(key: str, expected_hash: str) -> bool:
    """True when ``key`` hashes to ``expected_hash`` (constant-time compare)."""
    return verify_token_hash(key, expected_hash)


def looks_like_api_key(value: str) -> bool:
    """Cheap shape check: tells an API key from a JWT in an ``Authorization`` header."""
    return _API_KEY_RE.fullmatch(value) is not None


def looks_like_access_token(value: str) -> bool:
    """Cheap shape check: a JWT (three base64url segments), as an access token is; never
    an API key or a refresh token."""
    return _JWT_RE.fullmatch(value) is not None


def api_key_prefix(value: str) -> str | None:
    """The 8-character visible prefix of a well-formed key, else ``None``."""
    match = _API_KEY_RE.fullmatch(value)
    return match.group(1) if match else None


# --- refresh tokens ------------------------------------------------------------------


def generate_refresh_token() -> str:
    """An opaque 256-bit token (url-safe text); store only its hash."""
    return secrets.token_urlsafe(32)


_REFRESH_RE = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43})$")


def _refresh_mac(secret: str, session_id: uuid.UUID, nonce: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), b"roost-refresh\x00" + session_id.bytes
                   + nonce.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def issue_refresh_token(secret: str, session_id: uuid.UUID) -> str:
    """A session's refresh token: ``<session id>.<256-bit nonce>.<HMAC>``; store only
    its hash.  The MAC lets :func:`refresh_token_session` tell a token Roost issued for
    a session (and since replaced: a copy) from a made-up one, however many rotations
    ago it was replaced."""
    nonce = secrets.token_urlsafe(32)
    return f"{session_id.hex}.{nonce}.{_refresh_mac(secret, session_id, nonce)}"


def refresh_token_session(secret: str, token: str) -> uuid.UUID | None:
    """The session ``token`` was issued for, when its MAC proves Roost issued it;
    ``None`` for a forged token, another shape, or a token from before the format."""
    match = _REFRESH_RE.fullmatch(token)
    if match is None:
        return None
    session_id = uuid.UUID(hex=match.group(1))
    if not constant_time_equals(_refresh_mac(secret, session_id, match.group(2)),
                                match.group(3)):
        return None
    return session_id


def hash_refresh_token(token: str) -> str:
    """SHA-256 hex digest of a refresh token."""
    return hash_token(token)


# --- JWT access tokens ---------------------------------------------------------------


def _registered_claims_well_formed(claims: Mapping[str, Any]) -> bool:
    """NumericDate claims are finite numbers (not booleans, not strings); ``iss``, ``sub``,
    ``sid``, ``jti`` and ``typ`` are non-empty strings; ``sub``/``sid`` name UUIDs."""
    for name in _NUMERIC_DATE_CLAIMS:
        if name in claims:
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            if not math.isfinite(value):
                return False
    for name in _STRING_CLAIMS:
        if name in claims and (not isinstance(claims[name], str) or not claims[name]):
            return False
    for name in ("sub", "sid"):
        try:
            uuid.UUID(claims[name])
        except (KeyError, ValueError):
            return False
    return True


def _key_bytes(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if len(key) < MIN_JWT_SECRET_BYTES:
        # A configuration error, not the caller's: say what is wrong, not the value.
        raise ValueError(f"JWT signing secret must be at least {MIN_JWT_SECRET_BYTES} bytes long")
    return key


def issue_access_token(
    secret: str | bytes,
    *,
    user_id: uuid.UUID | str,
    session_id: uuid.UUID | str,
    ttl_seconds: int,
    extra_claims: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """Sign a short-lived access token.

    ``extra_claims`` may add application claims (e.g. ``scopes``) but may not
    override the registered ones.  ``now`` (Unix seconds) is for tests.
    """
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {}
    if extra_claims:
        clash = _RESERVED_CLAIMS.intersection(extra_claims)
        if clash:
            raise ValueError(f"extra_claims may not set reserved claims: {sorted(clash)}")
        claims.update(extra_claims)
    claims.update(
        {
            "iss": JWT_ISSUER,
            "sub": str(user_id),
            "sid": str(session_id),
            "jti": uuid.uuid4().hex,
            "typ": ACCESS_TOKEN_TYPE,
            "iat": issued_at,
            "exp": issued_at + ttl_seconds,
        }
    )
    return jwt.encode(claims, _key_bytes(secret), algorithm=JWT_ALGORITHM)


def decode_access_token(
    secret: str | bytes | Sequence[str | bytes],
    token: str,
    *,
    leeway: float = 0,
) -> dict[str, Any]:
    """Verify and return the claims of an access token.

    ``secret`` may be a list (current secret first, then retired ones) so a signing
    key can rotate without logging everyone out.  Raises
    :class:`roost.errors.Unauthorized` with ``"token expired"`` or ``"invalid token"``;
    the reason is never more specific than that, so it cannot guide forgery.
    """
    keys = [secret] if isinstance(secret, str | bytes) else list(secret)
    if not keys:
        raise ValueError("decode_access_token needs at least one secret")
    # PyJWT's own time checks int() the claims (a string "exp" passes, a null one raises
    # TypeError): they are turned off here and done below, after the shapes are checked.
    options: Any = {"require": _REQUIRED_CLAIMS, "verify_exp": False, "verify_nbf": False,
                    "verify_iat": False}
    claims: dict[str, Any] | None = None
    for index, key in enumerate(keys):
        try:
            claims = jwt.decode(
                token,
                _key_bytes(key),
                algorithms=[JWT_ALGORITHM],
                issuer=JWT_ISSUER,
                options=options,
            )
            break
        except jwt.InvalidSignatureError:
            if index == len(keys) - 1:
                raise Unauthorized("invalid token") from None
        except (jwt.PyJWTError, TypeError, ValueError):
            raise Unauthorized("invalid token") from None
    if claims is None or not _registered_claims_well_formed(claims):
        raise Unauthorized("invalid token")
    now = time.time()
    if claims["exp"] <= now - leeway:
        raise Unauthorized("token expired")
    if claims.get("nbf", now) > now + leeway:
        raise Unauthorized("invalid token")  # not yet valid
    if claims["typ"] != ACCESS_TOKEN_TYPE:
        raise Unauthorized("invalid token")
    return claims

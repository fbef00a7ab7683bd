"""TOTP (RFC 6238) second factor and one-time backup codes.

The TOTP secret is a credential: callers store it encrypted with
:class:`roost.security.crypto.SecretBox`, never in clear.

Replay: a code stays valid for its whole 30 s step (and ``valid_window`` steps
either side).  :func:`verify_totp` returns the time step it matched; the caller
stores it and passes it back as ``last_used_step`` so the same code -- or any
earlier one -- is refused afterwards (RFC 6238 section 5.2).

Backup codes are ``xxxxx-xxxxx`` in Crockford's base32 alphabet (50 bits each; no
I, L, O or U, so they read aloud and type cleanly).  Being random and high-entropy,
they are stored as plain SHA-256 digests of the normalized code, like API keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

import pyotp

__all__ = [
    "BACKUP_CODE_ALPHABET",
    "TOTP_DIGITS",
    "TOTP_INTERVAL",
    "current_totp_step",
    "generate_backup_codes",
    "hash_backup_code",
    "match_backup_code",
    "new_totp_secret",
    "normalize_backup_code",
    "provisioning_uri",
    "totp_code_at",
    "verify_totp",
]

TOTP_DIGITS = 6
TOTP_INTERVAL = 30
_SECRET_BASE32_CHARS = 32  # 160 bits, the HMAC-SHA1 block the RFC recommends

BACKUP_CODE_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32
_BACKUP_GROUP = 5
_BACKUP_GROUPS = 2
# Crockford decoding: read look-alikes as the digit they resemble.
_CROCKFORD_FIXUPS = str.maketrans({"i": "1", "l": "1", "o": "0"})


def new_totp_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(length=_SECRET_BASE32_CHARS)


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL)


def provisioning_uri(secret: str, account_name: str, issuer: str = "Roost") -> str:
    """The ``otpauth://totp/...`` URI an authenticator app scans as a QR code."""
    return _totp(secret).provisioning_uri(name=account_name, issuer_name=issuer)


def current_totp_step(now: float | None = None) -> int:
    """The RFC 6238 time step (``floor(unix_time / 30)``) at ``now``."""
    return int((time.time() if now is None else now) // TOTP_INTERVAL)


def totp_code_at(secret: str, step: int) -> str:
    """The code for a given time step (tests and enrolment checks)."""
    return _totp(secret).generate_otp(step)


def verify_totp(
    secret: str,
    code: str,
    *,
    valid_window: int = 1,
    last_used_step: int | None = None,
    now: float | None = None,
) -> int | None:
    """The time step ``code`` is valid for, or ``None``.

    Accepts the current step and ``valid_window`` steps either side (clock drift).
    Steps at or before ``last_used_step`` are refused, which blocks replay of a code
    that was already accepted.  Spaces in the code ("123 456") are ignored.
    """
    if valid_window < 0:
        raise ValueError("valid_window must be >= 0")
    candidate = "".join(code.split())
    if len(candidate) != TOTP_DIGITS or not candidate.isascii() or not candidate.isdigit():
        return None
    totp = _totp(secret)
    current = current_totp_step(now)
    matched: int | None = None
    # Check every step in the window (no early exit) so timing says nothing about
    # which step matched.
    for step in range(current - valid_window, current + valid_window + 1):
        if step < 0 or (last_used_step is not None and step <= last_used_step):
            continue
        if hmac.compare_digest(totp.generate_otp(step), candidate) and matched is None:
            matched = step
    return matched


# --- backup codes --------------------------------------------------------------------


def generate_backup_codes(n: int = 10) -> list[str]:
    """``n`` distinct one-time codes like ``"7k2qm-x9d4a"``; show them once, store hashes."""
    if n < 1:
        raise ValueError("n must be at least 1")
    codes: list[str] = []
    while len(codes) < n:
        groups = [
            "".join(secrets.choice(BACKUP_CODE_ALPHABET) for _ in range(_BACKUP_GROUP))
            for _ in range(_BACKUP_GROUPS)
        ]
        code = "-".join(groups)
        if code not in codes:
            codes.append(code)
    return codes


def normalize_backup_code(code: str) -> str:
    """Lower-case, drop spaces and dashes, read I/L as 1 and O as 0."""
    cleaned = "".join(ch for ch in code.casefold() if ch not in " -\t\r\n")
    return cleaned.translate(_CROCKFORD_FIXUPS)


def hash_backup_code(code: str) -> str:
    """SHA-256 hex digest of the normalized code."""
    return hashlib.sha256(normalize_backup_code(code).encode("utf-8")).hexdigest()


def match_backup_code(code: str, hashes: Sequence[str | None]) -> int | None:
    """Index of the stored hash ``code`` matches, else ``None``.

    ``None`` entries (codes already used) never match.  Every entry is compared in
    constant time and the loop does not stop early.
    """
    normalized = normalize_backup_code(code)
    if len(normalized) != _BACKUP_GROUP * _BACKUP_GROUPS:
        return None
    digest = hash_backup_code(normalized).encode("ascii")
    found: int | None = None
    for index, stored in enumerate(hashes):
        if stored is None:
            continue
        if (
            hmac.compare_digest(digest, stored.lower().encode("ascii", errors="replace"))
            and found is None
        ):
            found = index
    return found

"""Password hashing (argon2id, with bcrypt verification for imported accounts) and policy.

Parameters follow the OWASP Password Storage Cheat Sheet (2024/2025 revision):
"Use Argon2id with a minimum configuration of 19 MiB of memory, an iteration count
of 2, and 1 degree of parallelism" -- m=19456 KiB, t=2, p=1.
https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html

Four of the five seed platforms stored bcrypt hashes; those still verify, and
:func:`needs_rehash` is True for them so the login path can upgrade the stored hash
to argon2id while it holds the plaintext.

The policy follows NIST SP 800-63B section 3.1.1.2: a length floor, a length ceiling
(here to bound hashing work), no composition rules, and a block list of common and
context-specific passwords.  Passwords are NFKC-normalised before hashing and
verifying (SP 800-63B 5.1.1.2, RFC 8265's OpaqueString idea): "è" typed precomposed or
decomposed (as some keyboards and operating systems send it) is the same password.
Hashes made before normalisation still verify with the password as typed, and
:func:`check_password` then asks for a re-hash of the normalised form.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from functools import lru_cache
from typing import NamedTuple

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from roost.errors import Unprocessable
from roost.security.common_passwords import COMMON_PASSWORDS

__all__ = [
    "ARGON2_MEMORY_COST_KIB",
    "ARGON2_PARALLELISM",
    "ARGON2_TIME_COST",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "PasswordCheck",
    "check_password",
    "check_password_policy",
    "dummy_verify",
    "hash_password",
    "is_bcrypt_hash",
    "needs_rehash",
    "normalize_password",
    "password_too_long",
    "verify_password",
]

ARGON2_TIME_COST = 2
ARGON2_MEMORY_COST_KIB = 19_456  # 19 MiB
ARGON2_PARALLELISM = 1

MIN_PASSWORD_LENGTH = 12
# Long enough for any passphrase or manager-generated secret, short enough that a
# request cannot make us hash megabytes (argon2 pre-hashes the input, bcrypt would not).
MAX_PASSWORD_LENGTH = 1024
# A cheap bound on the text as typed (the API's schema allows as much), checked before
# normalising: 1024 normalised characters may be typed as more (a decomposed "é" is two).
MAX_TYPED_PASSWORD_LENGTH = 4096
# bcrypt only ever looked at the first 72 bytes; legacy systems truncated silently,
# and bcrypt>=5 refuses longer input instead, so truncate the same way to verify.
_BCRYPT_MAX_BYTES = 72
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_MIN_DISTINCT_CHARACTERS = 5

_hasher = PasswordHasher(
    time_cost=ARGON2_TIME_COST,
    memory_cost=ARGON2_MEMORY_COST_KIB,
    parallelism=ARGON2_PARALLELISM,
)


def normalize_password(password: str) -> str:
    """The form that is hashed: NFKC, so canonically (and compatibly) equal spellings of
    one password are one password."""
    return unicodedata.normalize("NFKC", password)


def password_too_long(password: str) -> bool:
    """Longer than any password the policy accepts, which judges the normalised form: one
    test for the policy, sign-in and the dummy verification, so a password accepted when
    it was set always signs in.  Megabytes are refused before they are normalised."""
    return (len(password) > MAX_TYPED_PASSWORD_LENGTH
            or len(normalize_password(password)) > MAX_PASSWORD_LENGTH)


def hash_password(password: str) -> str:
    """argon2id hash in PHC string format (``$argon2id$v=19$m=19456,t=2,p=1$...``) of the
    normalised password."""
    return _hasher.hash(normalize_password(password))


def is_bcrypt_hash(stored_hash: str) -> bool:
    return stored_hash.startswith(_BCRYPT_PREFIXES)


class PasswordCheck(NamedTuple):
    ok: bool
    # The password matched only as typed (a hash made before normalisation): store a
    # hash of the normalised form while the plaintext is at hand.
    rehash: bool = False


def _verify_one(stored_hash: str, password: str) -> bool:
    if stored_hash.startswith("$argon2"):
        try:
            return _hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    secret = password.encode("utf-8")[:_BCRYPT_MAX_BYTES]
    try:
        return bcrypt.checkpw(secret, stored_hash.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False


def check_password(stored_hash: str, password: str) -> PasswordCheck:
    """Does ``password`` match an argon2 or bcrypt ``stored_hash``?  Never raises.

    The normalised form is tried first, then, when it differs, the form as typed (hashes
    stored before normalisation, imported ones): a wrong password costs as many
    verifications as :func:`dummy_verify` spends for the same text.  Unknown or malformed
    hashes verify as False (and still cost a dummy hash so the answer's timing does not
    reveal that the stored hash was odd).
    """
    if password_too_long(password):
        # No stored password can be this long: refuse without hashing megabytes.
        return PasswordCheck(False)
    if not (stored_hash.startswith("$argon2") or is_bcrypt_hash(stored_hash)):
        dummy_verify(password)
        return PasswordCheck(False)
    normalized = normalize_password(password)
    if _verify_one(stored_hash, normalized):
        return PasswordCheck(True)
    if normalized != password and _verify_one(stored_hash, password):
        return PasswordCheck(True, rehash=True)
    return PasswordCheck(False)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when ``password`` matches ``stored_hash`` (:func:`check_password`)."""
    return check_password(stored_hash, password).ok


def needs_rehash(stored_hash: str) -> bool:
    """True for bcrypt hashes and for argon2 hashes with parameters other than ours."""
    if not stored_hash.startswith("$argon2"):
        return True
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except (InvalidHashError, ValueError):
        return True


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def dummy_verify(password: str = "") -> None:
    """Spend what :func:`check_password` spends on a wrong ``password``, for logins naming
    an unknown user: one argon2 verification, two when the normalised form differs.

    Without it "no such user" answers faster than "wrong password", which tells an
    attacker which accounts exist.
    """
    rounds = 2 if not password_too_long(password) and (
        normalize_password(password) != password) else 1
    for _ in range(rounds):
        try:
            _hasher.verify(_dummy_hash(), "not the password")
        except VerificationError:
            pass


# --- policy --------------------------------------------------------------------------

_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertyuiop[]\\asdfghjkl;'zxcvbnm,./",  # the US rows including punctuation
    "`1234567890-=",
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
    "!@#$%^&*()_+",
)
_TRAILING_NOISE = re.compile(r"[\d\W_]+$")
# Undo the substitutions people think are clever ("p@ssw0rd"); applied after the
# end-noise is stripped so trailing digits are not turned into letters.
_LEET = str.maketrans(
    {
        "@": "a",
        "4": "a",
        "0": "o",
        "1": "i",
        "!": "i",
        "3": "e",
        "$": "s",
        "5": "s",
        "7": "t",
        "+": "t",
        "8": "b",
        "9": "g",
    }
)
_LEADING_NOISE = re.compile(r"^[\d\W_]+")


def _is_sequence(lowered: str) -> bool:
    """Keyboard/alphabet walks, forwards or backwards, possibly repeated ("abcabc...")."""
    for seq in _SEQUENCES:
        for base in (seq, seq[::-1]):
            cycle = base * (len(lowered) // len(base) + 2)
            if lowered in cycle:
                return True
    return False


def _violation(message: str, rule: str) -> Unprocessable:
    return Unprocessable(message, extra={"field": "password", "rule": rule})


def check_password_policy(
    password: str,
    *,
    username: str | None = None,
    email: str | None = None,
    min_length: int = MIN_PASSWORD_LENGTH,
    max_length: int = MAX_PASSWORD_LENGTH,
) -> None:
    """Raise :class:`roost.errors.Unprocessable` when ``password`` is too weak.

    Messages tell the person what to change; they never echo the password.
    ``extra`` carries ``{"field": "password", "rule": <rule name>}`` for clients.
    The normalised form (what is hashed) is judged.
    """
    too_long = _violation(f"Password must be at most {max_length} characters long.",
                          "max_length")
    if password_too_long(password):  # sign-in's own test: what passes here signs in
        raise too_long
    password = normalize_password(password)
    if len(password) < min_length:
        raise _violation(
            f"Password must be at least {min_length} characters long; "
            "a few unrelated words make a strong, memorable password.",
            "min_length",
        )
    if len(password) > max_length:
        raise too_long
    lowered = password.casefold()
    compact = "".join(lowered.split())  # "pass word 123" is still "password123"

    for label, value in (("username", username), ("email address", email)):
        if not value:
            continue
        # In the password's own form (NFKC): an address typed in fullwidth letters or
        # with a ligature is the name the password must not hold.
        value = normalize_password(value)
        candidates = {value.casefold()}
        if "@" in value:
            candidates.add(value.split("@", 1)[0].casefold())
        # Short names ("al", "jo") occur inside too many good passwords to block.
        if any(len(c) >= 3 and (c in lowered or c in compact) for c in candidates):
            raise _violation(
                f"Password must not contain your {label}; choose something unrelated to it.",
                f"contains_{label.split()[0]}",
            )

    core = _LEADING_NOISE.sub("", _TRAILING_NOISE.sub("", compact))
    candidates = {compact, core, core.translate(_LEET), compact.translate(_LEET)}
    if any(c and c in COMMON_PASSWORDS for c in candidates):
        raise _violation(
            "This password is one of the most commonly used passwords (adding digits or "
            "symbols at the ends does not help); choose a different one.",
            "common",
        )
    if _is_sequence(compact):
        raise _violation(
            "Password must not be a keyboard or alphabet sequence; choose something less "
            "predictable.",
            "sequence",
        )
    if len(set(password)) < _MIN_DISTINCT_CHARACTERS:
        raise _violation(
            f"Password must use at least {_MIN_DISTINCT_CHARACTERS} different characters; "
            "repeated characters are easy to guess.",
            "repetitive",
        )

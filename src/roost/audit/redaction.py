"""Keeps secrets out of audit ``changes`` and ``metadata``."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "[redacted]"

# A key is secret when one of its words is a credential word ("new_password",
# "refreshToken", "X-Api-Key"), so counters such as "tokens_in" stay visible.
_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "apikey", "authorization",
     "credential", "credentials", "cookie", "otp", "totp", "signature", "pin",
     # plurals of a map or list of them ("secrets": {"OPENAI": ...}); not a general
     # plural rule, which would hide "tokens_in"
     "secrets", "passwords", "passphrases", "apikeys", "cookies"}
)
_SECRET_PAIRS = ("api_key", "private_key", "backup_code", "session_key", "recovery_code",
                 "encryption_key", "signing_key", "secret_key", "master_key")
# A name run together ("clientsecret", "refreshtoken", "privatekey") ending in one of these:
# a suffix, not a substring, so "maxtokens" stays visible.
_SECRET_SUFFIXES = ("secret", "password", "passwd", "passphrase", "token", "apikey",
                    "privatekey", "sessionkey", "signingkey", "encryptionkey", "secretkey",
                    "masterkey")
# Word boundaries: "refreshToken" (lower to upper) and after an acronym, "DBPassword",
# "OpenAIAPIKey" (an upper letter before an upper one starting a word).
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# A letter followed by digits ends a word: "password2" (a confirmation field), "token2".
_DIGITS = re.compile(r"(?<=[^\W\d_])(?=\d)")
# Any other run of non-word characters separates words too: "Client Secret", "x.api.token",
# "Authorization:", "password " (a form label, a dotted path, a copied header).
_SEPARATORS = re.compile(r"[\W_]+")


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Cached: records name the same few keys over and over (a regex and a split for each
    key was most of building an audit record)."""
    # Compatibility forms first: "PASSWORD" in fullwidth letters is the word to a reader.
    text = unicodedata.normalize("NFKC", key)
    norm = _SEPARATORS.sub("_", _DIGITS.sub("_", _CAMEL.sub("_", text)).casefold()).strip("_")
    words = norm.split("_")
    if norm == "key" or any(word in _SECRET_WORDS for word in words):
        return True
    if any(pair in norm for pair in _SECRET_PAIRS):
        return True
    joined = "".join(word for word in words if not word.isdigit())
    return joined.endswith(_SECRET_SUFFIXES)


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with every value under a secret-looking key replaced, and in a
    URL every secret-looking query parameter's value (:func:`redact_url`)."""
    if _depth > 32:  # hostile nesting: stop descending, keep nothing below
        return REDACTED
    if isinstance(value, dict):
        return {
            str(k): REDACTED if is_secret_key(str(k)) else redact(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    if isinstance(value, str) and "://" in value and "?" in value:
        return redact_url(value)
    return value


def redact_url(url: str) -> str:
    """``url`` with the value of each query parameter named like a secret
    (``?api_key=...``, ``&access_token=...``) replaced: a server or a page some users
    reach with a token in its URL would have it kept in the audit log."""
    head, sep, rest = url.partition("?")
    query, hash_, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and is_secret_key(unquote_plus(name)) else part)
    return head + sep + "&".join(parts) + hash_ + fragment

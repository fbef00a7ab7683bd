"""Keeps secrets out of audit ``changes`` and ``metadata``."""

from __future__ import annotations

import functools
import re
from typing import Any

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
_SECRET_PAIRS = ("api_key", "private_key", "backup_code", "session_key", "recovery_code")
# Word boundaries: "refreshToken" (lower to upper) and after an acronym, "DBPassword",
# "OpenAIAPIKey" (an upper letter before an upper one starting a word).
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# Any other run of non-word characters separates words too: "Client Secret", "x.api.token",
# "Authorization:", "password " (a form label, a dotted path, a copied header).
_SEPARATORS = re.compile(r"[\W_]+")


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Cached: records name the same few keys over and over (a regex and a split for each
    key was most of building an audit record)."""
    norm = _SEPARATORS.sub("_", _CAMEL.sub("_", key).lower()).strip("_")
    words = norm.split("_")
    if norm == "key" or any(word in _SECRET_WORDS for word in words):
        return True
    return any(pair in norm for pair in _SECRET_PAIRS)


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with every value under a secret-looking key replaced."""
    if _depth > 32:  # hostile nesting: stop descending, keep nothing below
        return REDACTED
    if isinstance(value, dict):
        return {
            str(k): REDACTED if is_secret_key(str(k)) else redact(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    return value

"""Secrets by reference in an MCP server's env values and headers.

A value may name a persona's secret instead of holding it: ``"Bearer ${secret:github_token}"``
or, when the persona has secrets of that name under several types,
``"${secret:api_token/github_token}"``.  The server's row keeps the reference (encrypted
like any value) and, in plaintext, the names it references (``config.secret_refs``) so an
agent that would use the server can be checked at configuration time.  The value is
resolved only when a call is made from an agent run of a persona that holds it (the
runner passes a :data:`SecretResolver`), for a server registered by an administrator
(global) or by one of the persona's owners at the time of the call, and never stored,
logged or returned.  (A server of an editor's could otherwise name the owner's secret
and receive it at its own URL: editors set secrets, they never read them.)
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus

from roost.errors import Conflict, RoostError
from roost.llm.base import HEADER_VALUE_RULE, header_value_ok
from roost.tools import mcpclient

SecretRef = tuple[str | None, str]  # (secret type or None: any type, key name)
Revealed = mcpclient.Hidden
"""What one call was given: (a form of a substituted value, its ``[secret <label>]``
stand-in), longest first, for :func:`hide`."""
SecretResolver = Callable[[uuid.UUID | None, str | None, str], Awaitable[str]]
"""(the server's owner or None: global, secret type or None, key name) -> the value;
raises NotFound/Conflict (RoostError), or :class:`SecretsUnavailable` for a server whose
owner may not receive the persona's secrets."""

REFERENCE: Final = re.compile(r"\$\{secret:(?:([a-z_]{1,50})/)?([A-Za-z0-9_.-]{1,255})\}")
MARKER: Final = "${secret:"
REFERENCE_RULE: Final = ("${secret:key} or ${secret:type/key} (type: lowercase letters and "
                         "'_'; key: letters, digits, '_', '.' and '-', up to 255)")
# Bounds on what one env value or header becomes: a reference repeated a thousand times
# would otherwise turn an 11 KB registration into a 62 MiB header per call.
MAX_VALUE_CHARS: Final = 8192  # a literal value, at registration
MAX_REFERENCES_PER_VALUE: Final = 4  # reference occurrences in one value, at registration
MAX_RESOLVED_CHARS: Final = 128 * 1024  # one value, substituted (the largest secret, twice)
# Shorter values are not hidden in what a server answers: "[secret x]" in place of every
# "yes" or "1" would garble answers and tell more than it hides.
MIN_HIDDEN_CHARS: Final = 8


class SecretsUnavailable(Conflict):
    title, type_slug = "Secrets unavailable", "secrets-unavailable"


def references(values: Mapping[str, str]) -> list[SecretRef]:
    """Every secret the values reference, in order, without repeats."""
    found: list[SecretRef] = []
    for value in values.values():
        for kind, key in REFERENCE.findall(value):
            ref = (kind or None, key)
            if ref not in found:
                found.append(ref)
    return found


def malformed(value: str) -> bool:
    """True when ``value`` holds a ``${secret:`` that is not part of a reference (it
    would be sent as it stands, and no persona would be checked for it)."""
    return MARKER in REFERENCE.sub("", value)


def label(ref: SecretRef) -> str:
    return f"{ref[0]}/{ref[1]}" if ref[0] else ref[1]


def _unfit(where: str, value: str) -> str | None:
    """Why a substituted value cannot be sent (the rules registration applies to the
    literal values), or None.  Never includes the value."""
    if where == "header" and not header_value_ok(value):
        return f"{HEADER_VALUE_RULE}, without surrounding spaces"
    if where == "environment variable" and "\x00" in value:
        return "free of NUL characters"
    return None


async def _substitute(values: Mapping[str, str], resolve: SecretResolver,
                      owner_id: uuid.UUID | None, resolved: dict[SecretRef, str], *,
                      server: str, where: str) -> dict[str, str]:
    """``values`` with their references replaced; ``resolved`` collects the values."""
    for ref in references(values):
        if ref not in resolved:
            resolved[ref] = await resolve(owner_id, *ref)
    out: dict[str, str] = {}
    for name, value in values.items():
        found = [(m.group(1) or None, m.group(2)) for m in REFERENCE.finditer(value)]
        named = ", ".join(label(r) for r in dict.fromkeys(found))
        # Measured before it is built (a row stored before the registration caps, or
        # large secrets): never more than MAX_RESOLVED_CHARS in memory for one value.
        size = len(REFERENCE.sub("", value)) + sum(len(resolved[r]) for r in found)
        if size > MAX_RESOLVED_CHARS:
            raise SecretsUnavailable(
                f"MCP server {server!r}: the {where} {name!r} with the persona's secret(s) "
                f"{named} substituted would be {size} characters, more than "
                f"{MAX_RESOLVED_CHARS}; reference fewer or shorter secrets")
        out[name] = REFERENCE.sub(
            lambda m: resolved[(m.group(1) or None, m.group(2))], value)
        rule = _unfit(where, out[name])
        if rule is not None:
            # Checked here, not left to the HTTP library or the OS: their errors quote
            # the whole value (a secret) and would be recorded and shown to the model.
            raise SecretsUnavailable(
                f"MCP server {server!r}: the {where} {name!r} with the persona's secret(s) "
                f"{named} substituted is not {rule}; set the secret anew")
    return out


def without_references(spec: mcpclient.ServerSpec) -> tuple[mcpclient.ServerSpec, list[str]]:
    """``spec`` without the env values and headers that reference secrets, and what was
    left out ("header 'X'", "env 'Y'"): for a discovery or health check, which has no
    persona to resolve them from and must never send the literal reference."""
    env = {k: v for k, v in spec.env.items() if not REFERENCE.search(v)}
    headers = {k: v for k, v in spec.headers.items() if not REFERENCE.search(v)}
    left_out = ([f"env {k!r}" for k in spec.env if k not in env]
                + [f"header {k!r}" for k in spec.headers if k not in headers])
    if not left_out:
        return spec, []
    return dataclasses.replace(spec, env=env, headers=headers), left_out


async def resolve_spec(spec: mcpclient.ServerSpec, resolve: SecretResolver | None
                       ) -> tuple[mcpclient.ServerSpec, Revealed]:
    """``spec`` with its references replaced by the secrets' values (at call time), and
    what to :func:`hide` in whatever comes back from the call."""
    refs = references(spec.env) + references(spec.headers)
    if not refs:
        return spec, ()
    if resolve is None:
        raise SecretsUnavailable(
            f"MCP server {spec.name!r} uses the secret(s) "
            f"{', '.join(label(r) for r in refs)} by reference: they are resolved for runs "
            "of an agent whose persona holds them, not for direct calls")
    resolved: dict[SecretRef, str] = {}
    env = await _substitute(spec.env, resolve, spec.owner_id, resolved, server=spec.name,
                            where="environment variable")
    headers = await _substitute(spec.headers, resolve, spec.owner_id, resolved,
                                server=spec.name, where="header")
    revealed = _revealed(resolved)
    # The spec carries them too: a failure's text is hidden before it is cut (failure_of).
    return dataclasses.replace(spec, env=env, headers=headers, hidden=revealed), revealed


_PERCENT: Final = re.compile(r"%[0-9A-F]{2}")


# Characters other JSON encoders escape as \\uXXXX besides what Python's does: Go's
# encoding/json (HTML-safe by default: < > & and the JavaScript line separators, lower-case
# hex) and .NET's System.Text.Json (those and ' + `, and every non-ASCII one, upper-case).
_GO_ESCAPED: Final = frozenset("<>&\u2028\u2029")
_DOTNET_ESCAPED: Final = frozenset("<>&'+`\u2028\u2029")


def _json_escaped(text: str, escaped: Callable[[str], bool], upper: bool) -> str:
    """``text`` (a JSON string's body as Python writes it, non-ASCII kept) with the
    characters ``escaped`` picks as ``\\uXXXX`` (UTF-16: two escapes beyond U+FFFF)."""
    out: list[str] = []
    for char in text:
        if not escaped(char):
            out.append(char)
            continue
        units = char.encode("utf-16-be")
        for i in range(0, len(units), 2):
            code = f"{int.from_bytes(units[i:i + 2], 'big'):04x}"
            out.append("\\u" + (code.upper() if upper else code))
    return "".join(out)


def encoded_forms(value: str) -> set[str]:
    """``value`` as sent and as a server would quote it back: inside JSON text (non-ASCII
    kept or ``\\uXXXX``-escaped, ``/`` as is or ``\\/``, Go's and .NET's HTML-safe escapes,
    lower- or upper-case hex) or a URL (percent-encoded with ``/`` kept or not, or
    form-encoded with ``+`` for spaces; upper- or lower-case hex)."""
    forms = {value}
    for ascii_only in (False, True):
        text = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        forms.update((text, text.replace("/", "\\/")))
    kept = json.dumps(value, ensure_ascii=False)[1:-1]
    forms.add(_json_escaped(kept, lambda c: c in _GO_ESCAPED, upper=False))
    forms.add(_json_escaped(kept, lambda c: not c.isascii(), upper=True))
    forms.add(_json_escaped(kept, lambda c: c in _DOTNET_ESCAPED or not c.isascii(), upper=True))
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value)):
        forms.update((encoded, _PERCENT.sub(lambda m: m.group().lower(), encoded)))
    return forms


def _revealed(resolved: Mapping[SecretRef, str]) -> Revealed:
    forms: dict[str, str] = {}
    for ref, value in resolved.items():
        for form in encoded_forms(value):
            if len(form) >= MIN_HIDDEN_CHARS:
                forms.setdefault(form, f"[secret {label(ref)}]")
    return tuple(sorted(forms.items(), key=lambda item: (-len(item[0]), item[0])))


def hide(data: Any, revealed: Revealed) -> Any:
    """``data`` (text, or JSON-like lists and dicts of it) with every secret value the
    call was given replaced by ``[secret <label>]``: a server may quote back what it was
    sent ("401 invalid credentials: Bearer ..."), and nothing it answers may carry the
    value into a row, a log, an answer or the model's prompt."""
    if not revealed:
        return data
    if isinstance(data, str):
        return mcpclient.hide_text(data, revealed)
    if isinstance(data, dict):
        return {hide(k, revealed): hide(v, revealed) for k, v in data.items()}
    if isinstance(data, list):
        return [hide(item, revealed) for item in data]
    if isinstance(data, int | float) and not isinstance(data, bool):
        # A numeric secret (an account number, a PIN) echoed as a JSON number: its text
        # holding a value is the value, shown as the stand-in text in its place.
        shown = json.dumps(data)
        hidden = mcpclient.hide_text(shown, revealed)
        return data if hidden == shown else hidden
    return data


def hide_error(exc: RoostError, revealed: Revealed) -> None:
    """:func:`hide` in a failure's detail and extra, in place (then re-raised); the
    exceptions it was raised from or while handling, unhidden, are dropped."""
    if revealed:
        exc.detail = hide(exc.detail, revealed)
        exc.args = (exc.detail,)
        exc.extra = hide(exc.extra, revealed)
        exc.__cause__ = exc.__context__ = None

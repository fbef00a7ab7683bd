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
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from roost.errors import Conflict
from roost.llm.base import HEADER_VALUE_RULE, header_value_ok
from roost.tools import mcpclient

SecretRef = tuple[str | None, str]  # (secret type or None: any type, key name)
SecretResolver = Callable[[uuid.UUID | None, str | None, str], Awaitable[str]]
"""(the server's owner or None: global, secret type or None, key name) -> the value;
raises NotFound/Conflict (RoostError), or :class:`SecretsUnavailable` for a server whose
owner may not receive the persona's secrets."""

REFERENCE: Final = re.compile(r"\$\{secret:(?:([a-z_]{1,50})/)?([A-Za-z0-9_.-]{1,255})\}")
MARKER: Final = "${secret:"
REFERENCE_RULE: Final = ("${secret:key} or ${secret:type/key} (type: lowercase letters and "
                         "'_'; key: letters, digits, '_', '.' and '-', up to 255)")


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
                      owner_id: uuid.UUID | None, *, server: str,
                      where: str) -> dict[str, str]:
    resolved: dict[SecretRef, str] = {}
    for ref in references(values):
        resolved[ref] = await resolve(owner_id, *ref)
    out: dict[str, str] = {}
    for name, value in values.items():
        out[name] = REFERENCE.sub(
            lambda m: resolved[(m.group(1) or None, m.group(2))], value)
        rule = _unfit(where, out[name])
        if rule is not None:
            # Checked here, not left to the HTTP library or the OS: their errors quote
            # the whole value (a secret) and would be recorded and shown to the model.
            named = ", ".join(label(r) for r in references({name: value}))
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


async def resolve_spec(spec: mcpclient.ServerSpec,
                       resolve: SecretResolver | None) -> mcpclient.ServerSpec:
    """``spec`` with its references replaced by the secrets' values (at call time)."""
    refs = references(spec.env) + references(spec.headers)
    if not refs:
        return spec
    if resolve is None:
        raise SecretsUnavailable(
            f"MCP server {spec.name!r} uses the secret(s) "
            f"{', '.join(label(r) for r in refs)} by reference: they are resolved for runs "
            "of an agent whose persona holds them, not for direct calls")
    return dataclasses.replace(
        spec, env=await _substitute(spec.env, resolve, spec.owner_id, server=spec.name,
                                    where="environment variable"),
        headers=await _substitute(spec.headers, resolve, spec.owner_id, server=spec.name,
                                  where="header"))

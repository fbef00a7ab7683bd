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
from roost.tools import mcpclient

SecretRef = tuple[str | None, str]  # (secret type or None: any type, key name)
SecretResolver = Callable[[uuid.UUID | None, str | None, str], Awaitable[str]]
"""(the server's owner or None: global, secret type or None, key name) -> the value;
raises NotFound/Conflict (RoostError), or :class:`SecretsUnavailable` for a server whose
owner may not receive the persona's secrets."""

REFERENCE: Final = re.compile(r"\$\{secret:(?:([a-z_]{1,50})/)?([A-Za-z0-9_.-]{1,255})\}")


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


def label(ref: SecretRef) -> str:
    return f"{ref[0]}/{ref[1]}" if ref[0] else ref[1]


async def _substitute(values: Mapping[str, str], resolve: SecretResolver,
                      owner_id: uuid.UUID | None) -> dict[str, str]:
    resolved: dict[SecretRef, str] = {}
    for ref in references(values):
        resolved[ref] = await resolve(owner_id, *ref)
    return {name: REFERENCE.sub(lambda m: resolved[(m.group(1) or None, m.group(2))], value)
            for name, value in values.items()}


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
    return dataclasses.replace(spec, env=await _substitute(spec.env, resolve, spec.owner_id),
                               headers=await _substitute(spec.headers, resolve, spec.owner_id))

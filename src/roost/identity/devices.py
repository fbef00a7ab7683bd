"""Registered devices: recorded on every login, listed, trusted, revoked.

A device is identified by a fingerprint of the name the client gives (or one derived
from the user agent) and the user agent, so repeated logins from one browser update one
row.  Revoking a device ends every session that was opened from it.
"""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.errors import NotFound
from roost.identity.common import (
    MAX_LISTED,
    existing_target_user_id,
    lock_sign_ins,
    owned_row,
)
from roost.identity.models import RegisteredDevice, Session
from roost.principal import Principal

DEVICE_TYPES = ("desktop", "mobile", "tablet", "cli", "server", "unknown")

_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
             ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iPadOS"),
            ("Windows", "Windows"), ("Mac OS X", "macOS"), ("Linux", "Linux"))
_CLIENTS = ("curl/", "python-", "httpx/", "Wget/", "okhttp/", "Go-http-client/", "roost-cli")


def describe_user_agent(user_agent: str | None) -> tuple[str, str]:
    """A readable (name, type) for a user agent, e.g. ("Firefox on Linux", "desktop")."""
    ua = user_agent or ""
    for marker in _CLIENTS:
        if ua.startswith(marker):
            return ua.split(" ", 1)[0][:255] or "API client", "cli"
    browser = next((name for marker, name in _BROWSERS if marker in ua), None)
    system = next((name for marker, name in _SYSTEMS if marker in ua), None)
    kind = "tablet" if "iPad" in ua or "Tablet" in ua else "mobile" if "Mobi" in ua else (
        "desktop" if browser else "unknown")
    if browser and system:
        return f"{browser} on {system}", kind
    return (browser or system or "Unknown device"), kind


async def record_login_device(
    session: AsyncSession, user_id: uuid.UUID, *, user_agent: str | None, ip: str | None,
    device_name: str | None = None, device_type: str | None = None,
) -> uuid.UUID:
    """Insert or refresh the device this login came from; its id."""
    guessed_name, guessed_type = describe_user_agent(user_agent)
    name = (device_name or guessed_name).strip()[:255] or guessed_name
    kind = device_type if device_type in DEVICE_TYPES else guessed_type
    fingerprint = hashlib.sha256(f"{name}\x00{user_agent or ''}".encode()).hexdigest()
    stmt = (
        pg_insert(RegisteredDevice)
        .values(
            user_id=user_id, device_name=name, device_type=kind,
            user_agent=(user_agent or None) and user_agent[:1000], ip_address=ip,
            last_used_at=func.now(), fingerprint=fingerprint,
        )
        .on_conflict_do_update(
            constraint="uq_registered_devices_user_fingerprint",
            set_={"last_used_at": func.now(), "ip_address": ip, "device_type": kind},
        )
        .returning(RegisteredDevice.id)
    )
    device_id: uuid.UUID = (await session.execute(stmt)).scalar_one()
    return device_id


async def list_devices(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID | None = None
) -> list[RegisteredDevice]:
    owner = await existing_target_user_id(session, principal, user_id)
    return list((await session.scalars(
        select(RegisteredDevice).where(RegisteredDevice.user_id == owner)
        .order_by(RegisteredDevice.last_used_at.desc().nulls_last(),
                  RegisteredDevice.id.desc())
        .limit(MAX_LISTED)
    )).all())


async def _device_of(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, user_id: uuid.UUID | None
) -> RegisteredDevice:
    """The device ``device_id`` of the account ``user_id`` names (the caller for None):
    another user's id is 404 unless administrator, and a device of anyone else is 404."""
    owner = await existing_target_user_id(session, principal, user_id)
    device = await owned_row(session, principal, RegisteredDevice, device_id, "device")
    if device.user_id != owner:
        raise NotFound("no such device")
    return device


async def set_trusted(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, trusted: bool,
    user_id: uuid.UUID | None = None,
) -> RegisteredDevice:
    device = await _device_of(session, principal, device_id, user_id)
    if device.is_trusted != trusted:
        device.is_trusted = trusted
        await session.flush()
        await record(session, "device.trusted" if trusted else "device.untrusted",
                     user_id=principal.user_id or device.user_id, resource_type="device",
                     resource_id=device.id, changes={"owner": str(device.user_id)})
    return device


async def revoke_device(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID,
    user_id: uuid.UUID | None = None,
) -> None:
    device = await _device_of(session, principal, device_id, user_id)
    # Locked: a second revocation at once waits, then finds it gone (404, one record).
    if await session.scalar(select(RegisteredDevice.id).where(
            RegisteredDevice.id == device.id).with_for_update()) is None:
        raise NotFound("no such device")
    await lock_sign_ins(session, device.user_id)  # a sign-in from it running alongside
    revoked = await session.execute(
        update(Session)
        .where(Session.device_id == device.id, Session.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    await session.delete(device)
    await session.flush()
    await record(session, "device.revoked", user_id=principal.user_id or device.user_id,
                 resource_type="device", resource_id=device_id,
                 changes={"owner": str(device.user_id), "name": device.device_name,
                          "sessions_ended": int(revoked.rowcount)})  # type: ignore[attr-defined]

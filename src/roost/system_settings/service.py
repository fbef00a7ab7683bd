"""Runtime settings for administrators: list, read, override (upsert) and reset (delete).

Every change validates the value against the setting's schema, sends the NOTIFY that
drops the key from every process's cache and records an audit entry (who, key, old and
new value), all in the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.config import Settings
from roost.db.base import utcnow
from roost.errors import Forbidden
from roost.principal import Principal
from roost.system_settings import registry, runtime
from roost.system_settings.models import SystemSetting
from roost.system_settings.registry import RuntimeSetting
from roost.system_settings.schemas import SettingOut


def _require_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise Forbidden("runtime settings are for administrators")


def _out(setting: RuntimeSetting, settings: Settings, row: SystemSetting | None) -> SettingOut:
    default = setting.adapter.dump_python(setting.default(settings), mode="json")
    value = default
    if row is not None:
        try:
            value = setting.adapter.dump_python(setting.decode(row.value), mode="json")
        except Exception:  # a stored value an updated schema refuses: the default applies
            row = None
    return SettingOut(key=setting.key, description=setting.description,
                      json_schema=setting.json_schema(), default=default, value=value,
                      source="default" if row is None else "override",
                      updated_at=row.updated_at if row else None,
                      updated_by=row.updated_by if row else None)


async def _row(session: AsyncSession, key: str, *, lock: bool = False) -> SystemSetting | None:
    stmt = select(SystemSetting).where(SystemSetting.key == key)
    if lock:
        # FOR UPDATE locks no row while the key has no override: two first overrides
        # would both read "none" and audit old=null.  A transaction lock on the key
        # orders them (the second reads the first's value once it has committed).
        await session.execute(text("SELECT pg_advisory_xact_lock(7263117, "
                                   "hashtext('roost.setting:' || :key))"), {"key": key})
        stmt = stmt.with_for_update()
    return await session.scalar(stmt)


async def list_settings(session: AsyncSession, actor: Principal, settings: Settings, *,
                        source: str | None = None) -> list[SettingOut]:
    """Every known setting by key (a short, fixed list: no pages), optionally only those
    whose value comes from ``source`` (default or override)."""
    _require_admin(actor)
    rows = {r.key: r for r in await session.scalars(select(SystemSetting))}
    found = [_out(s, settings, rows.get(s.key)) for s in registry.known()]
    return [o for o in found if source is None or o.source == source]


async def read_setting(session: AsyncSession, actor: Principal, settings: Settings,
                       key: str) -> SettingOut:
    _require_admin(actor)
    setting = registry.lookup(key)
    return _out(setting, settings, await _row(session, key))


async def set_setting(session: AsyncSession, actor: Principal, settings: Settings,
                      key: str, value: Any) -> SettingOut:
    """Override ``key`` with ``value`` (422 with the schema's message when it does not fit)."""
    _require_admin(actor)
    setting = registry.lookup(key)
    encoded = setting.encode(setting.validate(value))
    old = await _row(session, key, lock=True)
    old_value = old.value if old is not None else None
    now = utcnow()
    stmt = insert(SystemSetting).values(
        key=key, value=encoded, description=setting.description, updated_by=actor.user_id,
        created_at=now, updated_at=now,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[SystemSetting.key],
        set_={"value": stmt.excluded.value, "description": stmt.excluded.description,
              "updated_by": stmt.excluded.updated_by, "updated_at": now},
    ).returning(SystemSetting)
    row = (await session.scalars(upsert, execution_options={"populate_existing": True})).one()
    await runtime.notify(session, key)
    # "setting", not "key": the audit log redacts a field named "key" as a secret.
    await audit.record(session, "system_settings.update", user_id=actor.user_id,
                       resource_type="system_setting", resource_id=key,
                       changes={"setting": key, "old": old_value, "new": encoded})
    return _out(setting, settings, row)


async def reset_setting(session: AsyncSession, actor: Principal, settings: Settings,
                        key: str) -> SettingOut:
    """Drop the override: the default applies again (idempotent)."""
    _require_admin(actor)
    setting = registry.lookup(key)
    old = await _row(session, key, lock=True)
    if old is not None:
        old_value = old.value
        await session.execute(delete(SystemSetting).where(SystemSetting.key == key))
        await runtime.notify(session, key)
        await audit.record(session, "system_settings.reset", user_id=actor.user_id,
                           resource_type="system_setting", resource_id=key,
                           changes={"setting": key, "old": old_value, "new": None})
    return _out(setting, settings, None)

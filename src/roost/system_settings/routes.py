"""HTTP routes: /api/v1/admin/settings, the runtime settings (administrators only)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Query

from roost.http.auth import AdminPrincipal
from roost.http.deps import DbSession, SettingsDep
from roost.http.routing import RoostRouter
from roost.system_settings import service
from roost.system_settings.schemas import SettingOut, SettingValueIn

router = RoostRouter(prefix="/api/v1/admin/settings", tags=["system settings"])

Key = Annotated[str, Path(max_length=255, description="The setting's key")]


@router.get("", response_model=list[SettingOut], response_model_by_alias=True,
            summary="Every runtime setting: schema, default, current value and its source")
async def list_settings(
    principal: AdminPrincipal, db: DbSession, settings: SettingsDep,
    source: Annotated[Literal["default", "override"] | None, Query()] = None,
) -> list[SettingOut]:
    return await service.list_settings(db, principal, settings, source=source)


@router.get("/{key}", response_model=SettingOut, response_model_by_alias=True,
            summary="One runtime setting")
async def read_setting(key: Key, principal: AdminPrincipal, db: DbSession,
                       settings: SettingsDep) -> SettingOut:
    return await service.read_setting(db, principal, settings, key)


@router.put("/{key}", response_model=SettingOut, response_model_by_alias=True,
            summary="Override a runtime setting (every process applies it, no restart)")
async def set_setting(key: Key, body: SettingValueIn, principal: AdminPrincipal,
                      db: DbSession, settings: SettingsDep) -> SettingOut:
    return await service.set_setting(db, principal, settings, key, body.value)


@router.delete("/{key}", response_model=SettingOut, response_model_by_alias=True,
               summary="Drop the override: the default (ROOST_* setting) applies again")
async def reset_setting(key: Key, principal: AdminPrincipal, db: DbSession,
                        settings: SettingsDep) -> SettingOut:
    return await service.reset_setting(db, principal, settings, key)

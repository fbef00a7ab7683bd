"""The system_settings domain's table: AI Workflow Engine's ``system_settings`` (seed 001,
every column: docs/seed-map.toml), one row per *overridden* runtime setting.

A key without a row takes its default (the ``ROOST_*`` environment setting); ``value``
holds the JSON encoding of the typed value, validated against the setting's schema
(roost.system_settings.registry) before it is written.  ``updated_by`` carries no
foreign key: this domain sits below identity, and the audit log keeps who changed what.
Row-level security: administrators only; the server reads values for everyone through
the SECURITY DEFINER function ``roost_runtime_setting(key)`` (migration 0860).
"""

from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, Identity, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, Timestamps


class SystemSetting(Timestamps, Base):
    __tablename__ = "system_settings"
    __table_args__ = (CheckConstraint("length(key) > 0", name="key_not_blank"),)

    id: Mapped[int] = mapped_column(Integer, Identity(always=False), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    value: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)

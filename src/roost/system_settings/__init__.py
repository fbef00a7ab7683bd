"""Runtime system settings: typed values (each with a JSON Schema) that an admin changes
without a restart; reads are cached per process and invalidated by NOTIFY (docs/settings.md).

Domains declare theirs with :func:`declare` and read them with
``roost.system_settings.runtime.get(session, SETTING, default)``."""

from roost.system_settings.registry import declare

__all__ = ["declare"]

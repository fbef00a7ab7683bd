"""The known runtime settings: each a key, a type with its constraints (hence a JSON
Schema), a description and the ``roost.config.Settings`` field its default comes from.

Domains declare their own settings in their own modules (``declare("open_registration")``
at import, the module named by their ``Domain(settings=...)`` entry), and read them with
``roost.system_settings.runtime.get``.  A setting that mirrors an environment setting
takes that field's type, constraints and description, so ``ROOST_X`` and the runtime
override accept exactly the same values.  Unknown keys are refused: an override nobody
reads would look like a change that does nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from roost.config import Settings
from roost.errors import NotFound, Unprocessable

_REGISTRY: dict[str, RuntimeSetting] = {}


@dataclass(frozen=True)
class RuntimeSetting:
    key: str
    adapter: TypeAdapter[Any] = field(repr=False, compare=False)
    description: str
    env_field: str | None = None
    """The ``Settings`` field giving the default (``ROOST_<KEY>``); None: ``fallback``."""
    fallback: Any = None

    def default(self, settings: Settings) -> Any:
        return getattr(settings, self.env_field) if self.env_field else self.fallback

    def json_schema(self) -> dict[str, Any]:
        return self.adapter.json_schema()

    def validate(self, value: Any) -> Any:
        """A JSON value -> the typed value; 422 with the schema's message (never the value)."""
        try:
            return self.adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            raise Unprocessable(f"{self.key}: {first['msg']}",
                                extra={"field": "value", "setting": self.key}) from None

    def encode(self, value: Any) -> str:
        return json.dumps(self.adapter.dump_python(value, mode="json"))

    def decode(self, stored: str) -> Any:
        return self.validate(json.loads(stored))


def declare(key: str, *, type_: Any = None, description: str | None = None,
            fallback: Any = None) -> RuntimeSetting:
    """Declare (once; again returns the same one) the runtime setting ``key``.  Without
    ``type_`` it mirrors the ``Settings`` field of that name: type, constraints,
    description, and the environment's value as its default."""
    if key in _REGISTRY:
        return _REGISTRY[key]
    env = Settings.model_fields.get(key)
    if type_ is None:
        if env is None:
            raise ValueError(f"{key!r} is no Settings field: give type_ and description")
        type_ = Annotated[(env.annotation, *env.metadata)] if env.metadata else env.annotation
    text = description or (env.description if env is not None else None)
    if not text:
        raise ValueError(f"runtime setting {key!r} needs a description")
    setting = RuntimeSetting(key=key, adapter=TypeAdapter(type_), description=text,
                             env_field=key if env is not None else None, fallback=fallback)
    _REGISTRY[key] = setting
    return setting


def lookup(key: str) -> RuntimeSetting:
    try:
        return _REGISTRY[key]
    except KeyError:
        raise NotFound(f"no runtime setting {key!r}; GET /api/v1/admin/settings lists them",
                       extra={"setting": key}) from None


def known() -> list[RuntimeSetting]:
    """Every declared setting, by key."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]

"""How JSON and JSONB values are written: ids, amounts and timestamps a service passes as
they are become the strings JSON carries them in (``json.dumps`` alone raised, and the
request answered 500).  The engines' ``json_serializer`` and the driver dialect of
``roost.db.transaction`` both use it."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


json_dumps = functools.partial(json.dumps, default=_json_value)

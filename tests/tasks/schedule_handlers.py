"""A one-second schedule, imported only by the workers of the schedule test."""

from __future__ import annotations

from datetime import timedelta

from roost.tasks.schedules import register_schedule
from tests.tasks import handlers  # noqa: F401  (registers test.record)

register_schedule("test.every_second", "test.record", every=timedelta(seconds=1),
                  payload={"label": "tick"})

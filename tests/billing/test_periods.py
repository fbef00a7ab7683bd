"""Monthly periods keep their day: a subscription started on the 31st renews on the last
day of short months and on the 31st again after them (no drift to the 28th)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from roost.billing.models import Subscription
from roost.billing.renewals import anchor_day, period_step


def test_a_month_end_subscription_does_not_drift() -> None:
    start = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    sub = Subscription(id=uuid.uuid4(), current_period_start=start, created_at=start)
    ends = []
    for _ in range(4):
        end = sub.current_period_start + period_step("month", anchor_day(sub))
        ends.append(end.date().isoformat())
        sub.current_period_start = end
    assert ends == ["2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]
    assert end.hour == 9 and end.minute == 30


def test_a_leap_day_yearly_subscription_comes_back_to_the_29th() -> None:
    start = datetime(2028, 2, 29, tzinfo=UTC)
    sub = Subscription(id=uuid.uuid4(), current_period_start=start, created_at=start)
    ends = []
    for _ in range(4):
        end = sub.current_period_start + period_step("year", anchor_day(sub))
        ends.append(end.date().isoformat())
        sub.current_period_start = end
    assert ends == ["2029-02-28", "2030-02-28", "2031-02-28", "2032-02-29"]

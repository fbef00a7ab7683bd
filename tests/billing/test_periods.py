"""Periods keep their day: a subscription started on the 31st renews on the last day of
short months and on the 31st again after them (no drift to the 28th), a leap day's
yearly one comes back to the 29th, and periods a resume restarted keep the resume's day."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from roost.billing.models import Subscription
from roost.billing.subscriptions import anchor_day, period_end, period_step


def _ends(start: datetime, billing_period: str, count: int,
          created: datetime | None = None) -> list[str]:
    """The ends of ``count`` periods from ``start`` (the first as subscribing or a resume
    computes it, the others as renewal does)."""
    sub = Subscription(id=uuid.uuid4(), current_period_start=start,
                       current_period_end=period_end(start, billing_period),
                       created_at=created or start)
    ends = [sub.current_period_end]
    for _ in range(count - 1):
        end = sub.current_period_end + period_step(billing_period, anchor_day(sub))
        sub.current_period_start, sub.current_period_end = sub.current_period_end, end
        ends.append(end)
    return [end.date().isoformat() for end in ends]


def test_a_month_end_subscription_does_not_drift() -> None:
    start = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    assert _ends(start, "month", 5) == ["2027-02-28", "2027-03-31", "2027-04-30",
                                        "2027-05-31", "2027-06-30"]
    assert period_end(start, "month").hour == 9


def test_a_leap_day_yearly_subscription_comes_back_to_the_29th() -> None:
    assert _ends(datetime(2028, 2, 29, tzinfo=UTC), "year", 4) == [
        "2029-02-28", "2030-02-28", "2031-02-28", "2032-02-29"]


def test_periods_a_resume_restarted_keep_its_day_not_the_creation_s() -> None:
    """Created on the 5th, resumed on 31 March: the 31st (it drifted to the 30th after
    30 June, falling back to the creation's day); created on the 31st, resumed on
    28 February: the 28th (it went back to the 31st, a 33-day period)."""
    assert _ends(datetime(2027, 3, 31, 12, tzinfo=UTC), "month", 6,
                 created=datetime(2027, 1, 5, tzinfo=UTC)) == [
        "2027-04-30", "2027-05-31", "2027-06-30", "2027-07-31", "2027-08-31", "2027-09-30"]
    assert _ends(datetime(2027, 2, 28, 12, tzinfo=UTC), "month", 3,
                 created=datetime(2026, 12, 31, tzinfo=UTC)) == [
        "2027-03-28", "2027-04-28", "2027-05-28"]

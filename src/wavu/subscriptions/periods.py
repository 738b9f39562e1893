"""Service periods: when a prepaid service expires and when a postpaid one is next billed.

Pure date arithmetic on the ISP's local calendar (Africa/Nairobi by default); no database.
"""

from __future__ import annotations

import calendar
import datetime as dt

from dateutil.relativedelta import relativedelta

from wavu.catalog.models import Plan
from wavu.catalog.selectors import plan_validity_end
from wavu.core import clock


def anchor_date(year: int, month: int, anchor_day: int) -> dt.date:
    """The billing day of a month: `anchor_day`, or the month's last day when it is shorter
    (anchor 31 → 30 April, 28 or 29 February)."""
    return dt.date(year, month, min(anchor_day, calendar.monthrange(year, month)[1]))


def next_billing_date(after: dt.datetime, anchor_day: int, months: int = 1) -> dt.datetime:
    """The start (local midnight) of the first billing day after the local date of `after`.

    Starting on the billing day itself gives a full period of `months` calendar months; starting
    between billing days gives a shorter first period that ends on the next billing day, so every
    later period starts on the anchor day.
    """
    if not 1 <= anchor_day <= 31:
        raise ValueError(f"billing anchor day must be 1–31, not {anchor_day}")
    day = clock.local(after).date() if after.tzinfo else after.date()
    this_month = anchor_date(day.year, day.month, anchor_day)
    if this_month > day:
        return clock.start_of_day(this_month)
    following = dt.date(day.year, day.month, 1) + relativedelta(months=months)
    if this_month < day:
        following = dt.date(day.year, day.month, 1) + relativedelta(months=1)
    return clock.start_of_day(anchor_date(following.year, following.month, anchor_day))


def period_for(plan: Plan, start: dt.datetime, anchor_day: int | None) -> tuple[dt.datetime, dt.datetime]:
    """(period start, period end) of a service of `plan` starting at `start`.

    Prepaid and hotspot: the end is the expiry, start + the plan's validity. Postpaid: the end is
    the next billing date for `anchor_day` (default: the local day of `start`).
    """
    if plan.kind == Plan.Kind.POSTPAID:
        anchor = anchor_day or clock.local(start).day
        return start, next_billing_date(start, anchor, plan.validity_count)
    return start, plan_validity_end(plan, start)

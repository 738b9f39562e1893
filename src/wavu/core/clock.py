"""The one clock. Code asks `clock.now()`/`clock.today()`; tests move time with time-machine.

Timestamps are stored in UTC; `today()` is the ISP's local date (Africa/Nairobi by default),
because billing days are local days.
"""

import datetime as dt

from django.utils import timezone


def now() -> dt.datetime:
    return timezone.now()


def today() -> dt.date:
    return timezone.localdate(now())


def local(value: dt.datetime) -> dt.datetime:
    return timezone.localtime(value)


def start_of_day(day: dt.date) -> dt.datetime:
    """Midnight at the start of `day` in the ISP's time zone, as an aware datetime."""
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))

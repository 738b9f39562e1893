"""A model field for FreeRADIUS's accounting timestamps, which the stock queries store differently per database."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime


class RadiusTimestampField(models.DateTimeField):
    """A timestamp column written by FreeRADIUS's stock queries (`radacct` start/update/stop times,
    `nasreload.reloadtime`).

    PostgreSQL: `timestamp with time zone`, as the stock schema declares it and the stock queries
    fill it (`TO_TIMESTAMP(epoch)`). SQLite: an integer column (the stock schema declares `datetime`,
    which Python's sqlite3 would convert on reading), because the stock queries store Unix seconds
    (`event_timestamp = epoch`) and compare and subtract them as numbers; this field writes whole
    seconds and reads seconds (or, from a hand-made row, an ISO text) back as an aware UTC datetime.
    Python code sees aware datetimes on both.
    """

    def get_internal_type(self):
        # Not "DateTimeField": SQLite's converter for that type would try to parse the integers.
        return "RadiusTimestampField"

    def db_type(self, connection):
        # SQLite: "integer", not the stock schema's "datetime": Python's sqlite3 would hand the
        # seconds to Django's datetime converter, which reads them as None. FreeRADIUS's queries do
        # not care about the declared type.
        return "integer" if connection.vendor == "sqlite" else "timestamp with time zone"

    def rel_db_type(self, connection):
        return self.db_type(connection)

    def get_db_prep_value(self, value, connection, prepared=False):
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        if connection.vendor == "sqlite":
            return int(value.timestamp())
        return connection.ops.adapt_datetimefield_value(value)

    def from_db_value(self, value, expression, connection):
        return to_datetime(value)


def to_datetime(value) -> dt.datetime | None:
    """An aware datetime from what a RADIUS timestamp column holds: a datetime, Unix seconds (int,
    float or digits) or an ISO text (naive = UTC); None for NULL or an empty string."""
    if value is None or isinstance(value, dt.datetime):
        return value
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(int(value), tz=dt.UTC)
    text = str(value).strip()
    if not text:
        return None
    if text.lstrip("-").isdigit():
        return dt.datetime.fromtimestamp(int(text), tz=dt.UTC)
    parsed = parse_datetime(text)
    if parsed is None:
        raise ValueError(f"{value!r} is not a RADIUS timestamp")
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=dt.UTC)

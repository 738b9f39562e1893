"""RADIUS accounting timestamps read back as the moment FreeRADIUS wrote, on SQLite (Unix seconds)
and PostgreSQL (timestamp with time zone) alike."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from wavu.network.models import RadAcct

pytestmark = pytest.mark.django_db

START = dt.datetime(2026, 11, 25, 6, 30, 15, tzinfo=dt.UTC)


def test_a_session_start_written_as_freeradius_writes_it_reads_back_as_the_same_moment():
    with connection.cursor() as cursor:
        started = "%s" if connection.vendor == "sqlite" else "TO_TIMESTAMP(%s)"
        cursor.execute(
            f"INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, "
            f"acctupdatetime) VALUES ('81a00001', 'u-1', 'amani', '10.0.0.1', {started}, {started})",
            [int(START.timestamp()), int(START.timestamp()) + 300],
        )

    session = RadAcct.objects.get(acctuniqueid="u-1")

    assert session.acctstarttime == START
    assert session.acctupdatetime == START + dt.timedelta(minutes=5)
    assert session.acctstoptime is None
    assert RadAcct.objects.filter(acctstarttime__lt=START + dt.timedelta(seconds=1)).count() == 1

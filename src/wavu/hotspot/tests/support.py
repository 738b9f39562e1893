"""Shared set-up for the voucher tests: a hotspot plan that starts at first login, radacct rows."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from wavu.catalog.models import Plan
from wavu.network.models import RadAcct, RadCheck, RadReply
from wavu.testing.factories import PlanFactory

_sessions = itertools.count(1)


def hotspot_plan(**changes) -> Plan:
    fields = {
        "name": "3 Hours Unlimited",
        "kind": Plan.Kind.HOTSPOT,
        "technology": Plan.Technology.HOTSPOT,
        "validity_unit": Plan.ValidityUnit.HOUR,
        "validity_count": 3,
        "download_kbps": 5_000,
        "upload_kbps": 2_000,
        "devices_allowed": 1,
        "hotspot_starts": Plan.HotspotStart.FIRST_LOGIN,
        "with_price": Decimal("50.00"),
    }
    fields.update(changes)
    return PlanFactory(**fields)


def session_start(username: str, at: dt.datetime, mac: str = "AA:BB:CC:00:11:22") -> RadAcct:
    """A radacct row as FreeRADIUS's stock accounting-start query leaves it."""
    n = next(_sessions)
    return RadAcct.objects.create(
        acctsessionid=f"8100{n:04x}",
        acctuniqueid=f"uniq-{n:08d}",
        username=username,
        nasipaddress="10.20.0.1",
        acctstarttime=at,
        acctupdatetime=at,
        callingstationid=mac,
    )


def check_rows(username: str) -> list[tuple[str, str, str]]:
    return sorted(RadCheck.objects.filter(username=username).values_list("attribute", "op", "value"))


def reply_rows(username: str) -> dict[str, str]:
    return dict(RadReply.objects.filter(username=username).values_list("attribute", "value"))

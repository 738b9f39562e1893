"""End to end against a real FreeRADIUS 3.2: a router's Accounting Start, Interim-Updates (with
Gigawords) and Stop, sent with pyrad to FreeRADIUS running the generated configuration, land in
radacct through the stock queries and become the right usage in Wavu; the quota crossed sends the
live session a CoA with the fair-usage rate, to a test router listening for it.

SQLite: FreeRADIUS writes radacct in a file copy of the in-memory test database
(`support.radius_database`); `pull_radacct` brings its rows back before Wavu reads them.
"""

from __future__ import annotations

import contextlib
import sqlite3

import pytest
from django.db import connection

from wavu.catalog.models import Plan
from wavu.network import services as network
from wavu.network import usage
from wavu.network.models import CoaAttempt, RadAcct
from wavu.network.selectors import period_usage
from wavu.subscriptions import services as subs
from wavu.testing.factories import CustomerFactory, PlanFactory
from wavu.testing.tasks import run_queued_tasks

from .coa_listener import listening_nas
from .support import NAS_SECRET, radius_database, require_freeradius, running_freeradius

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.wall_clock]  # FreeRADIUS reads the real clock

MIB = 1024 * 1024
GIGAWORD = 2**32


@pytest.fixture(autouse=True)
def freeradius_installed():
    require_freeradius()


def pull_radacct(database: dict) -> None:
    """SQLite only: copy the radacct rows FreeRADIUS wrote in its file into the test database."""
    if connection.vendor != "sqlite":
        return
    with contextlib.closing(sqlite3.connect(database["NAME"])) as db:
        cursor = db.execute("SELECT * FROM radacct")
        columns = [c[0] for c in cursor.description]
        rows = cursor.fetchall()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM radacct")
        marks = ", ".join(["%s"] * len(columns))
        cursor.executemany(f"INSERT INTO radacct ({', '.join(columns)}) VALUES ({marks})", rows)


def account(radius, status: str, username: str, session_id: str, **counters):
    """One Accounting-Request as a MikroTik PPPoE server sends it."""
    client = radius.client()
    request = client.CreateAcctPacket(User_Name=username)
    request["Acct-Status-Type"] = status
    request["NAS-IP-Address"] = "127.0.0.1"
    request["NAS-Identifier"] = "wavu-test-nas"
    request["NAS-Port"] = 15728640
    request["Acct-Session-Id"] = session_id
    request["Framed-IP-Address"] = "10.64.0.9"
    for name, value in counters.items():
        request[name.replace("_", "-")] = value
    reply = client.SendPacket(request)
    assert reply.code == 5, radius.log_tail()  # Accounting-Response: FreeRADIUS stored it


def counters(upload: int, download: int, seconds: int) -> dict:
    return {
        "Acct_Input_Octets": upload % GIGAWORD, "Acct_Input_Gigawords": upload // GIGAWORD,
        "Acct_Output_Octets": download % GIGAWORD, "Acct_Output_Gigawords": download // GIGAWORD,
        "Acct_Session_Time": seconds,
    }  # fmt: skip


def test_accounting_through_freeradius_becomes_usage_and_the_quota_crossed_throttles_the_live_session(tmp_path):
    plan = PlanFactory(
        name="Home 5 GB",
        kind=Plan.Kind.PREPAID,
        validity_unit=Plan.ValidityUnit.DAY,
        validity_count=30,
        download_kbps=10_000,
        upload_kbps=5_000,
        data_quota_mb=5_120,
        quota_action=Plan.QuotaAction.THROTTLE,
        fup_download_kbps=1_000,
        fup_upload_kbps=512,
    )
    sub = subs.create_subscription(CustomerFactory(), plan, username="wanjiru")
    subs.activate(sub)
    with listening_nas(NAS_SECRET) as router:
        network.create_nas(address="127.0.0.1", shortname="test-nas", secret=NAS_SECRET, type="mikrotik",
                           coa_port=router.port)  # fmt: skip
        run_queued_tasks()
        database = radius_database(tmp_path)
        with running_freeradius(tmp_path, database=database) as radius:
            account(radius, "Start", "wanjiru", "81a00012")
            account(radius, "Interim-Update", "wanjiru", "81a00012", **counters(10 * MIB, 3 * GIGAWORD + 5, 300))
            account(radius, "Interim-Update", "wanjiru", "81a00012", **counters(10 * MIB, 3 * GIGAWORD + 5, 300))
            pull_radacct(database)
            usage.ingest()
            assert period_usage([sub.pk], sub.current_period_start)[sub.pk].data_bytes == 3 * GIGAWORD + 5 + 10 * MIB
            assert router.received == []  # 60 %: nothing to change

            # Past 5 GiB, with the Gigawords: the quota is used up, the live session gets the FUP rate.
            account(radius, "Interim-Update", "wanjiru", "81a00012", **counters(20 * MIB, 5 * GIGAWORD + 7, 600))
            pull_radacct(database)
            usage.ingest()
            run_queued_tasks()  # the sync (drain), then the CoA job queued on its commit
            [request] = router.received
            assert request.code == 43 and request.authentic
            assert request.attributes["Mikrotik-Rate-Limit"] == "512k/1M"
            assert (request.attributes["User-Name"], request.attributes["Acct-Session-Id"]) == ("wanjiru", "81a00012")
            assert CoaAttempt.objects.get().result == "ack"

            account(radius, "Stop", "wanjiru", "81a00012", Acct_Terminate_Cause="User-Request",
                    **counters(21 * MIB, 5 * GIGAWORD + 9, 660))  # fmt: skip
            # A second session, then the router reboots: Accounting-On closes it (FreeRADIUS's stock query).
            account(radius, "Start", "wanjiru", "81a00013")
            account(radius, "Interim-Update", "wanjiru", "81a00013", **counters(MIB, MIB, 60))
            account(radius, "Accounting-On", "wanjiru", "0")
            pull_radacct(database)

    usage.ingest()
    used = period_usage([sub.pk], sub.current_period_start)[sub.pk]
    assert used.data_bytes == 5 * GIGAWORD + 9 + 21 * MIB + 2 * MIB
    rebooted = RadAcct.objects.get(acctsessionid="81a00013")
    # PostgreSQL's stock query names the cause NAS-Reboot; SQLite's copies the (absent) Acct-Terminate-Cause.
    assert rebooted.acctterminatecause == ("NAS-Reboot" if connection.vendor == "postgresql" else "")
    # The stock Accounting-On query recomputes the session time from the start (seconds here).
    assert used.seconds == 660 + rebooted.acctsessiontime
    assert not RadAcct.objects.filter(acctstoptime__isnull=True).exists()

"""End to end against a real FreeRADIUS 3.2: services go through their lifecycle in Wavu, the worker
writes their RADIUS rows, `wavu radius-config` generates the server's configuration, and FreeRADIUS,
started on it against the test database, answers Access-Requests (PAP and CHAP, as a MikroTik
router sends them) the way the projection says.

PostgreSQL runs use the test database itself. SQLite runs: pytest-django keeps the SQLite test
database in memory, which FreeRADIUS (another process) cannot open, so FreeRADIUS reads a file copy
made with SQLite's online backup after the rows are written (`support.radius_database`).
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from wavu.catalog.models import Plan
from wavu.network import services as network
from wavu.network.fields import to_datetime
from wavu.network.models import RadAcct
from wavu.network.projection import RadiusPolicy
from wavu.network.selectors import radius_policy
from wavu.subscriptions import services as subs
from wavu.testing.factories import CustomerFactory, PlanFactory
from wavu.testing.tasks import run_queued_tasks

from .support import (
    NAS_SECRET,
    copy_sqlite_test_database,
    fetch,
    radius_database,
    require_freeradius,
    running_freeradius,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.wall_clock]  # FreeRADIUS reads the real clock

METHODS = ("pap", "chap")


@pytest.fixture(autouse=True)
def freeradius_installed():
    require_freeradius()


@pytest.fixture
def router():
    return network.create_nas(address="127.0.0.1", shortname="test-nas", secret=NAS_SECRET, type="mikrotik")


def prepaid(**fields) -> Plan:
    defaults = {
        "name": "Home 10 Mbps (30 days)",
        "kind": Plan.Kind.PREPAID,
        "validity_unit": Plan.ValidityUnit.DAY,
        "validity_count": 30,
        "download_kbps": 10_000,
        "upload_kbps": 5_000,
        "data_quota_mb": 10_240,
        "quota_action": Plan.QuotaAction.BLOCK,
    }
    return PlanFactory(**{**defaults, **fields})


def postpaid() -> Plan:
    return PlanFactory(name="Home Fibre 20 Mbps", kind=Plan.Kind.POSTPAID, download_kbps=20_000, upload_kbps=10_000)


def service(plan: Plan, *, username: str, **kwargs):
    sub = subs.create_subscription(CustomerFactory(), plan, username=username, **kwargs)
    subs.activate(sub)
    return sub


@pytest.fixture
def isp(router):
    """One service in every state, their rows written by the worker after each lifecycle change."""
    people = {
        "amani": service(prepaid(), username="amani"),
        "baraka": service(postpaid(), username="baraka", static_ip="197.248.10.7"),
        "chebet": service(prepaid(name="Daily"), username="chebet"),
        "dalmas": service(postpaid(), username="dalmas"),
        "esther": service(postpaid(), username="esther"),
        "faith": service(prepaid(name="Short"), username="faith"),
    }
    subs.expire(people["chebet"], reason="period over")
    subs.suspend(people["dalmas"], reason="overdue invoice")
    subs.cancel(people["esther"], reason="moved to Mombasa")
    subs.renew_period(people["faith"], timezone.now() - dt.timedelta(days=29), timezone.now() + dt.timedelta(hours=1))
    assert run_queued_tasks() == len(people)  # each service's lifecycle events left one sync request
    return people


def test_each_service_gets_the_answer_its_state_calls_for_by_pap_and_by_chap(tmp_path, isp):
    database = radius_database(tmp_path)
    with running_freeradius(tmp_path, database=database) as radius:
        for method in METHODS:
            amani = radius.authenticate("amani", isp["amani"].password, method=method)
            assert amani.accepted, radius.log_tail()
            assert amani["Mikrotik-Rate-Limit"] == "5M/10M"  # upload/download, the router's rx/tx
            assert (amani["Mikrotik-Total-Limit-Gigawords"], amani["Mikrotik-Total-Limit"]) == (2, 2 * 1024**3)
            assert amani["Acct-Interim-Interval"] == 300 and amani["Session-Timeout"] == 86400
            assert "Mikrotik-Address-List" not in amani.attributes

            baraka = radius.authenticate("baraka", isp["baraka"].password, method=method)
            assert baraka.accepted and baraka["Framed-IP-Address"] == "197.248.10.7"
            assert baraka["Mikrotik-Rate-Limit"] == "10M/20M" and "Mikrotik-Total-Limit" not in baraka.attributes

            for lapsed in ("chebet", "dalmas"):  # expired, suspended: into the walled garden
                reply = radius.authenticate(lapsed, isp[lapsed].password, method=method)
                assert reply.accepted, (lapsed, radius.log_tail())
                assert reply["Mikrotik-Address-List"] == "wavu-unpaid"
                assert reply["Mikrotik-Rate-Limit"] == "256k/256k" and reply["Session-Timeout"] == 900

            assert radius.authenticate("esther", isp["esther"].password, method=method).rejected  # cancelled
            assert radius.authenticate("nobody", "guess-me-123", method=method).rejected  # unknown
            assert radius.authenticate("amani", "not-the-password", method=method).rejected

    stamps = [to_datetime(row[0]) for row in fetch(database, "SELECT authdate FROM radpostauth")]
    assert stamps and all(abs((stamp - timezone.now()).total_seconds()) < 120 for stamp in stamps)  # UTC, not EAT
    answers = fetch(database, "SELECT username, reply, pass FROM radpostauth")
    assert answers.count(("amani", "Access-Accept", "")) == 1  # PAP: logged without the password
    assert sum(1 for name, reply, _ in answers if (name, reply) == ("amani", "Access-Accept")) == 2
    assert not [row for row in answers if "not-the-password" in (row[2] or "")]


def test_a_session_never_outlives_the_prepaid_expiry(tmp_path, isp):
    expiry = isp["faith"].current_period_end
    with running_freeradius(tmp_path, database=radius_database(tmp_path)) as radius:
        asked = timezone.now()
        reply = radius.authenticate("faith", isp["faith"].password)

    assert reply.accepted
    # About an hour: never past the expiry (FreeRADIUS counts whole seconds from the moment it answers).
    assert (expiry - asked).total_seconds() - 60 <= reply["Session-Timeout"] <= (expiry - asked).total_seconds() + 1


def test_an_isp_that_rejects_lapsed_customers_gets_rejects_with_a_reason(tmp_path, isp, settings):
    settings.WAVU = {**settings.WAVU, "RADIUS_LAPSED_ACCESS": "reject"}
    from wavu.network import writer

    writer.sync_subscriptions([isp["chebet"].pk, isp["dalmas"].pk])
    assert radius_policy().lapsed_access == "reject"

    with running_freeradius(tmp_path, database=radius_database(tmp_path), policy=radius_policy()) as radius:
        for method in METHODS:
            expired = radius.authenticate("chebet", isp["chebet"].password, method=method)
            suspended = radius.authenticate("dalmas", isp["dalmas"].password, method=method)
            assert expired.rejected and expired["Reply-Message"] == "Subscription expired: pay to reconnect"
            assert suspended.rejected and suspended["Reply-Message"] == "Service suspended: pay to reconnect"
            assert radius.authenticate("amani", isp["amani"].password, method=method).accepted


def test_a_customer_already_online_on_their_only_device_is_refused_a_second_session(tmp_path, isp):
    RadAcct.objects.create(
        acctsessionid="81a00012",
        acctuniqueid="amani-session-1",
        username="amani",
        nasipaddress="127.0.0.1",
        acctstarttime=timezone.now() - dt.timedelta(minutes=5),
        framedipaddress="10.64.0.9",
    )
    database = radius_database(tmp_path)
    with running_freeradius(tmp_path, database=database) as radius:
        assert radius.authenticate("amani", isp["amani"].password).rejected, radius.log_tail()

        RadAcct.objects.filter(acctuniqueid="amani-session-1").update(acctstoptime=timezone.now())
        copy_sqlite_test_database(database["NAME"])
        assert radius.authenticate("amani", isp["amani"].password).accepted


def test_requests_without_message_authenticator_or_from_unknown_routers_get_no_access(tmp_path, isp):
    from pyrad.client import Timeout

    with running_freeradius(tmp_path, database=radius_database(tmp_path)) as radius:
        bare = radius.authenticate("amani", isp["amani"].password, message_authenticator=False)
        assert bare.rejected  # Blast-RADIUS: no Message-Authenticator, no Accept

        with pytest.raises(Timeout):  # a wrong secret: FreeRADIUS drops the packet
            radius.authenticate("amani", isp["amani"].password, secret="not-the-router-secret-000", timeout=1)


def test_a_disabled_router_is_not_a_client_of_freeradius(tmp_path, isp, router):
    from pyrad.client import Timeout

    network.update_nas(router, enabled=False)

    with running_freeradius(tmp_path, database=radius_database(tmp_path)) as radius, pytest.raises(Timeout):
        radius.authenticate("amani", isp["amani"].password, timeout=1)


def test_the_walled_garden_group_follows_the_isps_settings(tmp_path, isp, settings):
    settings.WAVU = {**settings.WAVU, "RADIUS_WALLED_GARDEN_RATE_LIMIT": "128k/512k",
                     "RADIUS_WALLED_GARDEN_ADDRESS_LIST": "deni"}  # fmt: skip
    from wavu.network import writer

    writer.ensure_groups()

    with running_freeradius(tmp_path, database=radius_database(tmp_path), policy=RadiusPolicy()) as radius:
        reply = radius.authenticate("dalmas", isp["dalmas"].password, method="chap")

    assert reply.accepted and reply["Mikrotik-Address-List"] == "deni" and reply["Mikrotik-Rate-Limit"] == "128k/512k"

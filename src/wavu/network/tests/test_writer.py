"""The writer: RADIUS rows follow every lifecycle change after commit, change only where they differ,
and the periodic reconciliation repairs and reports drift."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from wavu.catalog.models import AddOn, Plan
from wavu.network import writer
from wavu.network.models import (
    RadCheck,
    RadGroupReply,
    RadiusAccount,
    RadiusSyncRequest,
    RadReply,
    RadUserGroup,
    Reconciliation,
)
from wavu.subscriptions import services as subs
from wavu.testing.factories import AddOnFactory, CustomerFactory, PlanFactory, SubscriptionFactory
from wavu.testing.tasks import run_queued_tasks

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


def rows_of(username: str) -> dict:
    """{table: sorted (attribute, op, value) or (group, priority)} of one user name."""
    return {
        "check": sorted(RadCheck.objects.filter(username=username).values_list("attribute", "op", "value")),
        "reply": sorted(RadReply.objects.filter(username=username).values_list("attribute", "op", "value")),
        "groups": sorted(RadUserGroup.objects.filter(username=username).values_list("groupname", "priority")),
    }


def reply_of(username: str) -> dict:
    return dict(RadReply.objects.filter(username=username).values_list("attribute", "value"))


def ids_of(username: str) -> set:
    return set(RadCheck.objects.filter(username=username).values_list("id", flat=True)) | {
        -pk for pk in RadReply.objects.filter(username=username).values_list("id", flat=True)
    }


@pytest.fixture
def prepaid_plan():
    return PlanFactory(
        name="Home 10 Mbps prepaid",
        kind=Plan.Kind.PREPAID,
        validity_unit=Plan.ValidityUnit.DAY,
        validity_count=30,
        download_kbps=10_000,
        upload_kbps=5_000,
        data_quota_mb=10_240,
        quota_action=Plan.QuotaAction.BLOCK,
    )


@pytest.fixture
def postpaid_plan():
    return PlanFactory(name="Home Fibre 20 Mbps", kind=Plan.Kind.POSTPAID, download_kbps=20_000, upload_kbps=10_000)


def live_service(plan, **kwargs):
    sub = subs.create_subscription(CustomerFactory(), plan, **kwargs)
    subs.activate(sub)
    return sub


def test_an_active_service_gets_its_rows_and_a_second_sync_changes_nothing(prepaid_plan):
    sub = live_service(prepaid_plan)

    first = writer.sync_subscriptions([sub.pk])
    before = ids_of(sub.username)
    second = writer.sync_subscriptions([sub.pk])

    assert first.users_changed == [sub.username] and first.outcomes == {"accept": 1}
    check = dict((a, v) for a, _, v in rows_of(sub.username)["check"])
    assert check["Cleartext-Password"] == sub.password and check["Simultaneous-Use"] == "1"
    assert check["Expiration"] == str(int(sub.current_period_end.timestamp()))
    assert reply_of(sub.username)["Mikrotik-Rate-Limit"] == "5M/10M"
    assert (
        reply_of(sub.username)["Mikrotik-Total-Limit-Gigawords"],
        reply_of(sub.username)["Mikrotik-Total-Limit"],
    ) == (
        "2",
        str(2 * 1024**3),
    )  # 10,240 MB = 10 GiB = 2 × 4 GiB + 2 GiB
    assert second.users_changed == [] and not second.rows_added and not second.rows_removed
    assert ids_of(sub.username) == before  # nothing rewritten
    assert RadiusAccount.objects.get(subscription=sub).username == sub.username


def test_a_suspension_reaches_radius_through_the_sync_request_its_lifecycle_event_left(postpaid_plan):
    sub = live_service(postpaid_plan)
    assert RadiusSyncRequest.objects.filter(subscription=sub).count() == 1  # created, then activated: one request
    assert run_queued_tasks() == 1  # the worker's drain
    assert reply_of(sub.username)["Mikrotik-Rate-Limit"] == "10M/20M"
    assert not RadiusSyncRequest.objects.exists()

    subs.suspend(sub, reason="overdue")
    assert RadiusSyncRequest.objects.filter(subscription=sub).exists()
    assert reply_of(sub.username)["Mikrotik-Rate-Limit"] == "10M/20M"  # not before a worker drains it
    assert run_queued_tasks() == 1

    assert rows_of(sub.username)["groups"] == [("wavu-walled-garden", 0)]
    assert "Mikrotik-Rate-Limit" not in reply_of(sub.username)
    garden = dict(RadGroupReply.objects.filter(groupname="wavu-walled-garden").values_list("attribute", "value"))
    assert garden == {"Mikrotik-Address-List": "wavu-unpaid", "Mikrotik-Rate-Limit": "256k/256k",
                      "Session-Timeout": "900"}  # fmt: skip

    subs.resume(sub, reason="paid")
    run_queued_tasks()
    assert rows_of(sub.username)["groups"] == [] and reply_of(sub.username)["Mikrotik-Rate-Limit"] == "10M/20M"


def test_a_lifecycle_change_that_rolls_back_leaves_no_sync_request(postpaid_plan):
    sub = live_service(postpaid_plan)
    run_queued_tasks()

    with pytest.raises(RuntimeError), transaction.atomic():
        subs.suspend(sub, reason="overdue")
        raise RuntimeError("the caller failed after suspending")

    assert not RadiusSyncRequest.objects.exists()
    assert run_queued_tasks() == 0


def test_a_plan_change_rewrites_only_the_rows_that_differ(postpaid_plan):
    faster = PlanFactory(name="Home Fibre 50 Mbps", kind=Plan.Kind.POSTPAID, download_kbps=50_000, upload_kbps=25_000)
    sub = live_service(postpaid_plan)
    writer.sync_subscriptions([sub.pk])
    password_row = RadCheck.objects.get(username=sub.username, attribute="Cleartext-Password").pk

    subs.change_plan(sub, faster, reason="upgrade")
    report = writer.sync_subscriptions([sub.pk])

    assert reply_of(sub.username)["Mikrotik-Rate-Limit"] == "25M/50M"
    assert dict(report.rows_removed) == {"radreply": 1} and dict(report.rows_added) == {"radreply": 1}
    assert RadCheck.objects.get(username=sub.username, attribute="Cleartext-Password").pk == password_row


def test_a_new_username_takes_the_rows_and_the_old_one_loses_them_at_once(postpaid_plan):
    sub = live_service(postpaid_plan)
    writer.sync_subscriptions([sub.pk])
    old = sub.username

    subs.change_credentials(sub, username="wanjiku-home", reason="customer asked")
    writer.sync_subscriptions([sub.pk])

    assert rows_of(old) == {"check": [], "reply": [], "groups": []}
    assert rows_of("wanjiku-home")["check"] and RadiusAccount.objects.get(subscription=sub).username == "wanjiku-home"


def test_a_regenerated_password_replaces_the_old_one(postpaid_plan):
    sub = live_service(postpaid_plan)
    writer.sync_subscriptions([sub.pk])

    subs.change_credentials(sub, regenerate_password=True)
    writer.sync_subscriptions([sub.pk])

    passwords = RadCheck.objects.filter(username=sub.username, attribute="Cleartext-Password")
    assert list(passwords.values_list("value", flat=True)) == [sub.password]


def test_a_cancelled_service_loses_every_row(prepaid_plan):
    sub = live_service(prepaid_plan, static_ip="197.248.4.4")
    writer.sync_subscriptions([sub.pk])

    subs.cancel(sub, reason="moved away")
    report = writer.sync_subscriptions([sub.pk])

    assert rows_of(sub.username) == {"check": [], "reply": [], "groups": []}
    assert report.outcomes == {"absent": 1}


def test_data_bundles_add_to_the_quota_left(prepaid_plan):
    bundle = AddOnFactory(
        name="1 GB bundle",
        category=AddOn.Category.DATA_BUNDLE,
        billing=AddOn.Billing.ONE_OFF,
        data_quota_mb=1_024,
        with_price=Decimal("500.00"),
    )
    sub = live_service(prepaid_plan)
    subs.add_addon(sub, bundle, quantity=3)

    writer.sync_subscriptions([sub.pk])

    reply = reply_of(sub.username)
    total = int(reply["Mikrotik-Total-Limit-Gigawords"]) * 2**32 + int(reply["Mikrotik-Total-Limit"])
    assert total == (10_240 + 3 * 1_024) * MIB


def test_an_isp_without_walled_garden_rejects_expired_services(prepaid_plan, settings):
    settings.WAVU = {**settings.WAVU, "RADIUS_LAPSED_ACCESS": "reject"}
    sub = live_service(prepaid_plan)
    subs.expire(sub, reason="period over")

    writer.sync_subscriptions([sub.pk])

    assert rows_of(sub.username)["check"] == [("Auth-Type", ":=", "Reject")]
    assert reply_of(sub.username) == {"Reply-Message": "Subscription expired: pay to reconnect"}
    assert not RadUserGroup.objects.exists()


def test_syncing_sixty_services_costs_the_same_queries_as_syncing_two(prepaid_plan, postpaid_plan):
    writer.ensure_groups()

    def cost(count: int) -> int:
        services = [live_service(prepaid_plan if n % 2 else postpaid_plan) for n in range(count)]
        subs.suspend(services[0], reason="overdue")  # one walled-garden user in each batch
        with CaptureQueriesContext(connection) as queries:
            report = writer.sync_subscriptions([s.pk for s in services])
        assert report.services == count and len(report.users_changed) == count
        return len(queries)

    # (SQLite splits an INSERT past 999 parameters, about 249 rows: sixty services stay below that.)
    assert cost(2) == cost(60)


def test_reconciliation_repairs_hand_edits_and_reports_exactly_who_drifted(prepaid_plan, postpaid_plan):
    edited, untouched = live_service(prepaid_plan), live_service(postpaid_plan)
    writer.sync_subscriptions([edited.pk, untouched.pk])
    writer.ensure_groups()
    untouched_ids = ids_of(untouched.username)
    RadReply.objects.filter(username=edited.username, attribute="Mikrotik-Rate-Limit").update(value="100M/100M")
    RadCheck.objects.filter(username=edited.username, attribute="Simultaneous-Use").delete()
    RadCheck.objects.create(username=edited.username, attribute="Cleartext-Password", op=":=", value=edited.password)
    RadReply.objects.create(username=edited.username, attribute="Framed-IP-Address", op=":=", value="10.9.9.9")

    record = writer.reconcile()

    assert reply_of(edited.username)["Mikrotik-Rate-Limit"] == "5M/10M"
    assert "Framed-IP-Address" not in reply_of(edited.username)
    assert RadCheck.objects.filter(username=edited.username, attribute="Cleartext-Password").count() == 1
    assert RadCheck.objects.filter(username=edited.username, attribute="Simultaneous-Use").count() == 1
    assert ids_of(untouched.username) == untouched_ids
    assert (record.services_checked, record.users_repaired, record.orphans_removed) == (2, 1, 0)
    assert (record.rows_added, record.rows_removed) == (2, 3)
    assert record.details["usernames"] == [edited.username] and record.drift_found
    assert record.finished_at is not None


def test_reconciliation_removes_orphans_and_names_them(postpaid_plan):
    kept = live_service(postpaid_plan)
    gone = live_service(postpaid_plan)
    writer.sync_subscriptions([kept.pk, gone.pk])
    gone.status = "cancelled"  # as if its sync had been lost
    gone.save(update_fields=["status"])
    RadCheck.objects.create(username="freeloader", attribute="Cleartext-Password", op=":=", value="x")
    RadUserGroup.objects.create(username="freeloader", groupname="vip", priority=1)

    record = writer.reconcile()

    assert sorted(record.details["orphan_usernames"]) == sorted(["freeloader", gone.username])
    assert record.orphans_removed == 2
    assert rows_of("freeloader") == rows_of(gone.username) == {"check": [], "reply": [], "groups": []}
    assert rows_of(kept.username)["check"]


def test_reconciliation_repairs_the_walled_garden_group(postpaid_plan):
    sub = live_service(postpaid_plan)
    subs.suspend(sub, reason="overdue")
    writer.sync_subscriptions([sub.pk])
    RadGroupReply.objects.filter(groupname="wavu-walled-garden", attribute="Mikrotik-Address-List").delete()

    record = writer.reconcile()

    assert record.details["groups_repaired"] == ["wavu-walled-garden"] and record.drift_found
    assert RadGroupReply.objects.filter(groupname="wavu-walled-garden", attribute="Mikrotik-Address-List").exists()


def test_reconciliation_with_nothing_to_repair_reports_no_drift(prepaid_plan):
    sub = live_service(prepaid_plan)
    writer.sync_subscriptions([sub.pk])
    writer.ensure_groups()

    record = writer.reconcile()

    assert not record.drift_found and record.services_checked == 1
    assert (record.users_repaired, record.rows_added, record.rows_removed) == (0, 0, 0)
    assert Reconciliation.objects.count() == 1


def test_the_reconciliation_job_is_scheduled_and_reports_drift():
    from wavu.network.tasks import reconcile_radius
    from wavu.schedule import SCHEDULE

    assert any(job.task == reconcile_radius.module_path for job in SCHEDULE)
    RadCheck.objects.create(username="freeloader", attribute="Cleartext-Password", op=":=", value="x")

    result = reconcile_radius.call()

    assert result["drift"] is True and result["orphan_usernames"] == ["freeloader"]


def test_an_active_prepaid_service_past_its_expiry_goes_to_the_walled_garden_before_the_expiry_job(prepaid_plan):
    start = timezone.now() - dt.timedelta(days=31)
    sub = subs.create_subscription(CustomerFactory(), prepaid_plan)
    subs.activate(sub, at=start)  # its 30 days ended yesterday; the expiry job has not run

    writer.sync_subscriptions([sub.pk])

    assert rows_of(sub.username)["groups"] == [("wavu-walled-garden", 0)]


def test_unknown_subscription_ids_are_ignored():
    report = writer.sync_subscriptions([987654])

    assert report.services == 0 and not RadCheck.objects.exists() and not RadiusAccount.objects.exists()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_syncs_of_one_service_side_by_side_write_its_rows_once():
    from wavu.testing.concurrency import side_by_side

    sub = SubscriptionFactory(plan=PlanFactory(kind=Plan.Kind.POSTPAID), status="active")

    results, errors = side_by_side(*[lambda: writer.sync_subscriptions([sub.pk])] * 4)

    assert errors == [] and len(results) == 4
    assert RadCheck.objects.filter(username=sub.username, attribute="Cleartext-Password").count() == 1
    assert RadReply.objects.filter(username=sub.username).count() == len(set(reply_of(sub.username)))

"""Usage ingestion and fair-usage quotas: radacct's cumulative counters become per-service deltas,
counted once whatever the order or repetition of updates, and crossing a quota does what the plan says."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from wavu.catalog.models import AddOn, Plan
from wavu.network import usage, writer
from wavu.network.fields import to_datetime
from wavu.network.models import (
    PeriodUsage,
    QuotaEvent,
    RadAcct,
    RadiusSyncRequest,
    RadReply,
    RadUserGroup,
    SessionCounter,
    UsageBucket,
)
from wavu.network.selectors import period_usage
from wavu.subscriptions import services as subs
from wavu.testing.factories import AddOnFactory, CustomerFactory, PlanFactory

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
GIB = 1024 * MIB
GIGAWORD = 2**32


def plan(**fields) -> Plan:
    defaults = {
        "name": "Home 10 Mbps (30 days)",
        "kind": Plan.Kind.PREPAID,
        "validity_unit": Plan.ValidityUnit.DAY,
        "validity_count": 30,
        "download_kbps": 10_000,
        "upload_kbps": 5_000,
    }
    return PlanFactory(**{**defaults, **fields})


def live_service(the_plan=None, **kwargs):
    sub = subs.create_subscription(CustomerFactory(), the_plan or plan(), **kwargs)
    subs.activate(sub)
    RadiusSyncRequest.objects.all().delete()  # the activation's own sync is not what these tests look at
    return sub


class Router:
    """Writes radacct as FreeRADIUS's stock queries do (start: insert; interim/stop: counters in place)."""

    def __init__(self, address="10.20.0.1"):
        self.address = address
        self.count = 0

    def start(self, sub, *, at=None) -> RadAcct:
        self.count += 1
        at = at or timezone.now()
        return RadAcct.objects.create(
            acctsessionid=f"81a{self.count:05d}",
            acctuniqueid=f"{sub.username}-{self.address}-{self.count}",
            username=sub.username,
            nasipaddress=self.address,
            acctstarttime=at,
            acctupdatetime=at,
            acctsessiontime=0,
            acctinputoctets=0,
            acctoutputoctets=0,
        )

    def interim(self, session, upload, download, seconds, *, at=None):
        RadAcct.objects.filter(pk=session.pk, acctstoptime=None).update(
            acctinputoctets=upload, acctoutputoctets=download, acctsessiontime=seconds,
            acctupdatetime=at or timezone.now(),
        )  # fmt: skip

    def stop(self, session, upload, download, seconds, *, at=None):
        at = at or timezone.now()
        RadAcct.objects.filter(pk=session.pk, acctstoptime=None).update(
            acctinputoctets=upload, acctoutputoctets=download, acctsessiontime=seconds, acctupdatetime=at,
            acctstoptime=at, acctterminatecause="User-Request",
        )  # fmt: skip


def stop_time(session):
    """The session's acctstoptime as FreeRADIUS's queries would read it (both databases)."""
    stamp = RadAcct.objects.filter(pk=session.pk).annotate(**usage.stamps("acctstoptime")).values_list("stamp_0")
    return to_datetime(stamp.get()[0])


def used(sub) -> tuple[int, int]:
    found = period_usage([sub.pk], timezone.now()).get(sub.pk)
    return (found.data_bytes, found.seconds) if found else (0, 0)


def test_interim_updates_are_counted_as_deltas_of_cumulative_counters_and_a_repeat_counts_nothing():
    sub = live_service()
    router = Router()
    session = router.start(sub)
    router.interim(session, 1 * MIB, 3 * MIB, 300)
    usage.ingest()
    router.interim(session, 2 * MIB, 7 * MIB, 600)
    usage.ingest()
    usage.ingest()  # nothing new: nothing counted twice

    assert used(sub) == (9 * MIB, 600)
    bucket = UsageBucket.objects.get(subscription=sub)
    assert (bucket.bytes_in, bucket.bytes_out, bucket.seconds) == (2 * MIB, 7 * MIB, 600)
    assert bucket.hour == timezone.now().replace(minute=0, second=0, microsecond=0) or bucket.hour.minute == 0
    counter = SessionCounter.objects.get(pk=session.pk)
    assert (counter.input_octets, counter.output_octets, counter.closed) == (2 * MIB, 7 * MIB, False)


def test_counters_past_four_gibibytes_count_in_full():
    sub = live_service()
    router = Router()
    session = router.start(sub)
    router.interim(session, 1 * GIGAWORD + 5, 3 * GIGAWORD + 7, 3600)  # the stock query folds Gigawords in
    usage.ingest()

    assert used(sub) == (4 * GIGAWORD + 12, 3600)


def test_a_late_out_of_order_interim_counts_nothing_and_nothing_goes_negative():
    sub = live_service()
    router = Router()
    session = router.start(sub)
    router.interim(session, 10 * MIB, 50 * MIB, 900)
    usage.ingest()
    router.interim(session, 8 * MIB, 40 * MIB, 600)  # an older update arrived last and overwrote the row
    report = usage.ingest()
    assert used(sub) == (60 * MIB, 900) and report.ignored_out_of_order == 1

    router.interim(session, 12 * MIB, 60 * MIB, 1200)  # the next in-order update
    usage.ingest()
    assert used(sub) == (72 * MIB, 1200)


def test_a_counter_reset_counts_the_new_value():
    sub = live_service()
    router = Router()
    session = router.start(sub)
    router.interim(session, 10 * MIB, 50 * MIB, 900)
    usage.ingest()
    router.interim(session, 1 * MIB, 2 * MIB, 1200)  # the router restarted its counters
    report = usage.ingest()

    assert used(sub) == (63 * MIB, 1200) and report.resets == 1


def test_a_session_that_starts_and_stops_between_two_runs_counts_everything_once():
    sub = live_service()
    router = Router()
    session = router.start(sub)
    router.stop(session, 4 * MIB, 20 * MIB, 120)
    usage.ingest()
    usage.ingest()

    assert used(sub) == (24 * MIB, 120)
    assert SessionCounter.objects.get(pk=session.pk).closed


def test_a_stop_after_interims_counts_only_what_was_not_counted():
    sub = live_service()
    router = Router()
    session = router.start(sub)
    router.interim(session, 1 * MIB, 1 * MIB, 300)
    usage.ingest()
    router.stop(session, 2 * MIB, 3 * MIB, 400)
    usage.ingest()
    usage.ingest()

    assert used(sub) == (5 * MIB, 400)
    assert SessionCounter.objects.filter(closed=False).count() == 0


def test_every_device_of_one_account_counts_against_the_same_quota():
    sub = live_service(plan(devices_allowed=2))
    phone, laptop = Router("10.20.0.1").start(sub), Router("10.20.0.2").start(sub)
    Router().interim(phone, 1 * MIB, 2 * MIB, 60)
    Router().interim(laptop, 3 * MIB, 4 * MIB, 90)
    usage.ingest()

    assert used(sub) == (10 * MIB, 150)


def test_sessions_of_unknown_users_are_tracked_but_count_for_nobody():
    stranger = RadAcct.objects.create(acctsessionid="x", acctuniqueid="x1", username="nobody",
                                      nasipaddress="10.0.0.1", acctstarttime=timezone.now(), acctinputoctets=5,
                                      acctoutputoctets=5, acctsessiontime=1)  # fmt: skip
    usage.ingest()

    assert SessionCounter.objects.get(pk=stranger.pk).subscription_id is None
    assert not UsageBucket.objects.exists() and not PeriodUsage.objects.exists()


def test_a_row_committed_late_below_the_highest_id_seen_is_still_counted():
    sub = live_service()
    router = Router()
    early = router.start(sub)
    later = router.start(sub)
    later_id = later.pk
    later.delete()  # as if this id's insert had not committed yet when the run looked
    RadAcct.objects.filter(pk=early.pk).update(radacctid=early.pk)
    usage.ingest()
    latest = router.start(sub)
    usage.ingest()  # the floor stays one run behind the highest id seen
    RadAcct.objects.create(
        radacctid=later_id, acctsessionid="late", acctuniqueid="late-1", username=sub.username,
        nasipaddress="10.20.0.1", acctstarttime=timezone.now(), acctinputoctets=MIB, acctoutputoctets=MIB,
        acctsessiontime=30, acctstoptime=timezone.now(),
    )  # fmt: skip
    usage.ingest()

    assert latest.pk > later_id and used(sub) == (2 * MIB, 30)


def test_usage_before_the_current_period_does_not_count_against_its_quota():
    sub = live_service()
    router = Router()
    session = router.start(sub, at=sub.current_period_start - dt.timedelta(minutes=10))
    router.interim(session, MIB, MIB, 60, at=sub.current_period_start - dt.timedelta(minutes=5))
    usage.ingest()
    router.interim(session, 2 * MIB, 3 * MIB, 120)
    usage.ingest()

    assert used(sub) == (3 * MIB, 60)  # only the growth after the period began
    assert sum(b.bytes_in + b.bytes_out for b in UsageBucket.objects.filter(subscription=sub)) == 5 * MIB


def test_sessions_silent_for_three_interim_intervals_are_closed_as_stale():
    sub = live_service()
    router = Router()
    now = timezone.now()
    silent = router.start(sub, at=now - dt.timedelta(hours=2))
    router.interim(silent, MIB, MIB, 600, at=now - dt.timedelta(minutes=16))
    alive = router.start(sub, at=now - dt.timedelta(hours=1))
    router.interim(alive, MIB, MIB, 600, at=now - dt.timedelta(minutes=4))
    report = usage.ingest(now=now)

    silent.refresh_from_db()
    assert report.stale_closed == 1
    assert silent.acctterminatecause == "Stale-Session"
    assert abs((stop_time(silent) - (now - dt.timedelta(minutes=16))).total_seconds()) < 1
    assert stop_time(alive) is None
    assert SessionCounter.objects.get(pk=silent.pk).closed
    assert sum(b.bytes_in + b.bytes_out for b in UsageBucket.objects.filter(subscription=sub)) == 4 * MIB


def test_ingestion_costs_the_same_queries_for_three_sessions_or_thirty():
    def run(n: int) -> int:
        services = [live_service() for _ in range(n)]
        router = Router()
        sessions = [router.start(sub) for sub in services]
        usage.ingest()
        for session in sessions:
            router.interim(session, MIB, 2 * MIB, 60)
        with CaptureQueriesContext(connection) as queries:
            report = usage.ingest()
        assert report.sessions == n
        return len(queries)

    assert run(3) == run(30)


# --- quotas ---------------------------------------------------------------------------------------


def capped(action, **fields) -> Plan:
    extra = {"fup_download_kbps": 1_000, "fup_upload_kbps": 512} if action == Plan.QuotaAction.THROTTLE else {}
    return plan(data_quota_mb=1_000, quota_action=action, **extra, **fields)


def test_eighty_percent_is_recorded_once_and_changes_nothing_in_radius():
    sub = live_service(capped(Plan.QuotaAction.BLOCK))
    router = Router()
    session = router.start(sub)
    router.interim(session, 100 * MIB, 710 * MIB, 60)
    usage.ingest()
    router.interim(session, 100 * MIB, 720 * MIB, 120)
    usage.ingest()

    event = QuotaEvent.objects.get(subscription=sub)
    assert (event.threshold, event.used_bytes, event.quota_bytes) == (80, 810 * MIB, 1000 * MIB)
    assert not RadiusSyncRequest.objects.exists()


def test_a_blocking_plan_used_up_sends_the_service_to_the_walled_garden():
    sub = live_service(capped(Plan.QuotaAction.BLOCK))
    writer.sync_subscriptions([sub.pk])
    router = Router()
    session = router.start(sub)
    router.interim(session, 200 * MIB, 800 * MIB, 60)
    usage.ingest()

    assert sorted(QuotaEvent.objects.filter(subscription=sub).values_list("threshold", flat=True)) == [80, 100]
    assert list(RadiusSyncRequest.objects.values_list("pk", flat=True)) == [sub.pk]
    writer.drain_sync_requests()
    assert RadUserGroup.objects.filter(username=sub.username, groupname="wavu-walled-garden").exists()


def test_a_throttling_plan_used_up_gets_its_fair_usage_speed_and_a_top_up_restores_it():
    sub = live_service(capped(Plan.QuotaAction.THROTTLE))
    router = Router()
    session = router.start(sub)
    router.interim(session, 100 * MIB, 950 * MIB, 60)
    usage.ingest()
    writer.drain_sync_requests()
    assert RadReply.objects.get(username=sub.username, attribute="Mikrotik-Rate-Limit").value == "512k/1M"

    bundle = AddOnFactory(code="bundle-1gb", name="1 GB bundle", category=AddOn.Category.DATA_BUNDLE,
                          billing=AddOn.Billing.ONE_OFF, data_quota_mb=1_024)  # fmt: skip
    subs.add_addon(sub, bundle)
    writer.drain_sync_requests()
    reply = dict(RadReply.objects.filter(username=sub.username).values_list("attribute", "value"))
    assert reply["Mikrotik-Rate-Limit"] == "5M/10M"
    assert int(reply["Mikrotik-Total-Limit"]) == (1000 + 1024) * MIB - 1050 * MIB


def test_a_plan_that_does_nothing_at_its_quota_gets_the_events_but_no_sync():
    sub = live_service(capped(Plan.QuotaAction.NONE))
    router = Router()
    session = router.start(sub)
    router.interim(session, 500 * MIB, 600 * MIB, 60)
    usage.ingest()

    assert QuotaEvent.objects.filter(subscription=sub).count() == 2
    assert not RadiusSyncRequest.objects.exists()


def test_a_time_quota_counts_session_seconds():
    sub = live_service(plan(time_quota_minutes=60, quota_action=Plan.QuotaAction.BLOCK))
    router = Router()
    session = router.start(sub)
    router.interim(session, MIB, MIB, 3600)
    usage.ingest()

    assert QuotaEvent.objects.filter(subscription=sub, threshold=100).exists()
    assert RadiusSyncRequest.objects.filter(pk=sub.pk).exists()


def test_a_data_bundle_on_a_plan_without_a_quota_is_a_quota_of_its_own():
    sub = live_service(plan(quota_action=Plan.QuotaAction.BLOCK))
    bundle = AddOnFactory(code="bundle-100", name="100 MB", category=AddOn.Category.DATA_BUNDLE,
                          billing=AddOn.Billing.ONE_OFF, data_quota_mb=100)  # fmt: skip
    subs.add_addon(sub, bundle)
    RadiusSyncRequest.objects.all().delete()
    router = Router()
    session = router.start(sub)
    router.interim(session, 10 * MIB, 75 * MIB, 60)
    usage.ingest()

    assert list(QuotaEvent.objects.filter(subscription=sub).values_list("threshold", "quota_bytes")) == [
        (80, 100 * MIB)
    ]
    assert not RadiusSyncRequest.objects.exists()


def test_the_reconciliation_refreshes_the_quota_left_as_usage_grows_without_calling_it_drift():
    sub = live_service(capped(Plan.QuotaAction.BLOCK))
    writer.reconcile()  # everything in place, the walled-garden group included
    before = dict(RadReply.objects.filter(username=sub.username).values_list("attribute", "value"))
    router = Router()
    session = router.start(sub)
    router.interim(session, 10 * MIB, 90 * MIB, 60)
    usage.ingest()

    record = writer.reconcile()

    after = dict(RadReply.objects.filter(username=sub.username).values_list("attribute", "value"))
    assert int(after["Mikrotik-Total-Limit"]) == int(before["Mikrotik-Total-Limit"]) - 100 * MIB
    assert record.users_repaired == 0 and not record.drift_found
    assert record.details["rows_added"] == {"radreply": 1}

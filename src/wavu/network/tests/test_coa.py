"""CoA and Disconnect: a customer who is online when their service changes is told by their router at
once, through a real UDP exchange with a test router that checks every request's authenticators."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from wavu.catalog.models import Plan
from wavu.network import coa, writer
from wavu.network import services as network
from wavu.network.models import CoaAttempt, RadAcct
from wavu.subscriptions import services as subs
from wavu.testing.factories import CustomerFactory, PlanFactory
from wavu.testing.tasks import run_queued_tasks

from .coa_listener import listening_nas

pytestmark = pytest.mark.django_db

SECRET = "coa-test-secret-0123456789"
COA, DISCONNECT = 43, 40


@pytest.fixture
def router():
    with listening_nas(SECRET) as nas:
        network.create_nas(address="127.0.0.1", shortname="kasarani", secret=SECRET, type="mikrotik",
                           coa_port=nas.port)  # fmt: skip
        yield nas


@pytest.fixture(autouse=True)
def quick_timeouts(monkeypatch):
    monkeypatch.setattr(coa, "COA_TIMEOUT", 0.3)


def online_service(plan=None, *, session_id="81a00012"):
    sub = subs.create_subscription(CustomerFactory(), plan or PlanFactory(download_kbps=10_000, upload_kbps=5_000))
    subs.activate(sub)
    run_queued_tasks()  # its rows written; nobody online yet, so no CoA
    RadAcct.objects.create(
        acctsessionid=session_id,
        acctuniqueid=f"u-{session_id}",
        username=sub.username,
        nasipaddress="127.0.0.1",
        acctstarttime=timezone.now(),
        framedipaddress="10.64.0.9",
    )
    return sub


def sync_and_send(django_capture_on_commit_callbacks):
    """What the workers do: drain the sync requests (the CoA job is queued on commit), then run the job."""
    with django_capture_on_commit_callbacks(execute=True):
        run_queued_tasks()
    run_queued_tasks()


def test_a_suspended_customer_online_is_moved_into_the_walled_garden_by_coa(router, django_capture_on_commit_callbacks):
    sub = online_service()
    subs.suspend(sub, reason="overdue invoice")
    sync_and_send(django_capture_on_commit_callbacks)

    [request] = router.received
    assert request.code == COA and request.authentic
    assert request.attributes == {
        "User-Name": sub.username,
        "Acct-Session-Id": "81a00012",
        "Framed-IP-Address": "10.64.0.9",
        "Mikrotik-Address-List": "wavu-unpaid",
        "Mikrotik-Rate-Limit": "256k/256k",
    }
    attempt = CoaAttempt.objects.get()
    assert (attempt.kind, attempt.result, attempt.subscription_id) == ("coa", "ack", sub.pk)
    assert attempt.attributes["Mikrotik-Address-List"] == "wavu-unpaid"


def test_a_plan_change_sends_the_new_rate(router, django_capture_on_commit_callbacks):
    sub = online_service()
    faster = PlanFactory(name="Home 20", download_kbps=20_000, upload_kbps=10_000)
    subs.change_plan(sub, faster)
    sync_and_send(django_capture_on_commit_callbacks)

    assert [(r.code, r.attributes.get("Mikrotik-Rate-Limit")) for r in router.received] == [(COA, "10M/20M")]


def test_a_refused_coa_is_followed_by_a_disconnect(django_capture_on_commit_callbacks):
    with listening_nas(SECRET, answers={COA: "nak", DISCONNECT: "ack"}, error_cause=401) as nas:
        network.create_nas(address="127.0.0.1", shortname="old-router", secret=SECRET, coa_port=nas.port)
        sub = online_service()
        subs.suspend(sub, reason="overdue invoice")
        sync_and_send(django_capture_on_commit_callbacks)

    assert [r.code for r in nas.received] == [COA, DISCONNECT]
    assert nas.received[1].attributes == {"User-Name": sub.username, "Acct-Session-Id": "81a00012",
                                          "Framed-IP-Address": "10.64.0.9"}  # fmt: skip
    outcomes = list(CoaAttempt.objects.order_by("id").values_list("kind", "result", "error_cause"))
    assert outcomes == [("coa", "nak", 401), ("disconnect", "ack", None)]


def test_a_cancelled_or_paused_customer_online_is_disconnected(router, django_capture_on_commit_callbacks):
    sub = online_service()
    subs.cancel(sub, reason="moved to Mombasa")
    sync_and_send(django_capture_on_commit_callbacks)

    assert [(r.code, r.authentic) for r in router.received] == [(DISCONNECT, True)]


def test_a_customer_who_pays_is_taken_out_of_the_walled_garden_by_a_disconnect(
    router, django_capture_on_commit_callbacks
):
    sub = online_service()
    subs.suspend(sub, reason="overdue invoice")
    sync_and_send(django_capture_on_commit_callbacks)
    subs.resume(sub, reason="paid")
    sync_and_send(django_capture_on_commit_callbacks)

    assert [r.code for r in router.received] == [COA, DISCONNECT]  # a fresh login gets the full service


def test_a_renewal_that_only_moves_the_expiry_sends_nothing(router, django_capture_on_commit_callbacks):
    plan = PlanFactory(kind=Plan.Kind.PREPAID, validity_unit=Plan.ValidityUnit.DAY, validity_count=30)
    sub = online_service(plan)
    subs.renew_period(sub, sub.current_period_end, sub.current_period_end + dt.timedelta(days=30))
    sync_and_send(django_capture_on_commit_callbacks)

    assert router.received == [] and not CoaAttempt.objects.exists()


def test_nobody_online_means_no_request(router, django_capture_on_commit_callbacks):
    sub = subs.create_subscription(CustomerFactory(), PlanFactory())
    subs.activate(sub)
    subs.suspend(sub, reason="overdue invoice")
    sync_and_send(django_capture_on_commit_callbacks)

    assert router.received == [] and not CoaAttempt.objects.exists()


def test_a_router_that_does_not_answer_is_recorded_and_the_job_retried(django_capture_on_commit_callbacks):
    with listening_nas(SECRET, answers={COA: "silent"}) as nas:
        network.create_nas(address="127.0.0.1", shortname="far-away", secret=SECRET, coa_port=nas.port)
        sub = online_service()
        subs.suspend(sub, reason="overdue invoice")
        sync_and_send(django_capture_on_commit_callbacks)

        assert len(nas.received) == coa.COA_TRIES  # sent again after the timeout
        attempt = CoaAttempt.objects.get()
        assert (attempt.result, attempt.attempt) == ("timeout", 1)
        jobs = DBTaskResult.objects.filter(task_path__endswith="change_live_session")
        assert jobs.filter(status=TaskResultStatus.FAILED).count() == 1
        retry = jobs.get(status=TaskResultStatus.READY)
        assert retry.run_after > timezone.now()

        nas.answers[COA] = "ack"  # the router is back when the retry runs
        coa.change_live_session(sub.username)
    assert list(CoaAttempt.objects.order_by("id").values_list("result", "attempt")) == [("timeout", 1), ("ack", 2)]


def test_a_request_with_the_wrong_secret_is_not_answered_and_is_recorded():
    with listening_nas("the-routers-real-secret-000") as nas:
        network.create_nas(address="127.0.0.1", shortname="kasarani", secret=SECRET, coa_port=nas.port)
        sub = online_service(PlanFactory(kind=Plan.Kind.POSTPAID))
        with pytest.raises(coa.RouterUnreachable):
            coa.change_live_session(sub.username)

    assert [r.authentic for r in nas.received] == [False] * coa.COA_TRIES
    assert CoaAttempt.objects.get().result == "timeout"


def test_a_session_on_an_unregistered_router_is_recorded_without_sending(router):
    sub = online_service()
    RadAcct.objects.filter(username=sub.username).update(nasipaddress="10.99.0.1")

    [attempt] = coa.change_live_session(sub.username)

    assert (attempt.result, attempt.nas_address) == ("error", "10.99.0.1") and router.received == []


def test_usage_quota_and_coa_records_are_read_only_in_the_admin(admin_client, router):
    sub = online_service()
    subs.suspend(sub, reason="overdue invoice")
    writer.drain_sync_requests()
    coa.change_live_session(sub.username)
    attempt = CoaAttempt.objects.get()

    for model in ("coaattempt", "quotaevent", "usagebucket", "periodusage"):
        assert admin_client.get(f"/admin/network/{model}/").status_code == 200
        assert admin_client.get(f"/admin/network/{model}/add/").status_code == 403
    page = admin_client.get(f"/admin/network/coaattempt/{attempt.pk}/change/")
    assert page.status_code == 200 and "wavu-unpaid" in page.content.decode()
    assert admin_client.post(f"/admin/network/coaattempt/{attempt.pk}/delete/", {"post": "yes"}).status_code == 403
    assert CoaAttempt.objects.filter(pk=attempt.pk).exists()

"""The dunning API as the back office uses it: promises to pay, dunning notices, billing runs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from wavu.billing import dunning, services
from wavu.billing.models import BillingRun, BillingRunFlag, DunningNotice, PaymentPromise
from wavu.core.models import AuditEvent
from wavu.subscriptions.models import LifecycleEvent, Status, SuspensionCause
from wavu.testing.factories import SubscriptionFactory

from .conftest import at

pytestmark = pytest.mark.django_db

DEC_1, DEC_31 = dt.date(2026, 12, 1), dt.date(2026, 12, 31)
SUSPENSION_DAY = dt.date(2026, 12, 14)


def on(day: dt.date, time: dt.time = dt.time(9, 30)):
    return time_machine.travel(at(day, time), tick=False)


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("accountant", password="x", is_staff=True)


@pytest.fixture
def api(staff):
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture
def suspended(customer, plan):
    """Wanjiku's service, suspended by dunning on 14 Dec for the unpaid December invoice."""
    sub = SubscriptionFactory(customer=customer, plan=plan, current_period_start=at(DEC_1, dt.time(0)))
    with on(DEC_1):
        services.invoice_subscription_period(sub, DEC_1, DEC_31)
    with on(SUSPENSION_DAY):
        dunning.run_dunning()
    sub.refresh_from_db()
    assert sub.status == Status.SUSPENDED
    return sub


def error_of(response, status_code):
    assert response.status_code == status_code, response.content
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"])
    return body["error"]


def nothing_written(before):
    return (PaymentPromise.objects.count(), LifecycleEvent.objects.count(), AuditEvent.objects.count()) == before


def counts():
    return PaymentPromise.objects.count(), LifecycleEvent.objects.count(), AuditEvent.objects.count()


def test_staff_grant_a_promise_to_pay_and_the_service_is_reconnected(api, suspended):
    with on(SUSPENSION_DAY, dt.time(11, 0)):
        response = api.post(
            "/api/v1/payment-promises/",
            {"subscription": suspended.pk, "until": "2026-12-18", "reason": "Salary on the 18th"},
            format="json",
        )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["subscription"] == suspended.pk and body["customer"] == suspended.customer_id
    assert (body["until"], body["reason"], body["granted_by"]) == (
        "2026-12-18",
        "Salary on the 18th",
        "user:accountant",
    )
    assert body["subscription_username"] == suspended.username
    suspended.refresh_from_db()
    assert (suspended.status, suspended.suspension_cause) == (Status.ACTIVE, SuspensionCause.NONE)
    granted = LifecycleEvent.objects.get(subscription=suspended, kind="promise_to_pay")
    assert granted.actor_label == "user:accountant"

    with on(dt.date(2026, 12, 15)):
        listing = api.get("/api/v1/payment-promises/", {"subscription": suspended.pk, "active": "true"})
        lapsed = api.get("/api/v1/payment-promises/", {"active": "false"})
        one = api.get(f"/api/v1/payment-promises/{body['id']}/")
    assert listing.status_code == 200 and [p["id"] for p in listing.json()["results"]] == [body["id"]]
    assert listing.json()["results"][0]["active"] is True
    assert lapsed.json()["count"] == 0
    assert one.status_code == 200 and one.json()["until"] == "2026-12-18"
    assert api.get("/api/v1/payment-promises/", {"customer": suspended.customer_id + 1}).json()["count"] == 0


@pytest.mark.parametrize(
    ("payload", "status_code", "code", "field"),
    [
        ({"until": "2026-12-30", "reason": "Later"}, 400, "promise_too_long", "until"),
        ({"until": "2026-12-01", "reason": "Earlier"}, 400, "promise_date_in_past", "until"),
        ({"until": "2026-12-18", "reason": ""}, 400, "invalid", "reason"),
        ({"until": "18/12/2026", "reason": "Salary"}, 400, "invalid", "until"),
        ({"reason": "Salary"}, 400, "invalid", "until"),
    ],
)
def test_a_bad_promise_is_refused_and_nothing_is_written(api, suspended, payload, status_code, code, field):
    before = counts()

    with on(SUSPENSION_DAY, dt.time(11, 0)):
        response = api.post("/api/v1/payment-promises/", {"subscription": suspended.pk, **payload}, format="json")

    error = error_of(response, status_code)
    assert error["code"] == code and field in error["fields"]
    assert nothing_written(before)
    suspended.refresh_from_db()
    assert suspended.status == Status.SUSPENDED


def test_an_unknown_service_is_refused(api, suspended):
    before = counts()
    with on(SUSPENSION_DAY):
        response = api.post(
            "/api/v1/payment-promises/", {"subscription": 999999, "until": "2026-12-16", "reason": "x"}, format="json"
        )
    assert "subscription" in error_of(response, 400)["fields"] and nothing_written(before)


def test_a_second_promise_in_the_period_is_a_conflict(api, suspended):
    payload = {"subscription": suspended.pk, "until": "2026-12-16", "reason": "Salary"}
    with on(SUSPENSION_DAY):
        assert api.post("/api/v1/payment-promises/", payload, format="json").status_code == 201
    with on(dt.date(2026, 12, 17)):
        dunning.run_dunning()
        before = counts()
        response = api.post("/api/v1/payment-promises/", {**payload, "until": "2026-12-20"}, format="json")

    assert error_of(response, 409)["code"] == "promise_already_granted"
    assert nothing_written(before)


def test_a_service_that_owes_nothing_overdue_gets_no_promise(api, customer, plan):
    sub = SubscriptionFactory(customer=customer, plan=plan)
    before = counts()
    with on(DEC_1):
        response = api.post(
            "/api/v1/payment-promises/", {"subscription": sub.pk, "until": "2026-12-05", "reason": "x"}, format="json"
        )
    assert error_of(response, 409)["code"] == "no_overdue_debt" and nothing_written(before)


def test_promises_cannot_be_changed_or_deleted_through_the_api(api, suspended):
    with on(SUSPENSION_DAY):
        dunning.grant_promise_to_pay(suspended, until=dt.date(2026, 12, 16), reason="Salary")
    promise = PaymentPromise.objects.get()
    assert api.patch(f"/api/v1/payment-promises/{promise.pk}/", {"until": "2026-12-20"}).status_code == 405
    assert api.delete(f"/api/v1/payment-promises/{promise.pk}/").status_code == 405


def test_dunning_notices_are_listed_and_filtered(api, suspended):
    listing = api.get("/api/v1/dunning-notices/", {"subscription": suspended.pk})
    assert listing.status_code == 200
    rows = listing.json()["results"]
    assert sorted((r["stage"], r["offset_days"]) for r in rows) == [
        ("reminder", -3),
        ("reminder", 0),
        ("reminder", 3),
        ("suspension", 6),
    ]
    assert {r["invoice_number"] for r in rows} == {"INV-000001"} and rows[0]["customer"] == suspended.customer_id

    suspensions = api.get("/api/v1/dunning-notices/", {"stage": "suspension"}).json()["results"]
    assert [r["offset_days"] for r in suspensions] == [6]
    assert api.get("/api/v1/dunning-notices/", {"created_from": "2026-12-15"}).json()["count"] == 0
    assert api.get("/api/v1/dunning-notices/", {"search": "INV-000001"}).json()["count"] == 4
    notice = DunningNotice.objects.get(stage="suspension")
    assert api.get(f"/api/v1/dunning-notices/{notice.pk}/").json()["offset_days"] == 6
    assert api.post("/api/v1/dunning-notices/", {}, format="json").status_code == 405


def test_billing_runs_cannot_be_edited_and_show_their_flags_and_filters(api, customer, plan):
    sub = SubscriptionFactory(customer=customer, plan=plan)
    good = BillingRun.objects.create(
        run_date=DEC_1,
        status=BillingRun.Status.COMPLETED,
        started_at=at(DEC_1, dt.time(1)),
        finished_at=at(DEC_1, dt.time(1, 5)),
        billed_count=120,
        flagged_count=1,
        total_amount=Decimal("359880.00"),
        started_by="job:billing-run",
    )
    BillingRunFlag.objects.create(
        run=good, subscription=sub, code="no_price", reason="Plan has no price", created_at=at(DEC_1, dt.time(1, 2))
    )
    BillingRun.objects.create(
        run_date=dt.date(2026, 12, 2), status=BillingRun.Status.FAILED, started_at=at(dt.date(2026, 12, 2)),
        started_by="job:billing-run", last_error="database went away",
    )  # fmt: skip

    listing = api.get("/api/v1/billing-runs/")
    assert listing.status_code == 200 and [r["run_date"] for r in listing.json()["results"]] == [
        "2026-12-02",
        "2026-12-01",
    ]
    detail = api.get(f"/api/v1/billing-runs/{good.pk}/").json()
    assert detail["total_amount"] == "359880.00" and detail["billed_count"] == 120
    assert detail["flags"] == [
        {
            "id": good.flags.get().pk,
            "subscription": sub.pk,
            "subscription_username": sub.username,
            "code": "no_price",
            "reason": "Plan has no price",
            "created_at": detail["flags"][0]["created_at"],
        }
    ]
    assert [r["status"] for r in api.get("/api/v1/billing-runs/", {"status": "failed"}).json()["results"]] == ["failed"]
    assert api.get("/api/v1/billing-runs/", {"run_from": "2026-12-02"}).json()["count"] == 1
    assert api.get("/api/v1/billing-runs/", {"run_to": "2026-11-30"}).json()["count"] == 0
    assert api.put(f"/api/v1/billing-runs/{good.pk}/", {}, format="json").status_code == 405
    assert api.delete(f"/api/v1/billing-runs/{good.pk}/").status_code == 405


def test_anonymous_callers_cannot_grant_promises(suspended):
    response = APIClient().post(
        "/api/v1/payment-promises/", {"subscription": suspended.pk, "until": "2026-12-16", "reason": "x"}
    )
    assert response.status_code in (401, 403) and PaymentPromise.objects.count() == 0

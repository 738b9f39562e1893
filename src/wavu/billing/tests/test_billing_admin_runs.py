"""The admin shows billing runs (with their flags), dunning notices and promises to pay, never edits them."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.contrib.auth import get_user_model

from wavu.billing import dunning, services
from wavu.billing.models import BillingRun, BillingRunFlag, DunningNotice, PaymentPromise
from wavu.testing.factories import SubscriptionFactory

from .conftest import at

pytestmark = pytest.mark.django_db

DEC_1, DEC_31, SUSPENSION_DAY = dt.date(2026, 12, 1), dt.date(2026, 12, 31), dt.date(2026, 12, 14)


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "x"))
    return client


@pytest.fixture
def dunned(customer, plan):
    """A service suspended by dunning on 14 Dec, then given a promise to pay."""
    sub = SubscriptionFactory(customer=customer, plan=plan, current_period_start=at(DEC_1, dt.time(0)))
    with time_machine.travel(at(DEC_1), tick=False):
        services.invoice_subscription_period(sub, DEC_1, DEC_31)
    with time_machine.travel(at(SUSPENSION_DAY), tick=False):
        dunning.run_dunning()
        dunning.grant_promise_to_pay(sub, until=dt.date(2026, 12, 18), reason="Salary on the 18th")
    return sub


def assert_read_only(admin_client, url_base, pk):
    page = admin_client.get(f"{url_base}{pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert admin_client.get(f"{url_base}add/").status_code == 403
    assert admin_client.post(f"{url_base}{pk}/change/", {}).status_code == 403
    assert admin_client.post(f"{url_base}{pk}/delete/", {"post": "yes"}).status_code == 403


def test_billing_runs_are_shown_with_their_flags_and_never_edited(admin_client, customer, plan):
    sub = SubscriptionFactory(customer=customer, plan=plan, username="wanjiku-home")
    run = BillingRun.objects.create(
        run_date=DEC_1, status=BillingRun.Status.COMPLETED, started_at=at(DEC_1), started_by="job:billing-run"
    )
    BillingRunFlag.objects.create(
        run=run, subscription=sub, code="no_price", reason="Plan has no price on 1 Dec", created_at=at(DEC_1)
    )

    listing = admin_client.get("/admin/billing/billingrun/")
    assert listing.status_code == 200 and b"Dec. 1, 2026" in listing.content
    assert admin_client.get("/admin/billing/billingrun/", {"status__exact": "completed"}).status_code == 200
    page = admin_client.get(f"/admin/billing/billingrun/{run.pk}/change/")
    assert b"Plan has no price on 1 Dec" in page.content and b"wanjiku-home" in page.content
    assert_read_only(admin_client, "/admin/billing/billingrun/", run.pk)
    assert BillingRun.objects.get().status == BillingRun.Status.COMPLETED and BillingRunFlag.objects.count() == 1


def test_dunning_notices_are_listed_searched_and_never_edited(admin_client, dunned):
    listing = admin_client.get("/admin/billing/dunningnotice/", {"q": "INV-000001"})
    assert listing.status_code == 200 and listing.content.count(b"INV-000001") >= 4
    assert admin_client.get("/admin/billing/dunningnotice/", {"stage__exact": "suspension"}).status_code == 200
    assert b"INV-000001" not in admin_client.get("/admin/billing/dunningnotice/", {"q": "nobody"}).content
    notice = DunningNotice.objects.get(stage="suspension")
    assert_read_only(admin_client, "/admin/billing/dunningnotice/", notice.pk)
    assert DunningNotice.objects.count() == 4


def test_promises_to_pay_are_shown_but_granted_only_through_the_api(admin_client, dunned):
    listing = admin_client.get("/admin/billing/paymentpromise/", {"q": dunned.username})
    assert listing.status_code == 200 and b"Salary on the 18th" in listing.content
    promise = PaymentPromise.objects.get()
    assert_read_only(admin_client, "/admin/billing/paymentpromise/", promise.pk)
    promise.refresh_from_db()
    assert promise.until == dt.date(2026, 12, 18) and PaymentPromise.objects.count() == 1

"""/api/v1/billing-runs/: staff see each day's run and its flags, and can ask for a run now."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from wavu.billing.models import BillingRun, Invoice
from wavu.catalog.models import PlanPrice
from wavu.subscriptions import services as subs
from wavu.testing.factories import PlanFactory, SubscriptionFactory
from wavu.testing.tasks import run_queued_tasks

from .conftest import at

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("finance", password="x", is_staff=True))
    return client


def test_asking_for_a_run_queues_it_and_the_worker_bills_the_day(api):
    plan = PlanFactory(name="Home Fibre 20 Mbps", with_price=Decimal("2999.00"))
    unpriced = PlanFactory(name="Business 50 Mbps")
    PlanPrice.objects.filter(plan=unpriced).update(valid_from=at(dt.date(2030, 1, 1)))
    for p in (plan, plan, unpriced):
        subs.activate(SubscriptionFactory(plan=p, status="pending"), at=at(dt.date(2026, 12, 1), dt.time(0)))

    with time_machine.travel(at(dt.date(2026, 12, 1), dt.time(8)), tick=False):
        response = api.post("/api/v1/billing-runs/", {"run_date": "2026-12-01"}, format="json")
        assert response.status_code == 202, response.content
        assert response.json()["run_date"] == "2026-12-01" and response.json()["job"]
        assert not Invoice.objects.exists()  # queued, not run in the request
        assert run_queued_tasks() >= 1  # the billing run (and the RADIUS syncs its services asked for)

    listed = api.get("/api/v1/billing-runs/").json()["results"]
    assert len(listed) == 1
    run = listed[0]
    assert (run["status"], run["billed_count"], run["flagged_count"]) == ("completed", 2, 1)
    assert run["total_amount"] == "5998.00"
    assert run["flags"][0]["code"] == "no_price" and "Business 50 Mbps" in run["flags"][0]["reason"]


@pytest.mark.parametrize(
    ("body", "code"),
    [({"run_date": "2027-01-01"}, "billing_run_in_future"), ({"run_date": "first of December"}, None)],
)
def test_a_run_for_a_future_day_or_a_garbage_date_is_refused_and_queues_nothing(api, body, code):
    from django_tasks_db.models import DBTaskResult

    with time_machine.travel(at(dt.date(2026, 12, 1)), tick=False):
        response = api.post("/api/v1/billing-runs/", body, format="json")

    assert response.status_code == 400, response.content
    if code:
        assert response.json()["error"]["code"] == code
    assert not DBTaskResult.objects.exists() and not BillingRun.objects.exists()

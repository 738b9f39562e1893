"""Plans in the Django admin: saved through the services; prices are new versions, never edits."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from wavu.catalog import services
from wavu.catalog.models import Plan, PlanPrice
from wavu.core.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/admin/catalog/plan/"


@pytest.fixture(autouse=True)
def january():
    with time_machine.travel(timezone.make_aware(dt.datetime(2026, 1, 10, 9, 0)), tick=False):
        yield


def plan_form(**overrides):
    data = {
        "code": "home-20",
        "name": "Home Fibre 20 Mbps",
        "description": "",
        "kind": "postpaid",
        "validity_unit": "month",
        "validity_count": "1",
        "download_kbps": "20000",
        "upload_kbps": "10000",
        "burst_download_kbps": "",
        "burst_upload_kbps": "",
        "burst_threshold_percent": "",
        "burst_time_seconds": "",
        "data_quota_mb": "",
        "quota_action": "none",
        "fup_download_kbps": "",
        "fup_upload_kbps": "",
        "time_quota_minutes": "",
        "devices_allowed": "1",
        "technology": "ftth",
        "tax_class": "internet",
        "hotspot_starts": "purchase",
        "is_active": "on",
        # the price history (read-only) and the "add a new price" rows
        "prices-TOTAL_FORMS": "0",
        "prices-INITIAL_FORMS": "0",
        "prices-2-TOTAL_FORMS": "1",
        "prices-2-INITIAL_FORMS": "0",
        "prices-2-0-amount": "",
        "prices-2-0-valid_from_0": "",
        "prices-2-0-valid_from_1": "",
    }
    data.update(overrides)
    return data


def test_a_plan_is_added_with_its_first_price(admin_client):
    response = admin_client.post(
        f"{URL}add/",
        plan_form(
            **{"prices-2-0-amount": "2999", "prices-2-0-valid_from_0": "2026-01-10", "prices-2-0-valid_from_1": "00:00"}
        ),
    )

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    plan = Plan.objects.get()
    assert PlanPrice.objects.get(plan=plan).amount == Decimal("2999.00")
    changes = AuditEvent.objects.exclude(verb="login")  # the admin client's sign-in is audited too
    assert set(changes.values_list("verb", flat=True)) == {"create_plan", "set_plan_price"}


def test_a_plan_breaking_a_rule_shows_the_error_in_the_admin(admin_client):
    response = admin_client.post(f"{URL}add/", plan_form(quota_action="throttle", data_quota_mb="1024"))

    assert response.status_code == 200
    assert "fup_download_kbps" in response.context["adminform"].form.errors
    assert not Plan.objects.exists()


def test_a_new_price_in_the_admin_is_a_new_version_and_the_old_one_stays(admin_client):
    plan = services.create_plan(
        price="2500",
        code="home-20",
        name="Home Fibre 20 Mbps",
        kind="postpaid",
        technology="ftth",
        download_kbps=20000,
        upload_kbps=10000,
    )
    data = plan_form(
        **{
            "prices-TOTAL_FORMS": "1",
            "prices-INITIAL_FORMS": "1",
            "prices-0-id": str(plan.prices.get().pk),
            "prices-0-plan": str(plan.pk),
            "prices-2-0-amount": "2999",
            "prices-2-0-valid_from_0": "2026-02-01",
            "prices-2-0-valid_from_1": "00:00",
        }
    )

    response = admin_client.post(f"{URL}{plan.pk}/change/", data)

    assert response.status_code == 302
    assert list(plan.prices.order_by("valid_from").values_list("amount", flat=True)) == [
        Decimal("2500.00"),
        Decimal("2999.00"),
    ]
    assert admin_client.get(f"{URL}{plan.pk}/delete/").status_code == 403

"""The plans and add-ons API."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from wavu.catalog import services
from wavu.catalog.models import Plan, PlanPrice
from wavu.core.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("product", password="x", is_staff=True))
    with time_machine.travel(timezone.make_aware(dt.datetime(2026, 1, 10, 9, 0)), tick=False):
        yield client


PLAN = {
    "code": "wireless-10",
    "name": "Wireless 10 Mbps",
    "kind": "prepaid",
    "technology": "fixed_wireless",
    "validity_unit": "day",
    "validity_count": 30,
    "download_kbps": 10_000,
    "upload_kbps": 4_000,
    "sold_on_portal": True,
    "price": "3000",
}


def test_a_plan_is_created_with_its_price_and_shows_the_current_price(api):
    response = api.post("/api/v1/plans/", PLAN, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["code"] == "wireless-10" and body["current_price"] == "3000.00"
    assert body["current_price_currency"] == "KES" and len(body["prices"]) == 1
    listed = api.get("/api/v1/plans/").json()["results"]
    assert [p["current_price"] for p in listed] == ["3000.00"]


def test_a_plan_breaking_a_rule_answers_400_with_field_errors(api):
    response = api.post("/api/v1/plans/", {**PLAN, "quota_action": "throttle", "data_quota_mb": 1024}, format="json")

    assert response.status_code == 400
    assert "fup_download_kbps" in response.json()["error"]["fields"]
    assert not Plan.objects.exists()


def test_a_float_price_is_refused(api):
    response = api.post("/api/v1/plans/", {**PLAN, "price": 3000.5}, format="json")

    assert response.status_code == 400
    assert "price" in response.json()["error"]["fields"]
    assert not Plan.objects.exists()


def test_set_price_adds_a_version_that_starts_later(api):
    plan = services.create_plan(**{k: v for k, v in PLAN.items() if k != "price"}, price="3000")

    response = api.post(
        f"/api/v1/plans/{plan.pk}/set-price/", {"amount": "3200.00", "valid_from": "2026-02-01"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["amount"] == "3200.00"
    assert PlanPrice.objects.filter(plan=plan).count() == 2
    assert api.get(f"/api/v1/plans/{plan.pk}/").json()["current_price"] == "3000.00"
    assert AuditEvent.objects.filter(verb="set_plan_price").latest("id").actor_label == "user:product"


def test_a_backdated_or_duplicate_price_answers_409_and_changes_nothing(api):
    plan = services.create_plan(**{k: v for k, v in PLAN.items() if k != "price"}, price="3000")
    url = f"/api/v1/plans/{plan.pk}/set-price/"

    backdated = api.post(url, {"amount": "2000", "valid_from": "2025-01-01"}, format="json")
    assert api.post(url, {"amount": "3100", "valid_from": "2026-03-01"}, format="json").status_code == 201
    duplicate = api.post(url, {"amount": "3300", "valid_from": "2026-03-01"}, format="json")

    assert backdated.status_code == 409 and backdated.json()["error"]["code"] == "price_backdated"
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "price_start_taken"
    assert sorted(PlanPrice.objects.values_list("amount", flat=True)) == [Decimal("3000.00"), Decimal("3100.00")]


def test_a_patch_changes_the_plan_but_not_its_price(api):
    plan = services.create_plan(**{k: v for k, v in PLAN.items() if k != "price"}, price="3000")

    ok = api.patch(f"/api/v1/plans/{plan.pk}/", {"download_kbps": 12_000}, format="json")
    price = api.patch(f"/api/v1/plans/{plan.pk}/", {"price": "1"}, format="json")

    assert ok.status_code == 200 and ok.json()["download_kbps"] == 12_000
    assert price.status_code == 400
    assert api.delete(f"/api/v1/plans/{plan.pk}/").status_code == 405


def test_add_ons_are_created_and_repriced(api):
    response = api.post(
        "/api/v1/addons/",
        {"code": "static-ip", "name": "Static IP", "category": "static_ip", "billing": "recurring", "price": "500"},
        format="json",
    )
    assert response.status_code == 201, response.content
    addon_id = response.json()["id"]

    repriced = api.post(f"/api/v1/addons/{addon_id}/set-price/", {"amount": "600", "valid_from": "2026-02-01"})
    wrong = api.post(
        "/api/v1/addons/",
        {"code": "install", "name": "Installation", "category": "installation", "billing": "recurring"},
        format="json",
    )

    assert repriced.status_code == 201
    assert wrong.status_code == 400 and "billing" in wrong.json()["error"]["fields"]


def test_the_plan_list_costs_a_fixed_number_of_queries(api, django_assert_max_num_queries):
    for i in range(10):
        services.create_plan(**{**{k: v for k, v in PLAN.items() if k != "price"}, "code": f"plan-{i}"}, price="100")

    with django_assert_max_num_queries(4):
        response = api.get("/api/v1/plans/")

    assert response.json()["count"] == 10

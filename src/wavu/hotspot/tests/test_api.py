"""The voucher API: issue, list, filter, revoke, print and export, staff only, errors in the house
format with nothing written."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from wavu.core.models import AuditEvent
from wavu.hotspot.models import Voucher, VoucherBatch
from wavu.subscriptions.models import Status, Subscription
from wavu.testing.factories import PlanFactory

from .support import hotspot_plan

pytestmark = pytest.mark.django_db

BATCHES, VOUCHERS = "/api/v1/voucher-batches/", "/api/v1/vouchers/"


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("cashier", password="x", is_staff=True))
    return client


@pytest.fixture
def plan():
    return hotspot_plan()


def test_staff_issue_a_batch_and_see_its_vouchers(api, plan):
    response = api.post(
        BATCHES, {"plan": plan.pk, "quantity": 12, "sold_by": "Mama Njeri", "mac_lock": True}, format="json"
    )

    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["quantity"], data["price"], data["mac_lock"], data["device_limit"]) == (12, "50.00", True, 1)
    assert data["counts"] == {"unused": 12, "active": 0, "expired": 0, "revoked": 0}
    assert data["created_by_label"] == "user:cashier"
    listed = api.get(VOUCHERS, {"batch": data["id"], "status": "unused"}).json()
    assert listed["count"] == 12
    first = listed["results"][0]
    assert first["username"] == first["code"] and first["service_status"] == "active"
    assert api.get(f"{BATCHES}{data['id']}/").json()["sold_by"] == "Mama Njeri"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": "many"}, "quantity"),
        ({"quantity": 5, "price": "-5"}, "price"),
        ({"quantity": 5, "price": 49.99}, "price"),  # a JSON float is inexact: refused
        ({"quantity": 5, "code_length": 40}, "code_length"),
        ({"quantity": 5, "device_limit": 0}, "device_limit"),
        ({"quantity": 5, "locked_mac": "AA"}, "locked_mac"),
        ({"quantity": 5, "plan": 999_999}, "plan"),
    ],
)
def test_bad_input_is_a_400_in_the_house_format_and_writes_nothing(api, plan, body, field):
    response = api.post(BATCHES, {"plan": plan.pk, **body}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert not VoucherBatch.objects.exists() and not Subscription.objects.exists()


def test_a_plan_that_is_not_a_first_login_hotspot_package_is_refused(api):
    fibre = PlanFactory()
    response = api.post(BATCHES, {"plan": fibre.pk, "quantity": 5}, format="json")
    assert response.status_code == 400 and "plan" in response.json()["error"]["fields"]
    assert not Subscription.objects.exists()


def test_revoking_a_voucher_then_the_batch_through_the_api(api, plan):
    batch_id = api.post(BATCHES, {"plan": plan.pk, "quantity": 3}, format="json").json()["id"]
    voucher = Voucher.objects.filter(batch_id=batch_id).order_by("pk").first()

    one = api.post(f"{VOUCHERS}{voucher.pk}/revoke/", {"reason": "lost card"}, format="json")
    assert one.status_code == 200 and one.json()["status"] == "revoked"
    again = api.post(f"{VOUCHERS}{voucher.pk}/revoke/", {}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_allowed"

    rest = api.post(f"{BATCHES}{batch_id}/revoke/", {"reason": "agent left"}, format="json")
    assert rest.status_code == 200 and rest.json()["revoked"] == 2
    assert rest.json()["batch"]["counts"]["revoked"] == 3
    assert not Subscription.objects.exclude(status=Status.CANCELLED).exists()
    assert AuditEvent.objects.filter(verb="revoke_voucher_batch", actor_label="user:cashier").count() == 1
    assert api.post(f"{BATCHES}{batch_id}/revoke/", {}, format="json").status_code == 409


def test_the_print_page_and_the_csv_carry_every_code_that_is_not_revoked(api, plan, settings):
    settings.WAVU = {**settings.WAVU, "ISP_NAME": "Kasarani Wi-Fi"}
    batch_id = api.post(BATCHES, {"plan": plan.pk, "quantity": 4, "price": "30.00"}, format="json").json()["id"]
    codes = list(Voucher.objects.filter(batch_id=batch_id).order_by("pk").values_list("code", flat=True))
    api.post(f"{VOUCHERS}{Voucher.objects.get(code=codes[0]).pk}/revoke/", {}, format="json")

    page = api.get(f"{BATCHES}{batch_id}/print/")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert "Kasarani Wi-Fi" in html and "3 Hours Unlimited" in html and "30.00" in html and "3 hours" in html
    assert all(code in html for code in codes[1:]) and codes[0] not in html

    export = api.get(f"{BATCHES}{batch_id}/export/")
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    lines = export.content.decode().splitlines()
    assert lines[0] == "code,status,plan,validity,price,currency,batch,sold_by"
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(codes[1:])


def test_an_unknown_batch_is_a_404_in_the_house_format(api):
    response = api.get(f"{BATCHES}999999/", format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_the_api_is_for_staff_only(plan):
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("guest", password="x"))
    assert client.post(BATCHES, {"plan": plan.pk, "quantity": 2}, format="json").status_code == 403
    assert not Subscription.objects.exists()


def test_the_admin_issues_prints_and_exports_a_batch(client, plan):
    client.force_login(get_user_model().objects.create_superuser("admin", password="x"))
    response = client.post(
        "/admin/hotspot/voucherbatch/add/",
        {"plan": plan.pk, "quantity": 3, "code_length": 10, "sold_by": "front desk", "device_limit": 2},
    )
    assert response.status_code == 302, response.content[:2000]
    batch = VoucherBatch.objects.get()
    assert (batch.quantity, batch.code_length, batch.device_limit) == (3, 10, 2)
    assert all(len(code) == 10 for code in batch.vouchers.values_list("code", flat=True))
    assert client.get("/admin/hotspot/voucherbatch/").status_code == 200
    printed = client.get(f"/admin/hotspot/voucherbatch/{batch.pk}/print/")
    assert printed.status_code == 200 and batch.vouchers.first().code in printed.content.decode()
    assert client.get(f"/admin/hotspot/voucherbatch/{batch.pk}/export/").status_code == 200
    refused = client.post("/admin/hotspot/voucherbatch/add/", {"plan": plan.pk, "quantity": 0, "code_length": 8})
    assert refused.status_code == 200 and VoucherBatch.objects.count() == 1


def test_listing_batches_costs_the_same_queries_for_two_or_twenty(api, plan):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def cost(count: int) -> int:
        for _ in range(count):
            api.post(BATCHES, {"plan": plan.pk, "quantity": 2}, format="json")
        with CaptureQueriesContext(connection) as queries:
            listed = api.get(BATCHES, {"page_size": 100})
        assert listed.status_code == 200
        assert all(b["counts"]["unused"] == 2 for b in listed.json()["results"])
        return len(queries)

    assert cost(2) == cost(18)

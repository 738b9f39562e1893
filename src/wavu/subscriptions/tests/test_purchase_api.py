"""POST /subscriptions/{id}/purchase/: a prepaid customer buys a period from their credit."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from wavu.billing.models import Invoice
from wavu.customers import services as customers
from wavu.payments.services import record_manual_payment
from wavu.subscriptions import services
from wavu.subscriptions.models import Status
from wavu.testing.factories import PlanFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("desk", password="x", is_staff=True))
    return client


@pytest.fixture
def service():
    customer = customers.create_customer(name="Otieno Odhiambo", phone="0722000111")
    plan = PlanFactory(name="Wireless 5 Mbps", kind="prepaid", validity_unit="day", validity_count=30,
                       with_price=Decimal("1000.00"))  # fmt: skip
    return services.create_subscription(customer, plan)


def test_a_purchase_paid_from_credit_starts_the_service_and_answers_201(api, service):
    record_manual_payment(method="cash", reference="RC-77", amount="1000.00", customer=service.customer)

    response = api.post(f"/api/v1/subscriptions/{service.pk}/purchase/", {"reason": "installed"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["subscription"]["status"] == Status.ACTIVE
    assert body["purchase"]["event"] == "activated" and body["purchase"]["created"] is True
    assert body["purchase"]["total"] == "1000.00"
    assert Invoice.objects.get(number=body["purchase"]["invoice"]).status == Invoice.Status.PAID


def test_without_enough_credit_the_purchase_is_refused_with_409_and_writes_nothing(api, service):
    record_manual_payment(method="cash", reference="RC-78", amount="400.00", customer=service.customer)

    response = api.post(f"/api/v1/subscriptions/{service.pk}/purchase/", {}, format="json")

    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "insufficient_credit"
    service.refresh_from_db()
    assert service.status == Status.PENDING and not Invoice.objects.exists()


def test_staff_may_grant_a_period_on_account(api, service):
    response = api.post(f"/api/v1/subscriptions/{service.pk}/purchase/", {"require_credit": False}, format="json")

    assert response.status_code == 201, response.content
    invoice = Invoice.objects.get()
    assert invoice.status == Invoice.Status.ISSUED and invoice.total == Decimal("1000.00")


def test_a_garbage_body_answers_400(api, service):
    response = api.post(f"/api/v1/subscriptions/{service.pk}/purchase/", {"require_credit": "maybe"}, format="json")

    assert response.status_code == 400
    assert not Invoice.objects.exists()

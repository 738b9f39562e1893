"""The payments admin: records are read-only; reversing asks for a reason and goes through the service."""

import pytest
from django.contrib.auth import get_user_model

from wavu.billing.models import Invoice
from wavu.core.models import AuditEvent
from wavu.payments import services
from wavu.payments.models import Payment
from wavu.testing.factories import CustomerFactory

from .factories import issued_invoice

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "x"))
    return client


def test_payments_are_shown_but_cannot_be_added_changed_or_deleted(admin_client):
    payment, _ = services.record_manual_payment(
        method="cash", reference="R-1", amount="100", customer=CustomerFactory()
    )

    assert admin_client.get("/admin/payments/payment/").status_code == 200
    assert admin_client.get(f"/admin/payments/payment/{payment.pk}/change/").status_code == 200
    assert admin_client.get("/admin/payments/payment/add/").status_code == 403
    assert admin_client.post(f"/admin/payments/payment/{payment.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/payments/allocation/").status_code == 200
    assert admin_client.get("/admin/payments/refund/").status_code == 200


def test_the_reverse_action_asks_for_a_reason_then_reverses_through_the_service(admin_client):
    customer = CustomerFactory()
    invoice = issued_invoice(customer, "100")
    payment, _ = services.record_manual_payment(method="cash", reference="R-2", amount="100", customer=customer)
    selection = {"action": "reverse_selected", "_selected_action": [payment.pk]}

    asked = admin_client.post("/admin/payments/payment/", selection)
    assert asked.status_code == 200 and b"reason" in asked.content
    payment.refresh_from_db()
    assert payment.status == Payment.Status.RECEIVED

    done = admin_client.post("/admin/payments/payment/", {**selection, "apply": "1", "reason": "keyed twice"})
    assert done.status_code == 302
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert payment.status == Payment.Status.REVERSED and payment.reversal_reason == "keyed twice"
    assert invoice.status == Invoice.Status.ISSUED
    assert AuditEvent.objects.get(verb="reverse_payment").actor_label == "user:root"

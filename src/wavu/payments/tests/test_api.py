"""The payments API as staff scripts and the back office use it."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from wavu.billing.models import Invoice
from wavu.core.models import AuditEvent
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance
from wavu.payments import services
from wavu.payments.models import Payment, Refund
from wavu.testing.factories import CustomerFactory

from .factories import issued_invoice

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("cashier", password="x", is_staff=True)


@pytest.fixture
def api(staff):
    client = APIClient()
    client.force_authenticate(staff)
    return client


def test_a_cashier_enters_a_cash_payment_and_it_pays_the_invoice(api):
    customer = CustomerFactory()
    invoice = issued_invoice(customer, "2500")

    response = api.post(
        "/api/v1/payments/",
        {"method": "cash", "reference": "RCPT-9", "amount": "3000", "customer": customer.pk, "payer_name": "Wanjiku"},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "received" and body["amount"] == "3000.00" and body["unallocated"] == "500.00"
    assert body["allocations"][0]["invoice_number"] == invoice.number
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    event = AuditEvent.objects.get(verb="record_payment")
    assert event.actor_label == "user:cashier"


def test_entering_the_same_slip_twice_answers_200_with_the_existing_payment(api):
    customer = CustomerFactory()
    data = {"method": "bank_transfer", "reference": "FT-77", "amount": "1000.00", "customer": customer.pk}

    first = api.post("/api/v1/payments/", data, format="json")
    second = api.post("/api/v1/payments/", data, format="json")

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Payment.objects.count() == 1
    assert customer_balance(customer.pk) == Decimal("-1000.00")


def test_the_same_slip_with_another_amount_answers_409_and_changes_nothing(api):
    customer = CustomerFactory()
    api.post(
        "/api/v1/payments/", {"method": "cheque", "reference": "000123", "amount": "1000", "customer": customer.pk}
    )

    response = api.post(
        "/api/v1/payments/", {"method": "cheque", "reference": "000123", "amount": "1100", "customer": customer.pk}
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_reference_mismatch"
    assert Payment.objects.count() == 1 and JournalEntry.objects.count() == 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"method": "cash", "reference": "R1", "amount": "-5"}, "amount"),
        ({"method": "cash", "reference": "R1", "amount": "0"}, "amount"),
        ({"method": "cash", "reference": "R1", "amount": "abc"}, "amount"),
        ({"method": "cash", "reference": "R1", "amount": 10.5}, "amount"),
        ({"method": "cash", "reference": "R1", "amount": "10.555"}, "amount"),
        ({"method": "cash", "reference": "R1", "amount": True}, "amount"),
        ({"method": "cash", "reference": "", "amount": "10"}, "reference"),
        ({"method": "mpesa", "reference": "R1", "amount": "10"}, "method"),
        ({"method": "cash", "reference": "R1", "amount": "10", "customer": 999999}, "customer"),
        ({"method": "cash", "reference": "R1", "amount": "10", "received_at": "2999-01-01T00:00:00Z"}, "received_at"),
        ({"method": "cash", "reference": "R1"}, "amount"),
    ],
)
def test_bad_manual_entries_answer_400_with_the_field_and_write_nothing(api, data, field):
    response = api.post("/api/v1/payments/", data, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"], error
    assert not Payment.objects.exists() and not JournalEntry.objects.exists()


def test_payments_are_filtered_by_customer_status_method_and_date_and_searched_by_reference(api):
    wanjiku, otieno = CustomerFactory(), CustomerFactory()
    services.record_manual_payment(method="cash", reference="CASH-1", amount="100", customer=wanjiku)
    services.record_manual_payment(method="cheque", reference="CHQ-1", amount="200", customer=otieno)
    services.record_manual_payment(method="bank_transfer", reference="FT-1", amount="300", payer_name="Mama Njeri")

    def refs(query):
        response = api.get(f"/api/v1/payments/?{query}")
        assert response.status_code == 200, response.content
        return sorted(p["reference"] for p in response.json()["results"])

    assert refs(f"customer={wanjiku.pk}") == ["CASH-1"]
    assert refs("status=unmatched") == ["FT-1"]
    assert refs("method=cheque") == ["CHQ-1"]
    assert refs("search=njeri") == ["FT-1"]
    assert refs("search=CHQ") == ["CHQ-1"]
    assert refs("received_after=2000-01-01T00:00:00Z") == ["CASH-1", "CHQ-1", "FT-1"]
    assert refs("received_before=2000-01-01T00:00:00Z") == []


def test_staff_match_a_suspense_payment_then_reverse_it(api):
    customer = CustomerFactory()
    invoice = issued_invoice(customer, "300")
    payment, _ = services.record_manual_payment(method="bank_transfer", reference="FT-9", amount="300")

    matched = api.post(f"/api/v1/payments/{payment.pk}/match/", {"customer": customer.pk, "reason": "slip"})
    assert matched.status_code == 200, matched.content
    assert matched.json()["status"] == "received" and matched.json()["customer"] == customer.pk

    reversed_ = api.post(f"/api/v1/payments/{payment.pk}/reverse/", {"reason": "recalled"})
    assert reversed_.status_code == 200 and reversed_.json()["status"] == "reversed"
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.ISSUED

    again = api.post(f"/api/v1/payments/{payment.pk}/reverse/", {"reason": "again"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "payment_already_reversed"
    no_reason = api.post(f"/api/v1/payments/{payment.pk}/reverse/", {})
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["error"]["fields"]


def test_staff_refund_unapplied_credit_but_not_more(api):
    customer = CustomerFactory()
    payment, _ = services.record_manual_payment(method="cash", reference="R-5", amount="500", customer=customer)

    too_much = api.post(
        f"/api/v1/payments/{payment.pk}/refund/",
        {"amount": "600", "method": "cash", "reference": "RF-9", "reason": "moving"},
        format="json",
    )
    assert too_much.status_code == 409 and too_much.json()["error"]["code"] == "refund_exceeds_credit"
    assert not Refund.objects.exists()

    ok = api.post(
        f"/api/v1/payments/{payment.pk}/refund/",
        {"amount": "500", "method": "cash", "reference": "RF-9", "reason": "moving"},
        format="json",
    )
    assert ok.status_code == 201, ok.content
    assert customer_balance(customer.pk) == 0


def test_payments_cannot_be_edited_or_deleted_through_the_api(api):
    payment, _ = services.record_manual_payment(method="cash", reference="R-6", amount="500")
    assert api.patch(f"/api/v1/payments/{payment.pk}/", {"amount": "1"}, format="json").status_code == 405
    assert api.delete(f"/api/v1/payments/{payment.pk}/").status_code == 405


def test_only_staff_see_payments():
    client = APIClient()
    assert client.get("/api/v1/payments/").status_code in (401, 403)
    user = get_user_model().objects.create_user("subscriber", password="x")
    client.force_authenticate(user)
    assert client.get("/api/v1/payments/").status_code == 403


def test_the_payment_list_stays_within_a_query_budget(api, django_assert_max_num_queries):
    customer = CustomerFactory()
    for n in range(3):
        issued_invoice(customer, "100")
        services.record_manual_payment(method="cash", reference=f"Q-{n}", amount="150", customer=customer)
    with django_assert_max_num_queries(8):
        response = api.get("/api/v1/payments/")
    assert response.status_code == 200 and response.json()["count"] == 3

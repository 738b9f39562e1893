"""The billing API as the back office and integrators use it: invoices, their PDF, credit notes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from wavu.billing import services
from wavu.billing.models import CreditNote, Invoice, InvoiceLine
from wavu.core.models import AuditEvent
from wavu.core.tax import TaxClass
from wavu.ledger.models import JournalEntry
from wavu.testing.factories import CustomerFactory

pytestmark = pytest.mark.django_db

DEC_1, DEC_31 = dt.date(2026, 12, 1), dt.date(2026, 12, 31)


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("accountant", password="x", is_staff=True)


@pytest.fixture
def api(staff):
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture
def issued(december, subscription):
    return services.invoice_subscription_period(subscription, DEC_1, DEC_31)


def error_of(response, status_code):
    assert response.status_code == status_code, response.content
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"])
    return body["error"]


def test_staff_create_a_draft_with_lines_and_issue_it(api, december, customer, subscription):
    response = api.post(
        "/api/v1/invoices/",
        {
            "customer": customer.pk,
            "subscription": subscription.pk,
            "period_start": "2026-12-01",
            "period_end": "2026-12-31",
            "notes": "First month",
            "lines": [
                {"kind": "subscription", "subscription": subscription.pk, "period_start": "2026-12-01",
                 "period_end": "2026-12-31"},
                {"kind": "one_off", "description": "Installation", "unit_price": "1160.00", "tax_class": "standard"},
            ],
        },
        format="json",
    )  # fmt: skip

    assert response.status_code == 201, response.content
    draft = response.json()
    assert draft["status"] == "draft" and draft["number"] is None and len(draft["lines"]) == 2
    assert draft["lines"][0]["description"] == "Home Fibre 20 Mbps, 1 Dec 2026 – 31 Dec 2026"
    assert (draft["lines"][0]["net"], draft["lines"][0]["excise"], draft["lines"][0]["vat"]) == (
        "2248.12",
        "337.22",
        "413.66",
    )

    issued = api.post(f"/api/v1/invoices/{draft['id']}/issue/", {}, format="json")

    assert issued.status_code == 200, issued.content
    body = issued.json()
    assert body["number"] == "INV-000001" and body["status"] == "issued"
    assert (body["total"], body["outstanding"], body["due_date"]) == ("4159.00", "4159.00", "2026-12-08")
    assert body["buyer_pin"] == "A012345678Z"
    assert AuditEvent.objects.get(verb="issue_invoice").actor_label == "user:accountant"


def test_a_draft_can_be_created_and_issued_in_one_request(api, december, customer):
    response = api.post(
        "/api/v1/invoices/",
        {
            "customer": customer.pk,
            "issue": True,
            "lines": [{"kind": "one_off", "description": "Router", "unit_price": "3000", "tax_class": "standard"}],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "issued" and response.json()["total"] == "3000.00"
    assert JournalEntry.objects.filter(kind="invoice").count() == 1


def test_a_line_can_be_added_to_a_draft_but_not_to_an_issued_invoice(api, december, customer, issued):
    draft = services.create_draft_invoice(customer)
    line = {"kind": "adjustment", "description": "Late fee", "unit_price": "200", "tax_class": "standard"}

    added = api.post(f"/api/v1/invoices/{draft.pk}/lines/", line, format="json")
    refused = api.post(f"/api/v1/invoices/{issued.pk}/lines/", line, format="json")

    assert added.status_code == 201 and added.json()["lines"][0]["kind"] == "adjustment"
    assert error_of(refused, 409)["code"] == "invoice_not_draft"
    assert issued.lines.count() == 1


def test_one_bad_line_refuses_the_whole_request_and_creates_nothing(api, december, customer):
    response = api.post(
        "/api/v1/invoices/",
        {
            "customer": customer.pk,
            "issue": True,
            "lines": [
                {"kind": "one_off", "description": "Router", "unit_price": "3000", "tax_class": "standard"},
                {"kind": "one_off", "description": "Cable", "unit_price": "-5", "tax_class": "standard"},
            ],
        },
        format="json",
    )
    error = error_of(response, 400)
    assert "lines.1.unit_price" in error["fields"]
    assert not Invoice.objects.exists() and not InvoiceLine.objects.exists() and not JournalEntry.objects.exists()


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"lines": [{"kind": "one_off", "description": "X", "unit_price": 10.5, "tax_class": "standard"}]}, "lines"),
        ({"lines": [{"kind": "one_off", "description": "X", "unit_price": "1", "tax_class": "gold"}]}, "lines"),
        ({"lines": [{"kind": "subscription"}]}, "lines"),
        ({"lines": [{"kind": "teleport"}]}, "lines"),
        ({"lines": "everything"}, "lines"),
        ({"customer": 999999}, "customer"),
        ({"customer": "abc"}, "customer"),
        ({"period_start": "2026-12-31", "period_end": "2026-12-01"}, "period_end"),
        ({"period_start": "not a date", "period_end": "2026-12-01"}, "period_start"),
        ({"notes": "x" * 301}, "notes"),
    ],
)
def test_bad_invoice_input_answers_400_with_fields_and_changes_nothing(api, december, customer, payload, field):
    response = api.post("/api/v1/invoices/", {"customer": customer.pk} | payload, format="json")
    error = error_of(response, 400)
    assert any(key.startswith(field) for key in error["fields"]), error
    assert not Invoice.objects.exists()


def test_issuing_an_empty_draft_or_an_issued_invoice_is_refused(api, december, customer, issued):
    empty = services.create_draft_invoice(customer)
    assert error_of(api.post(f"/api/v1/invoices/{empty.pk}/issue/", {}), 400)["code"] == "invoice_empty"
    assert error_of(api.post(f"/api/v1/invoices/{issued.pk}/issue/", {}), 409)["code"] == "invoice_not_draft"
    assert error_of(api.post(f"/api/v1/invoices/{empty.pk}/issue/", {"issue_date": "2027-01-01"}), 400)["fields"]
    assert error_of(api.post("/api/v1/invoices/999999/issue/", {}), 404)["code"] == "not_found"
    assert JournalEntry.objects.filter(kind="invoice").count() == 1


def test_invoices_are_listed_filtered_and_searched(api, december, customer, subscription, issued, plan):
    other = CustomerFactory(name="Achieng Otieno")
    draft = services.create_draft_invoice(other)
    services.add_one_off_line(draft, description="Router", unit_price="3000", tax_class=TaxClass.STANDARD)

    def numbers(query):
        response = api.get(f"/api/v1/invoices/{query}")
        assert response.status_code == 200, response.content
        return [row["number"] for row in response.json()["results"]]

    assert len(numbers("")) == 2
    assert numbers(f"?customer={customer.pk}") == ["INV-000001"]
    assert numbers("?status=issued") == ["INV-000001"]
    assert numbers("?status=draft") == [None]
    assert numbers(f"?subscription={subscription.pk}") == ["INV-000001"]
    assert numbers("?issued_from=2026-12-01&issued_to=2026-12-31") == ["INV-000001"]
    assert numbers("?issued_from=2026-12-02") == []
    assert numbers("?search=INV-000001") == ["INV-000001"]
    assert numbers("?search=Achieng") == [None]
    assert numbers(f"?search={customer.account_number}") == ["INV-000001"]
    assert api.get("/api/v1/invoices/?status=bogus").status_code == 400
    assert api.get("/api/v1/invoices/?issued_from=yesterday").status_code == 400
    detail = api.get(f"/api/v1/invoices/{issued.pk}/").json()
    assert detail["lines"][0]["tax_band"] == "B" and detail["customer_name"] == "Wanjiku Kamau"


def test_the_pdf_action_returns_a_pdf(api, issued):
    response = api.get(f"/api/v1/invoices/{issued.pk}/pdf/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf" and response.content.startswith(b"%PDF-")
    assert 'filename="INV-000001.pdf"' in response["Content-Disposition"]
    asked = api.get(f"/api/v1/invoices/{issued.pk}/pdf/", HTTP_ACCEPT="application/pdf")
    assert asked.status_code == 200 and asked.content.startswith(b"%PDF-")
    assert api.get("/api/v1/invoices/999999/pdf/").status_code == 404


def test_voiding_through_the_api_issues_a_full_credit_note(api, issued):
    response = api.post(f"/api/v1/invoices/{issued.pk}/void/", {"reason": "Duplicate"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["number"] == "CN-000001" and response.json()["total"] == "2999.00"
    issued.refresh_from_db()
    assert issued.status == Invoice.Status.VOID
    again = api.post(f"/api/v1/invoices/{issued.pk}/void/", {"reason": "Again"}, format="json")
    assert error_of(again, 409)["code"] == "credit_not_allowed"
    assert error_of(api.post(f"/api/v1/invoices/{issued.pk}/void/", {}, format="json"), 400)["fields"]["reason"]


def test_a_draft_can_be_deleted_but_an_issued_invoice_cannot(api, december, customer, issued):
    draft = services.create_draft_invoice(customer)
    assert api.delete(f"/api/v1/invoices/{draft.pk}/").status_code == 204
    assert error_of(api.delete(f"/api/v1/invoices/{issued.pk}/"), 409)["code"] == "invoice_not_draft"
    assert not Invoice.objects.filter(pk=draft.pk).exists() and Invoice.objects.filter(pk=issued.pk).exists()


def test_credit_notes_are_created_for_an_amount_for_lines_or_in_full(api, december, customer, subscription):
    draft = services.create_draft_invoice(customer)
    services.add_subscription_period_line(draft, subscription, DEC_1, DEC_31)
    services.add_one_off_line(draft, description="Installation", unit_price="1160", tax_class=TaxClass.STANDARD)
    invoice = services.issue_invoice(draft)
    install = invoice.lines.get(position=2)

    by_amount = api.post("/api/v1/credit-notes/", {"invoice": invoice.pk, "reason": "Outage", "amount": "100.00"})
    by_line = api.post(
        "/api/v1/credit-notes/",
        {"invoice": invoice.pk, "reason": "Install waived", "lines": [{"line": install.pk}]},
        format="json",
    )
    in_full = api.post("/api/v1/credit-notes/", {"invoice": invoice.pk, "reason": "Cancelled"}, format="json")

    assert [r.status_code for r in (by_amount, by_line, in_full)] == [201, 201, 201]
    assert by_amount.json()["total"] == "100.00" and by_amount.json()["invoice_number"] == "INV-000001"
    # the 100.00 was shared over both lines (27.89 on the installation), so the rest of that line is 1132.11
    assert by_line.json()["lines"][0]["invoice_line"] == install.pk and by_line.json()["total"] == "1132.11"
    assert in_full.json()["total"] == str(Decimal("4159.00") - Decimal("100.00") - Decimal("1132.11"))
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VOID

    listed = api.get(f"/api/v1/credit-notes/?invoice={invoice.pk}").json()["results"]
    assert {row["number"] for row in listed} == {"CN-000001", "CN-000002", "CN-000003"}
    assert api.get("/api/v1/credit-notes/?search=CN-000002").json()["count"] == 1
    pdf = api.get(f"/api/v1/credit-notes/{listed[0]['id']}/pdf/")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")


@pytest.mark.parametrize(
    "payload, status_code, code",
    [
        ({"reason": "Too much", "amount": "3000.00"}, 400, "credit_exceeds_invoice"),
        ({"reason": "Float", "amount": 10.5}, 400, "invalid"),
        ({"reason": "Negative", "amount": "-1"}, 400, "invalid"),
        ({"reason": "Both", "amount": "1", "lines": [{"line": 1}]}, 400, "invalid"),
        ({"reason": "", "amount": "1"}, 400, "invalid"),
        ({"reason": "Stranger line", "lines": [{"line": 999999, "amount": "1"}]}, 400, "invalid"),
        ({"reason": "Empty lines", "lines": []}, 400, "invalid"),
    ],
)
def test_bad_credit_note_requests_answer_4xx_and_change_nothing(api, issued, payload, status_code, code):
    response = api.post("/api/v1/credit-notes/", {"invoice": issued.pk} | payload, format="json")
    assert error_of(response, status_code)["code"] == code
    assert not CreditNote.objects.exists() and not JournalEntry.objects.filter(kind="credit_note").exists()
    issued.refresh_from_db()
    assert issued.amount_credited == 0


def test_a_draft_or_an_unknown_invoice_cannot_be_credited_over_the_api(api, december, customer):
    draft = services.create_draft_invoice(customer)
    assert error_of(api.post("/api/v1/credit-notes/", {"invoice": draft.pk, "reason": "x"}), 409)["code"] == (
        "credit_not_allowed"
    )
    assert error_of(api.post("/api/v1/credit-notes/", {"invoice": 999999, "reason": "x"}), 400)["fields"]["invoice"]


def test_credit_notes_cannot_be_changed_or_deleted_over_the_api(api, issued):
    note = services.issue_credit_note(issued, reason="Outage", amount="10")
    assert api.patch(f"/api/v1/credit-notes/{note.pk}/", {"reason": "x"}).status_code == 405
    assert api.delete(f"/api/v1/credit-notes/{note.pk}/").status_code == 405
    assert api.put(f"/api/v1/invoices/{issued.pk}/", {}).status_code == 405


def test_the_billing_api_is_for_staff_only(december, issued):
    client = APIClient()
    assert client.get("/api/v1/invoices/").status_code in (401, 403)
    outsider = get_user_model().objects.create_user("subscriber", password="x")
    client.force_authenticate(outsider)
    assert client.get(f"/api/v1/invoices/{issued.pk}/pdf/").status_code == 403


def test_the_openapi_schema_describes_the_billing_endpoints(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/v1/invoices/", "/api/v1/invoices/{id}/pdf/", "/api/v1/credit-notes/"} <= set(paths)


def test_listing_invoices_costs_the_same_number_of_queries_for_3_or_30(
    api, december, customer, django_assert_max_num_queries
):
    def make(count):
        for _ in range(count):
            draft = services.create_draft_invoice(customer)
            services.add_one_off_line(draft, description="Router", unit_price="3000", tax_class=TaxClass.STANDARD)
            services.add_one_off_line(draft, description="Cable", unit_price="100", tax_class=TaxClass.STANDARD)
            services.issue_invoice(draft)

    make(3)
    with django_assert_max_num_queries(8):
        assert api.get("/api/v1/invoices/").json()["count"] == 3
    make(27)
    with django_assert_max_num_queries(8):
        assert api.get("/api/v1/invoices/").json()["count"] == 30

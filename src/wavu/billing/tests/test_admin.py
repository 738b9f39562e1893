"""The billing admin: invoices and credit notes are shown, searched and printed, never edited."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model

from wavu.billing import services
from wavu.billing.models import Invoice
from wavu.core.tax import TaxClass

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "x"))
    return client


@pytest.fixture
def issued(december, subscription):
    return services.invoice_subscription_period(subscription, dt.date(2026, 12, 1), dt.date(2026, 12, 31))


def test_invoices_are_listed_searched_and_shown_read_only(admin_client, issued, customer):
    listing = admin_client.get("/admin/billing/invoice/")
    assert listing.status_code == 200 and b"INV-000001" in listing.content
    for term in ("INV-000001", customer.account_number, "Wanjiku"):
        assert b"INV-000001" in admin_client.get("/admin/billing/invoice/", {"q": term}).content
    assert b"INV-000001" not in admin_client.get("/admin/billing/invoice/", {"q": "nobody"}).content
    assert admin_client.get("/admin/billing/invoice/", {"status__exact": "issued"}).status_code == 200

    page = admin_client.get(f"/admin/billing/invoice/{issued.pk}/change/")
    assert page.status_code == 200 and b"Home Fibre 20 Mbps" in page.content
    assert b'name="_save"' not in page.content  # view only

    edit = admin_client.post(f"/admin/billing/invoice/{issued.pk}/change/", {"notes": "changed", "total": "1"})
    assert edit.status_code == 403
    assert admin_client.get("/admin/billing/invoice/add/").status_code == 403
    assert admin_client.post(f"/admin/billing/invoice/{issued.pk}/delete/", {"post": "yes"}).status_code == 403
    issued.refresh_from_db()
    assert issued.notes == "" and str(issued.total) == "2999.00"


def test_the_admin_serves_the_invoice_and_credit_note_pdfs(admin_client, issued):
    note = services.issue_credit_note(issued, reason="Outage", amount="100")
    invoice_pdf = admin_client.get(f"/admin/billing/invoice/{issued.pk}/pdf/")
    note_pdf = admin_client.get(f"/admin/billing/creditnote/{note.pk}/pdf/")
    assert invoice_pdf.status_code == 200 and invoice_pdf.content.startswith(b"%PDF-")
    assert note_pdf.status_code == 200 and note_pdf.content.startswith(b"%PDF-")


def test_credit_notes_are_listed_searched_and_never_edited(admin_client, issued):
    note = services.issue_credit_note(issued, reason="Outage", amount="100")
    assert b"CN-000001" in admin_client.get("/admin/billing/creditnote/", {"q": "INV-000001"}).content
    assert admin_client.get(f"/admin/billing/creditnote/{note.pk}/change/").status_code == 200
    assert admin_client.post(f"/admin/billing/creditnote/{note.pk}/change/", {"reason": "x"}).status_code == 403
    assert admin_client.post(f"/admin/billing/creditnote/{note.pk}/delete/", {"post": "yes"}).status_code == 403


def test_the_issue_action_issues_drafts_through_the_service_and_reports_refusals(admin_client, december, customer):
    good = services.create_draft_invoice(customer)
    services.add_one_off_line(good, description="Router", unit_price="3000", tax_class=TaxClass.STANDARD)
    empty = services.create_draft_invoice(customer)

    response = admin_client.post(
        "/admin/billing/invoice/", {"action": "issue_selected", "_selected_action": [good.pk, empty.pk]}, follow=True
    )

    assert response.status_code == 200
    good.refresh_from_db()
    empty.refresh_from_db()
    assert good.number == "INV-000001" and empty.status == Invoice.Status.DRAFT
    assert b"Issued 1 invoice" in response.content and b"at least one line" in response.content


def test_the_discard_action_deletes_drafts_only(admin_client, december, customer, issued):
    draft = services.create_draft_invoice(customer)
    admin_client.post(
        "/admin/billing/invoice/", {"action": "discard_selected", "_selected_action": [draft.pk, issued.pk]}
    )
    assert not Invoice.objects.filter(pk=draft.pk).exists() and Invoice.objects.filter(pk=issued.pk).exists()

"""The invoice PDF carries everything a Kenyan tax invoice must show, and how to pay it."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from django.conf import settings
from pypdf import PdfReader

from wavu.billing import services
from wavu.billing.pdf import render_credit_note_pdf, render_invoice_pdf
from wavu.core.tax import TaxClass
from wavu.payments.services import record_manual_payment
from wavu.testing.factories import CustomerFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

DEC_1, DEC_31 = dt.date(2026, 12, 1), dt.date(2026, 12, 31)


def pdf_text(data: bytes) -> str:
    assert data.startswith(b"%PDF-")
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    return re.sub(r"\s+", " ", text)


@pytest.fixture
def invoice(december, subscription, customer):
    draft = services.create_draft_invoice(customer, subscription=subscription, period_start=DEC_1, period_end=DEC_31)
    services.add_subscription_period_line(draft, subscription, DEC_1, DEC_31)
    services.add_one_off_line(draft, description="Installation", unit_price="1160.00", tax_class=TaxClass.STANDARD)
    return services.issue_invoice(draft)


def test_the_invoice_pdf_shows_supplier_buyer_lines_taxes_totals_and_how_to_pay(invoice, customer):
    record_manual_payment(method="cash", reference="RCPT-9", amount="1000.00", customer=customer)
    invoice.refresh_from_db()

    text = pdf_text(render_invoice_pdf(invoice))

    wavu = settings.WAVU
    for expected in (
        "TAX INVOICE",
        wavu["ISP_NAME"],
        wavu["ISP_ADDRESS"],
        f"KRA PIN: {wavu['ISP_KRA_PIN']}",
        "Wanjiku Kamau",
        "KRA PIN: A012345678Z",
        "Kileleshwa, Othaya Rd, Hse 4",
        "Invoice number INV-000001",
        "Invoice date 1 Dec 2026",
        "Period 1 Dec 2026 – 31 Dec 2026",
        "Due date 8 Dec 2026",
        "Home Fibre 20 Mbps",
        "Installation",
        # qty, unit price, net, excise, VAT, total and band of the KES 2,999 line
        "1 2,999.00 2,248.12 337.22 413.66 2,999.00 B",
        "1 1,160.00 1,000.00 0.00 160.00 1,160.00 B",
        # the tax table: band, rates, taxable value, excise, VAT-able value, VAT, total
        "B 16% 15% 2,248.12 337.22 2,585.34 413.66 2,999.00",
        "B 16% 0% 1,000.00 0.00 1,000.00 160.00 1,160.00",
        "Net amount KES 3,248.12",
        "Excise duty KES 337.22",
        "VAT KES 573.66",
        "Total KES 4,159.00",
        "Amount paid KES 1,000.00",
        "Outstanding KES 3,159.00",
        f"M-Pesa Paybill {wavu['PAYBILL_NUMBER']}, Account {customer.account_number}",
    ):
        assert expected in text, expected


def test_a_buyer_without_a_pin_gets_no_pin_line_and_a_draft_is_not_a_tax_invoice(december, plan):
    walk_in = CustomerFactory(name="Otieno Odhiambo")
    draft = services.create_draft_invoice(walk_in)
    services.add_subscription_period_line(draft, SubscriptionFactory(customer=walk_in, plan=plan), DEC_1, DEC_31)

    draft_text = pdf_text(render_invoice_pdf(draft))
    assert "DRAFT INVOICE — NOT A TAX INVOICE" in draft_text and "TAX INVOICE" not in draft_text.replace(
        "NOT A TAX INVOICE", ""
    )

    text = pdf_text(render_invoice_pdf(services.issue_invoice(draft)))
    assert "Otieno Odhiambo" in text
    assert text.count("KRA PIN") == 1  # the supplier's only


def test_a_void_invoice_says_so_and_lists_its_credit_note(invoice):
    services.void_invoice(invoice, "Wrong customer")
    text = pdf_text(render_invoice_pdf(invoice))
    assert "VOID" in text and "CN-000001" in text and "Wrong customer" in text
    assert "Outstanding KES 0.00" in text


def test_the_credit_note_pdf_names_the_invoice_it_credits_and_its_taxes(invoice):
    note = services.issue_credit_note(invoice, reason="Outage 3–5 Dec", lines={invoice.lines.get(position=1).pk: None})

    text = pdf_text(render_credit_note_pdf(note))

    for expected in (
        "CREDIT NOTE",
        settings.WAVU["ISP_KRA_PIN"],
        "Credit note number CN-000001",
        "Credits invoice INV-000001 of 1 Dec 2026",
        "Outage 3–5 Dec",
        "KRA PIN: A012345678Z",
        "2,248.12 337.22 413.66 2,999.00 B",
        "Total credited KES 2,999.00",
    ):
        assert expected in text, expected

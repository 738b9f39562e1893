"""An issued invoice, its lines and every credit note are immutable: corrections are credit notes.

The services refuse, and underneath them the database refuses too, whatever ORM path is tried.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from wavu.billing import services, settlement
from wavu.billing.models import CreditNote, CreditNoteLine, Invoice, InvoiceLine
from wavu.core.tax import TaxClass

pytestmark = pytest.mark.django_db


@pytest.fixture
def issued(december, subscription):
    return services.invoice_subscription_period(subscription, dt.date(2026, 12, 1), dt.date(2026, 12, 31))


def refused(action) -> None:
    """`action` raises IntegrityError and its transaction is rolled back."""
    with pytest.raises(IntegrityError), transaction.atomic():
        action()


def test_saving_an_issued_invoice_with_a_new_total_is_refused_and_nothing_changes(issued):
    def edit_total():
        invoice = Invoice.objects.get(pk=issued.pk)
        invoice.total = Decimal("1.00")
        invoice.save()

    def rename_buyer():
        invoice = Invoice.objects.get(pk=issued.pk)
        invoice.buyer_name = "Someone Else"
        invoice.save(update_fields=["buyer_name"])

    refused(edit_total)
    refused(rename_buyer)
    refused(lambda: Invoice.objects.filter(pk=issued.pk).update(total=Decimal("1.00")))
    refused(lambda: Invoice.objects.filter(pk=issued.pk).update(number="INV-999999"))
    refused(lambda: Invoice.objects.filter(pk=issued.pk).update(issue_date=dt.date(2020, 1, 1)))

    fresh = Invoice.objects.get(pk=issued.pk)
    assert (fresh.total, fresh.number, fresh.buyer_name, fresh.issue_date) == (
        Decimal("2999.00"),
        "INV-000001",
        "Wanjiku Kamau",
        dt.date(2026, 12, 1),
    )


def test_deleting_an_issued_invoice_is_refused_and_it_stays(issued):
    refused(lambda: Invoice.objects.get(pk=issued.pk).delete())
    refused(lambda: Invoice.objects.filter(pk=issued.pk).delete())
    refused(lambda: InvoiceLine.objects.filter(invoice=issued).delete())  # clearing the way, then...
    refused(lambda: Invoice.objects.filter(pk=issued.pk)._raw_delete(Invoice.objects.db))
    assert Invoice.objects.filter(pk=issued.pk).exists() and issued.lines.count() == 1


def test_the_lines_of_an_issued_invoice_cannot_be_edited_added_or_deleted(issued):
    line = issued.lines.get()

    def edit_line():
        row = InvoiceLine.objects.get(pk=line.pk)
        row.gross, row.net = Decimal("1999.00"), Decimal("1248.12")
        row.save()

    def add_line():
        row = InvoiceLine.objects.get(pk=line.pk)
        row.pk, row.position = None, 2
        row.save()

    refused(edit_line)
    refused(lambda: InvoiceLine.objects.filter(pk=line.pk).update(description="Nothing"))
    refused(add_line)
    refused(lambda: InvoiceLine.objects.get(pk=line.pk).delete())

    assert list(issued.lines.values_list("description", "gross")) == [
        ("Home Fibre 20 Mbps, 1 Dec 2026 – 31 Dec 2026", Decimal("2999.00"))
    ]


def test_the_services_refuse_to_touch_an_issued_invoice(issued):
    with pytest.raises(services.InvoiceNotDraft):
        services.add_one_off_line(issued, description="Sneaky", unit_price="1", tax_class=TaxClass.STANDARD)
    with pytest.raises(services.InvoiceNotDraft):
        services.discard_draft_invoice(issued)
    with pytest.raises(services.InvoiceNotDraft):
        services.issue_invoice(issued)
    assert issued.lines.count() == 1


def test_settlement_still_moves_on_an_issued_invoice(issued):
    # paid/credited and the status derived from them are the only columns that move
    with transaction.atomic():
        settlement.settle(Invoice.objects.select_for_update().get(pk=issued.pk), paid_delta=Decimal("999.00"))
    fresh = Invoice.objects.get(pk=issued.pk)
    assert fresh.status == Invoice.Status.PARTIALLY_PAID and fresh.amount_paid == Decimal("999.00")


def test_a_void_invoice_can_no_longer_change_at_all(issued):
    services.void_invoice(issued, "Connection never installed")
    refused(lambda: Invoice.objects.filter(pk=issued.pk).update(status=Invoice.Status.ISSUED, amount_credited=0))
    assert Invoice.objects.get(pk=issued.pk).status == Invoice.Status.VOID


def test_a_credit_note_and_its_lines_cannot_be_edited_or_deleted(issued):
    note = services.issue_credit_note(issued, reason="Outage 3–5 Dec", amount="500.00")
    cn_line = note.lines.get()

    def edit_note():
        row = CreditNote.objects.get(pk=note.pk)
        row.total = Decimal("5000.00")
        row.save()

    refused(edit_note)
    refused(lambda: CreditNote.objects.filter(pk=note.pk).update(reason="changed"))
    refused(lambda: CreditNoteLine.objects.filter(pk=cn_line.pk).update(description="changed"))
    refused(lambda: CreditNoteLine.objects.filter(pk=cn_line.pk).delete())
    refused(lambda: CreditNote.objects.filter(pk=note.pk)._raw_delete(CreditNote.objects.db))

    fresh = CreditNote.objects.get(pk=note.pk)
    assert (fresh.total, fresh.reason, fresh.lines.count()) == (Decimal("500.00"), "Outage 3–5 Dec", 1)


def test_a_draft_can_still_be_edited_and_deleted(december, customer):
    draft = services.create_draft_invoice(customer)
    services.add_one_off_line(draft, description="Call-out", unit_price="500", tax_class=TaxClass.STANDARD)
    Invoice.objects.filter(pk=draft.pk).update(notes="changed while a draft")
    services.discard_draft_invoice(draft)
    assert not Invoice.objects.filter(pk=draft.pk).exists()

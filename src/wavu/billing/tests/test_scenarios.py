"""A subscriber's first three months, travelling through time: exact invoices, credits and balances."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine

from wavu.billing import services
from wavu.billing.models import CreditNote, Invoice
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, customer_credit, trial_balance
from wavu.payments.services import record_manual_payment

from .conftest import at

pytestmark = pytest.mark.django_db


def every_entry_balances():
    # summed in Python: SQLite's SUM() works in binary floating point
    entries = JournalEntry.objects.prefetch_related("postings")
    return all(sum(p.amount for p in e.postings.all()) == 0 for e in entries) and trial_balance()["balanced"]


def one_entry_per_document():
    invoices = Invoice.objects.exclude(status=Invoice.Status.DRAFT)
    notes = CreditNote.objects.all()
    return all(
        JournalEntry.objects.filter(source_type="billing.invoice", source_id=str(i.pk)).count() == 1 for i in invoices
    ) and all(
        JournalEntry.objects.filter(source_type="billing.creditnote", source_id=str(n.pk)).count() == 1 for n in notes
    )


def test_three_months_of_home_fibre_with_an_outage_credit_and_a_late_payment(customer, subscription):
    def on(day):
        return time_machine.travel(at(day), tick=False)

    with on(dt.date(2026, 12, 1)):
        december = services.invoice_subscription_period(subscription, dt.date(2026, 12, 1), dt.date(2026, 12, 31))
    assert customer_balance(customer.pk) == Decimal("2999.00")

    with on(dt.date(2026, 12, 5)):
        record_manual_payment(method="cash", reference="RCPT-1205", amount="2999.00", customer=customer)
    december.refresh_from_db()
    assert december.status == Invoice.Status.PAID and customer_balance(customer.pk) == 0

    with on(dt.date(2027, 1, 1)):
        january = services.invoice_subscription_period(subscription, dt.date(2027, 1, 1), dt.date(2027, 1, 31))
    with on(dt.date(2027, 1, 6)):
        outage = services.issue_credit_note(january, reason="Fibre cut 3–5 Jan", amount="500.00")
    assert outage.number == "CN-000001" and customer_balance(customer.pk) == Decimal("2499.00")

    with on(dt.date(2027, 1, 20)):
        record_manual_payment(method="bank_transfer", reference="FT-0120", amount="3000.00", customer=customer)
    january.refresh_from_db()
    assert january.status == Invoice.Status.PAID and january.amount_paid == Decimal("2499.00")
    assert customer_credit(customer.pk) == Decimal("501.00") and customer_balance(customer.pk) == Decimal("-501.00")

    with on(dt.date(2027, 2, 1)):
        february = services.invoice_subscription_period(subscription, dt.date(2027, 2, 1), dt.date(2027, 2, 28))
    assert february.number == "INV-000003" and february.lines.get().description.endswith("1 Feb 2027 – 28 Feb 2027")
    assert (february.amount_paid, february.status) == (Decimal("501.00"), Invoice.Status.PARTIALLY_PAID)
    assert customer_balance(customer.pk) == Decimal("2498.00") == february.outstanding

    # December's invoice is past the due date but still within the credit-note window
    with on(dt.date(2027, 2, 10)):
        services.void_invoice(december, "Billed before installation")
    december.refresh_from_db()
    february.refresh_from_db()
    assert december.status == Invoice.Status.VOID
    # the 2,999 paid on December was released and then paid February's outstanding 2,498
    assert february.status == Invoice.Status.PAID
    assert customer_credit(customer.pk) == Decimal("501.00") and customer_balance(customer.pk) == Decimal("-501.00")

    assert [i.number for i in Invoice.objects.order_by("issue_date")] == ["INV-000001", "INV-000002", "INV-000003"]
    assert every_entry_balances() and one_entry_per_document()

"""Invoice numbers stay gap-free and unique when many issuers race (PostgreSQL row locks)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from wavu.billing import services
from wavu.billing.models import CreditNote, Invoice
from wavu.core.models import Sequence
from wavu.core.tax import TaxClass
from wavu.ledger.models import JournalEntry
from wavu.testing.concurrency import side_by_side
from wavu.testing.factories import CustomerFactory, PlanFactory, SubscriptionFactory

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

ISSUERS = 20


class Abandon(Exception):
    """An issuer whose surrounding work fails after issuing, so its transaction rolls back."""


def run_together(jobs):
    """Run callables in threads released at the same moment; return the exceptions they raised."""
    return side_by_side(*jobs)[1]


def drafts(count):
    customers = [CustomerFactory() for _ in range(4)]  # several issuers share a customer (and its lock)
    made = []
    for n in range(count):
        draft = services.create_draft_invoice(customers[n % len(customers)])
        services.add_one_off_line(draft, description=f"Charge {n}", unit_price="100.00", tax_class=TaxClass.STANDARD)
        made.append(draft.pk)
    return made


def test_twenty_concurrent_issuers_get_numbers_one_to_twenty_without_gaps(reference_data):
    ids = drafts(ISSUERS)

    errors = run_together([lambda pk=pk: services.issue_invoice(Invoice.objects.get(pk=pk)) for pk in ids])

    assert errors == []
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-{n:06d}" for n in range(1, ISSUERS + 1)]
    assert Sequence.objects.get(name="invoice:INV").next_value == ISSUERS + 1
    assert JournalEntry.objects.filter(kind=JournalEntry.Kind.INVOICE).count() == ISSUERS
    assert set(Invoice.objects.values_list("total", flat=True)) == {Decimal("100.00")}


def test_issuers_that_roll_back_leave_no_gap_among_the_others(reference_data):
    ids = drafts(ISSUERS)
    abandoned = set(ids[::4])

    def issue(pk):
        with transaction.atomic():
            services.issue_invoice(Invoice.objects.get(pk=pk))
            if pk in abandoned:
                raise Abandon(pk)

    errors = run_together([lambda pk=pk: issue(pk) for pk in ids])

    assert len(errors) == len(abandoned) and all(isinstance(e, Abandon) for e in errors)
    kept = ISSUERS - len(abandoned)
    numbers = sorted(Invoice.objects.exclude(number=None).values_list("number", flat=True))
    assert numbers == [f"INV-{n:06d}" for n in range(1, kept + 1)]
    assert set(Invoice.objects.filter(pk__in=abandoned).values_list("status", flat=True)) == {Invoice.Status.DRAFT}
    assert JournalEntry.objects.filter(kind=JournalEntry.Kind.INVOICE).count() == kept


def test_two_issuers_racing_for_the_same_draft_issue_it_once(reference_data):
    (pk,) = drafts(1)

    errors = run_together([lambda: services.issue_invoice(Invoice.objects.get(pk=pk))] * 2)

    assert len(errors) == 1 and isinstance(errors[0], services.InvoiceNotDraft)
    assert Invoice.objects.get(pk=pk).number == "INV-000001"
    assert JournalEntry.objects.filter(kind=JournalEntry.Kind.INVOICE).count() == 1
    assert Sequence.objects.get(name="invoice:INV").next_value == 2


def test_two_credit_notes_racing_cannot_together_credit_more_than_the_invoice(reference_data):
    (pk,) = drafts(1)
    services.issue_invoice(Invoice.objects.get(pk=pk))

    def credit():
        services.issue_credit_note(Invoice.objects.get(pk=pk), reason="double click", amount="60.00")

    errors = run_together([credit, credit])

    assert len(errors) == 1 and isinstance(errors[0], services.CreditExceedsInvoice)
    invoice = Invoice.objects.get(pk=pk)
    assert invoice.amount_credited == Decimal("60.00")
    assert list(CreditNote.objects.values_list("number", flat=True)) == ["CN-000001"]


def test_a_subscription_period_billed_by_two_runs_at_once_is_invoiced_once(reference_data):
    subscription = SubscriptionFactory(plan=PlanFactory(with_price=Decimal("2999.00")))

    def bill():
        services.invoice_subscription_period(subscription, dt.date(2026, 12, 1), dt.date(2026, 12, 31))

    with time_machine.travel(timezone.make_aware(dt.datetime(2026, 12, 1, 6, 0)), tick=True):
        errors = run_together([bill] * 4)

    assert len(errors) == 3 and all(isinstance(e, services.AlreadyInvoiced) for e in errors)
    assert Invoice.objects.get().number == "INV-000001"
    assert JournalEntry.objects.filter(kind=JournalEntry.Kind.INVOICE).count() == 1

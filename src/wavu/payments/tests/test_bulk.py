"""`payments.bulk.record_payments` books a batch of receipts exactly as `record_payment` would one by
one: the same payments, allocations, journal entries, postings, invoice settlements and audit events,
with duplicates, mismatches and bad input settled the same way, in a fixed number of statements."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from wavu.billing.models import Invoice
from wavu.core.models import AuditEvent
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.payments.bulk import Receipt, Recorded, record_payments
from wavu.payments.models import Allocation, Payment
from wavu.payments.services import DuplicateReferenceMismatch, record_payment
from wavu.testing.factories import CustomerFactory

from .factories import issued_invoice

pytestmark = pytest.mark.django_db


class _Undo(Exception):
    pass


def _state() -> dict:
    """Everything the writers touch, without ids or timestamps (receipts and invoice numbers instead)."""
    refs = dict(Payment.objects.values_list("pk", "reference"))
    numbers = dict(Invoice.objects.values_list("pk", "number"))
    allocations = {
        a.pk: (refs[a.payment_id], numbers[a.invoice_id], a.amount) for a in Allocation.objects.order_by("pk")
    }

    def source(entry):
        if entry.source_type == "payments.payment":
            return refs.get(int(entry.source_id))
        if entry.source_type == "payments.allocation":
            return allocations.get(int(entry.source_id))
        return numbers.get(int(entry.source_id))

    return {
        "payments": sorted(
            (
                p.reference,
                p.source,
                p.customer_id,
                p.amount,
                p.status,
                p.amount_allocated,
                p.amount_refunded,
                p.payer_name,
                p.payer_phone,
                p.account_reference,
                p.received_at,
                p.recorded_by,
                p.notes,
            )
            for p in Payment.objects.all()
        ),  # fmt: skip
        "allocations": sorted(allocations.values()),
        "invoices": sorted(Invoice.objects.values_list("number", "status", "amount_paid", "amount_credited")),
        "entries": sorted(
            (
                e.kind,
                e.memo,
                e.currency,
                e.source_type,
                str(source(e)),
                e.actor_label,
                tuple(sorted((p.account.code, p.customer_id, p.amount) for p in e.postings.all())),
            )
            for e in JournalEntry.objects.prefetch_related("postings__account")
        ),  # fmt: skip
        "audit": sorted(
            (
                a.action,
                a.verb,
                a.object_type,
                refs.get(int(a.object_id)),
                a.object_repr,
                tuple(sorted((k, str(v)) for k, v in (a.after or {}).items() if k not in ("id", "recorded_at"))),
            )
            for a in AuditEvent.objects.filter(object_type="payments.payment")
        ),  # fmt: skip
    }


def _one_by_one(receipts: list[Receipt]) -> list[tuple[str, str | None]]:
    outcomes = []
    for r in receipts:
        try:
            payment, created = record_payment(
                method=r.method, reference=r.reference, amount=r.amount, source=r.source, customer=r.customer_id,
                received_at=r.received_at, payer_name=r.payer_name, payer_phone=r.payer_phone,
                account_reference=r.account_reference,
            )  # fmt: skip
        except DuplicateReferenceMismatch:
            outcomes.append(("mismatch", r.reference))
        except ValidationError:
            outcomes.append(("rejected", None))
        else:
            outcomes.append(("created" if created else "duplicate", payment.reference))
    return outcomes


def _in_bulk(receipts: list[Receipt]) -> list[tuple[str, str | None]]:
    results = record_payments(receipts)
    refs = dict(Payment.objects.values_list("pk", "reference"))
    return [(r.outcome, refs.get(r.payment_id) if r.outcome != "rejected" else None) for r in results]


def _run_and_undo(writer, receipts):
    """Run `writer`, capture what it wrote and answered, then roll it all back."""
    captured = {}
    try:
        with transaction.atomic():
            captured["answers"] = writer(receipts)
            captured["state"] = _state()
            raise _Undo
    except _Undo:
        pass
    return captured


@pytest.fixture
def books(reference_data):
    """Three customers: one with two open invoices (oldest first), one with a part-paid invoice and a
    receipt already on file, one with nothing open."""
    day = dt.date(2026, 11, 2)
    amina, baraka, chebet = (CustomerFactory(account_number=n) for n in ("10008", "10016", "10024"))
    issued_invoice(amina, "1200", issued_on=day)
    issued_invoice(amina, "800", issued_on=day + dt.timedelta(days=3))
    issued_invoice(baraka, "2999", issued_on=day)
    record_payment(method="mpesa", source="600100", reference="SKA0000001", amount="999.00", customer=baraka.pk)
    return amina, baraka, chebet


def _receipts(amina, baraka, chebet) -> list[Receipt]:
    at = dt.datetime(2026, 11, 20, 9, 15, tzinfo=dt.UTC)

    def r(ref, amount, customer, **kw):
        return Receipt(method="mpesa", source="600100", reference=ref, amount=Decimal(amount),
                       customer_id=customer.pk if customer else None, received_at=at, payer_name="JOHN DOE",
                       payer_phone="2547 ***** 126", account_reference=kw.pop("account", "10008"), **kw)  # fmt: skip

    return [
        r("SKB0000001", "1000.00", amina),  # part of the oldest invoice
        r("SKB0000002", "1500.00", amina),  # the rest of it, all of the second, 300 left as credit
        r("SKB0000001", "1000.00", amina),  # Safaricom redelivers: duplicate
        r("SKB0000003", "2000.00", baraka),  # finishes the part-paid invoice, 0.00 left… and no more
        r("SKA0000001", "999.00", baraka),  # the receipt on file: duplicate
        r("SKA0000001", "5.00", baraka),  # the same receipt with another amount: mismatch
        r("SKB0000004", "250.50", None, account="NOBODY"),  # nobody matches: suspense
        r("SKB0000005", "700.00", chebet),  # nothing open: credit
        r("SKB0000006", "-3", chebet),  # bad input: rejected
        r("SKB0000002", "1500.00", chebet),  # a copy naming another customer: mismatch
    ]


def test_a_batch_writes_exactly_what_recording_each_receipt_in_turn_writes(books):
    receipts = _receipts(*books)

    one_by_one = _run_and_undo(_one_by_one, receipts)
    in_bulk = _run_and_undo(_in_bulk, receipts)

    assert in_bulk["answers"] == one_by_one["answers"]
    assert [a[0] for a in in_bulk["answers"]] == [
        "created", "created", "duplicate", "created", "duplicate", "mismatch", "created", "created", "rejected",
        "mismatch",
    ]  # fmt: skip
    for part in ("payments", "allocations", "invoices", "entries", "audit"):
        assert in_bulk["state"][part] == one_by_one["state"][part], part


def test_a_batch_keeps_the_books_balanced_and_each_customer_credited_once(books):
    amina, baraka, chebet = books

    results = record_payments(_receipts(amina, baraka, chebet))

    assert Payment.objects.count() == 1 + 5
    assert JournalEntry.objects.filter(kind="payment").count() == 1 + 5
    assert customer_balance(amina.pk) == Decimal("-500.00")  # 2,500 paid on 2,000 owed
    assert customer_balance(baraka.pk) == Decimal("0.00")
    assert customer_balance(chebet.pk) == Decimal("-700.00")
    assert trial_balance()["balanced"]
    for invoice in Invoice.objects.all():
        assert invoice.amount_paid == sum(a.amount for a in invoice.allocations.all())
    for payment in Payment.objects.all():
        assert payment.amount_allocated == sum((a.amount for a in payment.allocations.all()), Decimal(0))
    assert results[8] == Recorded("rejected", None, "the amount must be more than zero, got -3")


def test_a_batch_of_a_hundred_receipts_costs_about_the_statements_of_a_batch_of_ten(reference_data):
    customers = [CustomerFactory() for _ in range(10)]
    for customer in customers:
        issued_invoice(customer, "500")

    def batch(prefix: str, n: int) -> list[Receipt]:
        return [
            Receipt(method="mpesa", source="600100", reference=f"{prefix}{i:06d}", amount=Decimal("300.00"),
                    customer_id=customers[i % 10].pk)
            for i in range(n)
        ]  # fmt: skip

    with CaptureQueriesContext(connection) as small:
        record_payments(batch("SKS", 10))
    with CaptureQueriesContext(connection) as large:
        record_payments(batch("SKL", 100))

    if connection.vendor == "postgresql":  # one statement per table, whatever the size
        assert len(large.captured_queries) == len(small.captured_queries) <= 20
    else:  # SQLite: multi-row INSERTs of at most 64 rows
        assert len(small.captured_queries) <= 30 and len(large.captured_queries) <= 2 * len(small.captured_queries)
    assert Payment.objects.count() == 110 and trial_balance()["balanced"]


def test_an_empty_or_all_bad_batch_writes_nothing(reference_data):
    assert record_payments([]) == []
    results = record_payments([Receipt(method="mpesa", reference="", amount=Decimal("10"))])
    assert results[0].outcome == "rejected" and "reference is required" in results[0].message
    assert not Payment.objects.exists() and not JournalEntry.objects.exists()

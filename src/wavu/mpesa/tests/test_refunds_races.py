"""Races on PostgreSQL: Safaricom redelivers a refund result, workers overlap, staff double-click, and the
books still change once."""

from __future__ import annotations

import functools
from decimal import Decimal

import pytest

from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_credit, trial_balance
from wavu.mpesa import refunds, services
from wavu.mpesa.models import InboundCallback, RefundRequest
from wavu.mpesa.tests.test_c2b_hooks import SAFARICOM_IP
from wavu.mpesa.tests.test_refunds import (
    FakeRefundDaraja,
    b2c_result,
    make_b2c,
    make_paybill,
    mpesa_payment,
    reversal_result,
)
from wavu.payments import services as payments
from wavu.payments.models import Allocation, Payment, Refund
from wavu.payments.tests.factories import issued_invoice
from wavu.testing.concurrency import race, side_by_side
from wavu.testing.factories import CustomerFactory

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def stored_copies(channel, kind: str, body: str, count: int = 20) -> list[InboundCallback]:
    """`count` deliveries of the same result, each stored as its own row (as the hook does)."""
    request = services.HookRequest(method="POST", body=body.encode(), headers={}, source_ip=SAFARICOM_IP)
    return [services.store_callback(channel, kind, request) for _ in range(count)]


def process_all_at_once(callbacks: list[InboundCallback]):
    return side_by_side(*(functools.partial(services.process_callback, c.pk) for c in callbacks))


def test_a_reversal_result_delivered_20_times_at_once_reverses_the_payment_once(reference_data):
    customer = CustomerFactory(account_number="10008")
    invoice = issued_invoice(customer, "1000.00")
    paybill = make_paybill()
    payment = mpesa_payment(customer, "1500.00", "SLR7RACE01", paybill)
    request = refunds.request_reversal(payment, reason="Paid twice", client_factory=FakeRefundDaraja())
    callbacks = stored_copies(paybill, "reversal_result", reversal_result(request))

    results, errors = process_all_at_once(callbacks)

    assert errors == [] and len(results) == 20
    statuses = sorted(InboundCallback.objects.values_list("status", flat=True))
    assert statuses == ["duplicate"] * 19 + ["processed"]
    request.refresh_from_db()
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (request.status, payment.status, invoice.amount_paid) == ("completed", "reversed", Decimal("0.00"))
    assert JournalEntry.objects.filter(kind="reversal", source_id=str(payment.pk)).count() == 1
    assert Allocation.objects.filter(amount__lt=0).count() == 1
    assert customer_credit(customer.pk) == 0 and trial_balance()["balanced"]


def test_a_b2c_failure_delivered_20_times_at_once_gives_the_credit_back_once(reference_data):
    customer = CustomerFactory(account_number="10008")
    paybill, b2c = make_paybill(), make_b2c()
    mpesa_payment(customer, "1000.00", "SLR7RACE02", paybill)
    payments.record_payment(method="cash", reference="RCPT-RACE", amount="500", customer=customer)  # on two payments
    request = refunds.request_b2c_refund(customer, amount=1500, reason="Closing", client_factory=FakeRefundDaraja())
    assert request.refunds.count() == 2 and customer_credit(customer.pk) == 0
    callbacks = stored_copies(b2c, "b2c_result", b2c_result(request, 1, desc="The balance is insufficient."))

    results, errors = process_all_at_once(callbacks)

    assert errors == [] and len(results) == 20
    statuses = sorted(InboundCallback.objects.values_list("status", flat=True))
    assert statuses == ["duplicate"] * 19 + ["processed"]
    request.refresh_from_db()
    assert request.status == "failed"
    assert JournalEntry.objects.filter(kind="reversal").count() == 2  # one mirror per refund, once each
    assert customer_credit(customer.pk) == Decimal("1500.00") and trial_balance()["balanced"]
    assert sorted(Payment.objects.values_list("amount_refunded", flat=True)) == [0, 0]


def test_a_b2c_success_delivered_20_times_at_once_completes_it_once_and_books_nothing_more(reference_data):
    customer = CustomerFactory(account_number="10008")
    paybill, b2c = make_paybill(), make_b2c()
    mpesa_payment(customer, "1000.00", "SLR7RACE03", paybill)
    request = refunds.request_b2c_refund(customer, amount=1000, reason="Closing", client_factory=FakeRefundDaraja())
    entries = JournalEntry.objects.count()

    results, errors = process_all_at_once(stored_copies(b2c, "b2c_result", b2c_result(request)))

    assert errors == [] and len(results) == 20
    assert InboundCallback.objects.filter(status="processed").count() == 1
    request.refresh_from_db()
    assert request.status == "completed" and JournalEntry.objects.count() == entries


def test_20_refunds_of_the_same_credit_asked_at_once_never_pay_out_more_than_it(reference_data):
    customer = CustomerFactory(account_number="10008")
    paybill = make_paybill()
    make_b2c()
    mpesa_payment(customer, "2000.00", "SLR7RACE04", paybill)
    fake = FakeRefundDaraja()

    results, errors = race(
        20, lambda: refunds.request_b2c_refund(customer, amount=500, reason="Closing", client_factory=fake)
    )

    assert len(results) == 4 and all(r.status == "pending" for r in results)
    assert len(errors) == 16 and all(isinstance(e, refunds.RefundExceedsCredit) for e in errors)
    assert len(fake.payouts) == 4 and RefundRequest.objects.count() == 4
    assert Refund.objects.count() == 4 and customer_credit(customer.pk) == 0 and trial_balance()["balanced"]


def test_two_reversals_of_one_payment_asked_at_once_make_one_request(reference_data):
    customer = CustomerFactory(account_number="10008")
    payment = mpesa_payment(customer, "1500.00", "SLR7RACE05", make_paybill())
    fake = FakeRefundDaraja()

    results, errors = race(2, lambda: refunds.request_reversal(payment, reason="Paid twice", client_factory=fake))

    assert len(results) == 1 and len(errors) == 1
    assert isinstance(errors[0], refunds.ReversalAlreadyRequested)
    assert RefundRequest.objects.count() == 1 and len(fake.reversals) == 1

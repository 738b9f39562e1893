"""Races on PostgreSQL: the database, not the code path, makes a receipt count once."""

import threading
from decimal import Decimal

import pytest

from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.payments import services
from wavu.payments.models import Allocation, Payment
from wavu.testing.concurrency import race
from wavu.testing.factories import CustomerFactory

from .factories import issued_invoice


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_same_receipt_recorded_by_20_concurrent_callbacks_is_one_payment_and_one_entry(reference_data):
    customer = CustomerFactory()
    invoice = issued_invoice(customer, "1000")

    results, errors = race(
        20,
        lambda: services.record_payment(
            method="mpesa", source="paybill:123456", reference="SGH7X1ABCD", amount="1500", customer=customer
        ),
    )

    assert errors == []
    assert sum(1 for _, created in results if created) == 1
    assert len({payment.pk for payment, _ in results}) == 1
    assert Payment.objects.count() == 1
    assert JournalEntry.objects.filter(kind="payment").count() == 1
    assert Allocation.objects.count() == 1
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("1000.00")
    assert customer_balance(customer.pk) == Decimal("-500.00")
    assert trial_balance()["balanced"]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_same_unmatched_receipt_raced_20_times_lands_once_in_suspense(reference_data):
    results, errors = race(
        20,
        lambda: services.record_payment(method="mpesa", source="paybill:123456", reference="SGH7X1ZZZZ", amount="99"),
    )

    assert errors == []
    assert sum(1 for _, created in results if created) == 1
    assert Payment.objects.filter(status="unmatched").count() == 1
    assert JournalEntry.objects.filter(kind="payment").count() == 1


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_payments_of_one_customer_never_pay_an_invoice_twice(reference_data):
    customer = CustomerFactory()
    invoice = issued_invoice(customer, "1000")

    counter = iter(range(100))
    lock = threading.Lock()

    def pay():
        with lock:
            n = next(counter)
        return services.record_manual_payment(method="cash", reference=f"R-{n}", amount="400", customer=customer)

    results, errors = race(8, pay)

    assert errors == []
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("1000.00")
    assert sum(a.amount for a in Allocation.objects.all()) == Decimal("1000.00")
    assert customer_balance(customer.pk) == Decimal("-2200.00")


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_payment_reversed_by_two_staff_at_once_is_reversed_once(reference_data):
    customer = CustomerFactory()
    issued_invoice(customer, "1000")
    payment, _ = services.record_manual_payment(method="cash", reference="R-1", amount="1000", customer=customer)

    results, errors = race(5, lambda: services.reverse_payment(payment, reason="duplicate"))

    assert len(results) == 1
    assert len(errors) == 4 and all(getattr(e, "code", "") == "payment_already_reversed" for e in errors)
    assert JournalEntry.objects.filter(kind="reversal").count() == 1
    assert customer_balance(customer.pk) == Decimal("1000.00")

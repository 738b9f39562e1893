"""Races on PostgreSQL: Safaricom redelivers, workers overlap, and a receipt still credits once."""

from __future__ import annotations

import functools
import json
from decimal import Decimal

import pytest
from django.test import Client

from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.mpesa import services
from wavu.mpesa.models import InboundCallback
from wavu.payments.models import Allocation, Payment
from wavu.payments.tests.factories import issued_invoice
from wavu.testing.concurrency import race, side_by_side
from wavu.testing.factories import CustomerFactory
from wavu.testing.tasks import run_queued_tasks

from .test_c2b_hooks import SAFARICOM_IP, c2b_payload, hook_url, make_channel

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

PAYLOAD = c2b_payload(BillRefNumber="10008", TransAmount="1500.00", TransID="SLR7RACE01")


def test_one_confirmation_processed_by_20_workers_at_once_is_one_payment_and_one_entry(reference_data):
    customer = CustomerFactory(account_number="10008")
    invoice = issued_invoice(customer, "1000")
    channel = make_channel()
    callback = services.store_callback(
        channel,
        InboundCallback.Kind.C2B_CONFIRMATION,
        services.HookRequest(method="POST", body=json.dumps(PAYLOAD).encode(), headers={}, source_ip=SAFARICOM_IP),
    )

    results, errors = race(20, lambda: services.process_c2b_confirmation(callback.pk))

    assert errors == [] and len(results) == 20
    callback.refresh_from_db()
    payment = Payment.objects.get()
    assert (callback.status, callback.payment, callback.attempts) == ("processed", payment, 1)
    assert payment.customer == customer
    assert JournalEntry.objects.filter(kind="payment").count() == 1
    assert Allocation.objects.count() == 1
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("1000.00")
    assert customer_balance(customer.pk) == Decimal("-500.00") and trial_balance()["balanced"]


def test_one_confirmation_posted_20_times_at_once_then_processed_side_by_side_is_one_payment(reference_data):
    customer = CustomerFactory(account_number="10008")
    channel = make_channel()
    body = json.dumps(PAYLOAD)

    def deliver():
        return Client().post(hook_url(channel), data=body, content_type="application/json", REMOTE_ADDR=SAFARICOM_IP)

    responses, errors = race(20, deliver)

    assert errors == []
    assert [r.status_code for r in responses] == [200] * 20
    assert all(r.json() == {"ResultCode": 0, "ResultDesc": "Success"} for r in responses)
    ids = list(InboundCallback.objects.order_by("pk").values_list("pk", flat=True))
    assert len(ids) == 20

    results, errors = side_by_side(*[functools.partial(services.process_c2b_confirmation, pk) for pk in ids])
    assert errors == []
    run_queued_tasks()  # the jobs the hook queued find everything done

    payment = Payment.objects.get()
    assert payment.customer == customer and payment.amount == Decimal("1500.00")
    statuses = sorted(InboundCallback.objects.values_list("status", flat=True))
    assert statuses == ["duplicate"] * 19 + ["processed"]
    assert set(InboundCallback.objects.values_list("payment", flat=True)) == {payment.pk}
    assert JournalEntry.objects.filter(kind="payment").count() == 1
    assert customer_balance(customer.pk) == Decimal("-1500.00") and trial_balance()["balanced"]

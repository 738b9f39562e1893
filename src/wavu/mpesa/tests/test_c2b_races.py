"""Races on PostgreSQL: Safaricom redelivers, workers overlap, and a receipt still credits once."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
from decimal import Decimal

import pytest
from django.db import connection
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
    assert run_queued_tasks() == 0  # a worker's drain finds everything done

    payment = Payment.objects.get()
    assert payment.customer == customer and payment.amount == Decimal("1500.00")
    statuses = sorted(InboundCallback.objects.values_list("status", flat=True))
    assert statuses == ["duplicate"] * 19 + ["processed"]
    assert set(InboundCallback.objects.values_list("payment", flat=True)) == {payment.pk}
    assert JournalEntry.objects.filter(kind="payment").count() == 1
    assert customer_balance(customer.pk) == Decimal("-1500.00") and trial_balance()["balanced"]


def _store(channel, payload) -> InboundCallback:
    return services.store_callback(
        channel,
        InboundCallback.Kind.C2B_CONFIRMATION,
        services.HookRequest(method="POST", body=json.dumps(payload).encode(), headers={}, source_ip=SAFARICOM_IP),
    )


def test_four_workers_draining_side_by_side_in_small_batches_credit_every_receipt_once(reference_data):
    customers = [CustomerFactory() for _ in range(3)]  # valid account numbers (check digit)
    invoices = [issued_invoice(c, "1000") for c in customers]
    channel = make_channel()
    rng = random.Random(11)
    payloads = [
        c2b_payload(TransID=f"SLD{i:07d}", BillRefNumber=customers[i % 3].account_number, TransAmount=f"{100 + i}.00")
        for i in range(60)
    ]
    deliveries = payloads + [rng.choice(payloads) for _ in range(20)]
    rng.shuffle(deliveries)
    for payload in deliveries:
        _store(channel, payload)

    def worker():
        taken = 0
        while batch := services.drain_callbacks(limit=7):
            taken += batch
        return taken

    results, errors = side_by_side(worker, worker, worker, worker)

    assert errors == [] and sum(results) == 80
    assert Payment.objects.count() == 60 and JournalEntry.objects.filter(kind="payment").count() == 60
    statuses = sorted(InboundCallback.objects.values_list("status", flat=True))
    assert statuses == ["duplicate"] * 20 + ["processed"] * 60
    for i, customer in enumerate(customers):
        paid = sum(Decimal(p["TransAmount"]) for p in payloads if p["BillRefNumber"] == customer.account_number)
        assert customer_balance(customer.pk) == Decimal("1000.00") - paid
        invoices[i].refresh_from_db()
        assert invoices[i].status == "paid" and invoices[i].amount_paid == Decimal("1000.00")
        assert sum(a.amount for a in invoices[i].allocations.all()) == Decimal("1000.00")
    assert trial_balance()["balanced"]


_KILLED_WORKER = """
import sys, time
import django
django.setup()
from wavu.mpesa import services
from wavu.payments import bulk

write = bulk.record_payments

def write_then_hang(receipts):
    results = write(receipts)
    print("written, not committed", flush=True)
    time.sleep(120)
    return results

bulk.record_payments = write_then_hang
services.drain_callbacks()
"""


def test_a_worker_killed_after_writing_the_payment_but_before_committing_leaves_it_to_the_next_drain_once(
    reference_data,
):
    customer = CustomerFactory(account_number="10008")
    invoice = issued_invoice(customer, "1500")
    callback = _store(make_channel(), PAYLOAD)
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "wavu.settings"}

    worker = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WORKER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = worker.stdout.readline()
        assert line.strip() == "written, not committed", worker.stderr.read()
        worker.send_signal(signal.SIGKILL)  # kill -9: no clean-up, the connection just drops
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()

    callback.refresh_from_db()
    assert callback.status == "received" and callback.attempts == 0
    assert not Payment.objects.exists() and not JournalEntry.objects.filter(kind="payment").exists()

    assert services.drain_callbacks() == 1
    assert services.drain_callbacks() == 0

    callback.refresh_from_db()
    payment = Payment.objects.get()
    assert (callback.status, callback.payment, callback.attempts) == ("processed", payment, 1)
    assert JournalEntry.objects.filter(kind="payment").count() == 1
    invoice.refresh_from_db()
    assert invoice.status == "paid" and customer_balance(customer.pk) == Decimal("0.00")

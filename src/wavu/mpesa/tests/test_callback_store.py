"""The inbound callback store: every confirmation is kept before anything else, processed once,
retried when processing failed or never happened, and duplicates and amount mismatches are flagged,
never applied twice."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from wavu.core.scheduler import validate_schedule
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.mpesa import services
from wavu.mpesa import tasks as mpesa_tasks
from wavu.mpesa.models import InboundCallback
from wavu.payments import bulk
from wavu.payments.models import Payment
from wavu.schedule import SCHEDULE
from wavu.testing.factories import CustomerFactory

from .test_c2b_hooks import c2b_payload, make_channel, pay_by_paybill, post, trans_time, work

pytestmark = pytest.mark.django_db

NOON = timezone.make_aware(dt.datetime(2026, 12, 15, 12, 0))


@pytest.fixture
def clock_at_noon():
    with time_machine.travel(NOON, tick=False) as traveller:
        yield traveller


@pytest.fixture
def channel():
    return make_channel()


@pytest.fixture
def client():
    return Client()


@pytest.fixture
def wanjiku():
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008")


def payload(**overrides) -> dict:
    return c2b_payload(
        **{"BillRefNumber": "10008", "TransAmount": "1500.00", "TransTime": trans_time(NOON), **overrides}
    )


def stored_but_never_processed(client, channel, capture, body) -> InboundCallback:
    """The web process stored and acknowledged the confirmation; no worker has drained it yet (none
    running, or the one that took it died before committing)."""
    with capture(execute=True):
        response = post(client, channel, body)
    assert response.status_code == 200
    return InboundCallback.objects.order_by("pk").last()


# --- duplicates and mismatches ------------------------------------------------------------------------


def test_a_receipt_delivered_twice_is_credited_once_and_the_copy_is_marked_duplicate(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    for _ in range(2):
        response = pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload())
        assert response.json() == {"ResultCode": 0, "ResultDesc": "Success"}

    payment = Payment.objects.get()
    first, second = InboundCallback.objects.order_by("pk")
    assert (first.status, first.payment) == ("processed", payment)
    assert (second.status, second.payment) == ("duplicate", payment)
    assert second.outcome.startswith("already processed")
    assert JournalEntry.objects.filter(kind="payment").count() == 1
    assert customer_balance(wanjiku.pk) == Decimal("-1500.00")


def test_the_same_receipt_with_another_amount_is_flagged_and_nothing_is_applied(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload())
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload(TransAmount="15000.00"))

    payment = Payment.objects.get()
    assert payment.amount == Decimal("1500.00")
    copy = InboundCallback.objects.order_by("pk").last()
    assert copy.status == "mismatch" and copy.payment is None
    assert "amount 1500.00 was recorded, this copy says 15000.00" in copy.outcome
    assert JournalEntry.objects.filter(kind="payment").count() == 1
    assert customer_balance(wanjiku.pk) == Decimal("-1500.00") and trial_balance()["balanced"]


def test_the_same_transid_on_another_paybill_is_another_payment(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    other = make_channel(name="Second paybill", shortcode="600639")
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload())
    pay_by_paybill(client, other, django_capture_on_commit_callbacks, payload(BusinessShortCode="600639"))
    assert sorted(Payment.objects.values_list("source", flat=True)) == ["600638", "600639"]


def test_processing_a_callback_again_changes_nothing(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload())
    callback = InboundCallback.objects.get()

    for _ in range(3):
        again = services.process_c2b_confirmation(callback.pk)
        assert (again.status, again.attempts) == ("processed", 1)
    assert Payment.objects.count() == 1 and JournalEntry.objects.filter(kind="payment").count() == 1


# --- a process killed between storing and processing --------------------------------------------------------


def test_a_stored_confirmation_waits_in_the_store_until_a_worker_drains_it_and_two_drains_apply_it_once(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    callback = stored_but_never_processed(client, channel, django_capture_on_commit_callbacks, payload())
    assert callback.status == "received" and not Payment.objects.exists()

    assert services.drain_callbacks() == 1
    assert services.drain_callbacks() == 0  # a second worker finds nothing left

    callback.refresh_from_db()
    payment = Payment.objects.get()
    assert (callback.status, callback.payment, callback.attempts) == ("processed", payment, 1)
    assert payment.customer == wanjiku and JournalEntry.objects.filter(kind="payment").count() == 1


def test_a_confirmation_no_worker_drained_is_applied_exactly_once_by_the_retry_job(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    callback = stored_but_never_processed(client, channel, django_capture_on_commit_callbacks, payload())

    assert services.retry_callbacks().picked == 0  # a worker's drain normally takes it within a second

    clock_at_noon.move_to(NOON + dt.timedelta(seconds=61))
    first = services.retry_callbacks()
    second = services.retry_callbacks()  # the job fired twice

    assert first.as_dict() == {"picked": 1, "processed": 1} and second.picked == 0
    callback.refresh_from_db()
    payment = Payment.objects.get()
    assert (callback.status, callback.payment, callback.attempts) == ("processed", payment, 1)
    assert payment.customer == wanjiku
    assert JournalEntry.objects.filter(kind="payment").count() == 1


def test_a_drain_after_the_retry_already_applied_the_callback_changes_nothing(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    stored_but_never_processed(client, channel, django_capture_on_commit_callbacks, payload())
    clock_at_noon.move_to(NOON + dt.timedelta(minutes=2))
    services.retry_callbacks()

    assert work(django_capture_on_commit_callbacks) == 0  # the worker finally looks: nothing left
    assert Payment.objects.count() == 1
    assert InboundCallback.objects.get().attempts == 1


def test_the_retry_job_is_scheduled_every_minute_and_runs_through_the_worker(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    entry = next(p for p in SCHEDULE if p.task == "wavu.mpesa.tasks.retry_callbacks")
    assert entry.every == dt.timedelta(minutes=1)
    validate_schedule(SCHEDULE)

    stored_but_never_processed(client, channel, django_capture_on_commit_callbacks, payload())
    clock_at_noon.move_to(NOON + dt.timedelta(minutes=5))
    mpesa_tasks.retry_callbacks.enqueue()
    work(django_capture_on_commit_callbacks)

    assert InboundCallback.objects.get().status == "processed" and Payment.objects.count() == 1


# --- failures ------------------------------------------------------------------------------------------------


def test_a_failed_processing_is_recorded_and_retried_with_back_off(
    client, channel, wanjiku, clock_at_noon, monkeypatch, django_capture_on_commit_callbacks
):
    def database_hiccup(receipts):
        raise RuntimeError("connection reset by peer")

    monkeypatch.setattr(bulk, "record_payments", database_hiccup)
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload())

    callback = InboundCallback.objects.get()
    assert (callback.status, callback.attempts) == ("failed", 1)
    assert callback.last_error == "RuntimeError: connection reset by peer"
    assert not Payment.objects.exists() and not JournalEntry.objects.filter(kind="payment").exists()

    monkeypatch.undo()
    clock_at_noon.move_to(NOON + dt.timedelta(seconds=30))
    assert services.retry_callbacks().picked == 0  # the first retry waits a minute
    clock_at_noon.move_to(NOON + dt.timedelta(seconds=61))
    assert services.retry_callbacks().as_dict() == {"picked": 1, "processed": 1}

    callback.refresh_from_db()
    assert (callback.status, callback.attempts) == ("processed", 2)
    assert Payment.objects.get().customer == wanjiku


def test_retries_stop_after_the_configured_number_of_attempts(
    client, channel, wanjiku, clock_at_noon, monkeypatch, settings, django_capture_on_commit_callbacks
):
    settings.WAVU = {**settings.WAVU, "CALLBACK_MAX_ATTEMPTS": 3}

    def broken(receipts):
        raise RuntimeError("bug")

    monkeypatch.setattr(bulk, "record_payments", broken)
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload())
    for hours in range(1, 6):
        clock_at_noon.move_to(NOON + dt.timedelta(hours=hours))
        services.retry_callbacks()

    callback = InboundCallback.objects.get()
    assert (callback.status, callback.attempts) == ("failed", 3)
    assert "will be retried" in callback.outcome


def test_a_stored_body_that_can_never_be_processed_is_rejected_not_retried(channel, clock_at_noon):
    callback = InboundCallback.objects.create(
        channel=channel, kind="c2b_confirmation", received_at=NOON, body="{not json", headers={}
    )
    assert services.process_c2b_confirmation(callback.pk).status == "rejected"
    clock_at_noon.move_to(NOON + dt.timedelta(hours=1))
    assert services.retry_callbacks().picked == 0


def test_the_retry_job_takes_every_kind_awaiting_processing_but_never_validations(client, channel, clock_at_noon):
    post(client, channel, {"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1"}}}, "stk-callback")
    post(client, channel, c2b_payload(), "c2b-validation")
    clock_at_noon.move_to(NOON + dt.timedelta(hours=1))

    assert services.retry_callbacks().as_dict() == {"picked": 1, "rejected": 1}  # the STK callback has no ResultCode
    assert services.retry_callbacks().picked == 0
    assert InboundCallback.objects.get(kind="c2b_validation").status == "processed"  # answered when it came


# --- what is kept ------------------------------------------------------------------------------------------


def test_a_transtime_in_the_future_is_recorded_at_the_time_of_receipt_and_noted(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    body = payload(TransTime=trans_time(NOON + dt.timedelta(days=1)))
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, body)

    assert Payment.objects.get().received_at == NOON
    assert "in the future" in InboundCallback.objects.get().outcome


def test_a_confirmation_naming_another_shortcode_is_applied_but_noted(
    client, channel, wanjiku, clock_at_noon, django_capture_on_commit_callbacks
):
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload(BusinessShortCode="999999"))

    assert Payment.objects.get().source == channel.shortcode
    assert "BusinessShortCode 999999 is not this channel's" in InboundCallback.objects.get().outcome


def test_every_request_with_a_valid_token_is_kept_in_arrival_order(client, channel, clock_at_noon):
    post(client, channel, c2b_payload(), "c2b-validation")
    post(client, channel, "garbage")
    post(client, channel, payload(), source="198.51.100.1")
    kept = list(InboundCallback.objects.order_by("pk").values_list("kind", "status"))
    assert kept == [("c2b_validation", "processed"), ("c2b_confirmation", "rejected"), ("c2b_confirmation", "rejected")]

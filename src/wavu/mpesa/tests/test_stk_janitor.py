"""The STK janitor: requests nobody answered are queried a minute after the push, then with backoff, until
M-Pesa gives a final result or 15 minutes pass; whoever settles a request first (callback or janitor),
the customer pays once."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import time_machine
from django.utils import timezone

from wavu.mpesa import channels, daraja, services, stk
from wavu.mpesa.models import InboundCallback, StkRequest
from wavu.mpesa.tests.test_stk import FakeDaraja, deliver, make_channel, stk_body
from wavu.payments.models import Payment
from wavu.testing.concurrency import side_by_side
from wavu.testing.factories import CustomerFactory

NOON = timezone.make_aware(dt.datetime(2026, 12, 1, 12, 0))


@pytest.fixture
def fake():
    return FakeDaraja()


@pytest.fixture
def travel():
    with time_machine.travel(NOON, tick=False) as traveller:
        yield traveller


@pytest.fixture
def channel(db):
    return make_channel()


@pytest.fixture
def wanjiku(db):
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008", phone="254712345678")


def push(fake, customer, amount=100) -> StkRequest:
    return stk.request_stk_push("top_up", customer=customer, amount=amount, client_factory=fake)


def janitor(fake, travel, after: dt.timedelta):
    travel.move_to(NOON + after)
    return stk.settle_pending_stk(client_factory=fake)


def test_a_request_younger_than_a_minute_is_left_alone(db, fake, travel, channel, wanjiku):
    push(fake, wanjiku)

    summary = janitor(fake, travel, dt.timedelta(seconds=59))

    assert summary.checked == 0 and fake.queries == []


def test_still_processing_keeps_it_pending_and_the_next_check_backs_off(db, fake, travel, channel, wanjiku):
    request = push(fake, wanjiku)

    gaps = []
    for after in (60, 90, 150, 270):
        janitor(fake, travel, dt.timedelta(seconds=after))
        request.refresh_from_db()
        gaps.append((request.next_check_at - (NOON + dt.timedelta(seconds=after))).total_seconds())

    assert request.status == "pending" and request.checks == 4 and len(fake.queries) == 4
    assert gaps == [30, 60, 120, 240]
    janitor(fake, travel, dt.timedelta(seconds=271))  # not due yet: no query
    assert len(fake.queries) == 4


def test_a_lost_failure_callback_is_settled_by_the_query(db, fake, travel, channel, wanjiku):
    request = push(fake, wanjiku)
    fake.answers[request.checkout_request_id] = ("1032", "Request cancelled by user")

    summary = janitor(fake, travel, dt.timedelta(seconds=61))

    request.refresh_from_db()
    assert (request.status, request.settled_by, request.result_code) == ("cancelled", "query", "1032")
    assert "cancelled" in request.customer_message and not Payment.objects.exists()
    assert summary.as_dict()["cancelled"] == 1


def test_a_lost_success_callback_is_paid_by_the_query_and_the_late_callback_pays_nothing_more(
    db, fake, travel, channel, wanjiku
):
    request = push(fake, wanjiku, amount=300)
    fake.answers[request.checkout_request_id] = ("0", "The service request is processed successfully.")

    janitor(fake, travel, dt.timedelta(seconds=61))
    request.refresh_from_db()
    payment = Payment.objects.get()
    assert (request.status, request.settled_by, request.payment_id) == ("paid", "query", payment.pk)
    assert payment.reference == request.checkout_request_id and payment.amount == 300

    callback = deliver(channel, stk_body(request, receipt="SIMLATE777"))

    request.refresh_from_db()
    assert callback.status == "duplicate" and callback.payment_id == payment.pk
    assert request.receipt == "SIMLATE777" and Payment.objects.count() == 1


def test_a_request_the_callback_settled_is_not_queried_again(db, fake, travel, channel, wanjiku):
    request = push(fake, wanjiku)
    deliver(channel, stk_body(request, receipt="SIMFIRST01"))
    fake.answers[request.checkout_request_id] = ("0", "paid")

    summary = janitor(fake, travel, dt.timedelta(seconds=61))

    assert summary.checked == 0 and fake.queries == [] and Payment.objects.count() == 1


def test_a_callback_arriving_between_the_query_and_the_settling_wins_and_pays_once(db, fake, travel, channel, wanjiku):
    request = push(fake, wanjiku)
    travel.move_to(NOON + dt.timedelta(seconds=61))
    deliver(channel, stk_body(request, receipt="SIMRACE001"))
    answer = daraja.StkQueryResult(request.checkout_request_id, False, "0", "paid", "", {})

    settled = stk.settle_from_query(request.pk, answer)

    assert not settled.changed and Payment.objects.get().reference == "SIMRACE001"


def test_no_answer_for_fifteen_minutes_expires_it_and_a_late_success_still_pays(db, fake, travel, channel, wanjiku):
    request = push(fake, wanjiku, amount=80)
    for minutes in range(1, 16):
        janitor(fake, travel, dt.timedelta(minutes=minutes, seconds=1))
    request.refresh_from_db()
    assert (request.status, request.result_code, request.settled_by) == ("expired", "1037", "expiry")
    assert "could not reach your phone" in request.customer_message and not Payment.objects.exists()
    assert push(fake, wanjiku).status == "pending"  # the purpose is free again

    deliver(channel, stk_body(request, receipt="SIMLATE015"))

    request.refresh_from_db()
    assert request.status == "paid" and Payment.objects.get().reference == "SIMLATE015"


def test_query_errors_keep_it_waiting_with_backoff(db, fake, travel, channel, wanjiku):
    request = push(fake, wanjiku)
    fake.answers[request.checkout_request_id] = daraja.DarajaUnavailable("Daraja failed (HTTP 503)")

    janitor(fake, travel, dt.timedelta(seconds=61))

    request.refresh_from_db()
    assert request.status == "pending" and request.checks == 1 and "query failed" in request.result_desc


def test_an_unknown_push_cannot_be_queried_and_expires_when_no_callback_comes(db, fake, travel, channel, wanjiku):
    fake.push_error = daraja.StkPushOutcomeUnknown("Daraja did not answer (ReadTimeout)")
    request = push(fake, wanjiku)

    janitor(fake, travel, dt.timedelta(minutes=5))
    request.refresh_from_db()
    assert request.status == "unknown" and fake.queries == []

    janitor(fake, travel, dt.timedelta(minutes=16))
    request.refresh_from_db()
    assert request.status == "expired" and len(fake.pushes) == 1 and not Payment.objects.exists()


def test_an_stk_callback_stored_but_never_processed_is_processed_by_the_janitor(db, fake, travel, channel, wanjiku):
    request = push(fake, wanjiku)
    services.receive_hook(
        channel,
        InboundCallback.Kind.STK_CALLBACK,
        services.HookRequest("POST", stk_body(request, receipt="SIMSTUCK01").encode(), {}, "196.201.214.200"),
    )  # the job that should have processed it was lost

    summary = janitor(fake, travel, dt.timedelta(seconds=61))

    request.refresh_from_db()
    assert summary.callbacks_retried == 1 and request.status == "paid" and request.settled_by == "callback"
    assert Payment.objects.get().reference == "SIMSTUCK01" and fake.queries == []


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_callback_and_the_janitor_settling_at_the_same_moment_pay_once(reference_data, fake):
    channel = make_channel()
    customer = CustomerFactory(account_number="10009", phone="254712345678")
    for attempt in range(5):
        request = stk.request_stk_push("top_up", customer=customer, amount=120, client_factory=fake)
        fake.answers[request.checkout_request_id] = ("0", "The service request is processed successfully.")
        callback = services.receive_hook(
            channel,
            InboundCallback.Kind.STK_CALLBACK,
            services.HookRequest("POST", stk_body(request, receipt=f"SIMRACE{attempt:03d}").encode(), {}, None),
        ).callback
        later = timezone.now() + dt.timedelta(seconds=61)

        results, errors = side_by_side(
            lambda cb=callback: stk.process_stk_callback(cb.pk),
            lambda at=later: stk.settle_pending_stk(at, client_factory=fake),
        )

        assert errors == []
        request.refresh_from_db()
        assert request.status == "paid"
        assert Payment.objects.filter(notes__contains=f"STK push {request.pk} ").count() == 1
    assert Payment.objects.count() == 5


# --- end to end against the simulator: the callback is lost, the janitor's query settles it -------------

simulator = pytest.importorskip("wavu.mpesa_simulator.server")


@pytest.fixture
def running_simulator():
    from wavu.mpesa_simulator import State
    from wavu.mpesa_simulator.tests.support import fast_config

    server = simulator.SimulatorServer(("127.0.0.1", 0), state=State(fast_config())).start()
    yield server
    server.stop()


def simulator_channel(server):
    from wavu.mpesa_simulator.state import SANDBOX_PASSKEY, Config

    config = Config()
    return channels.create_channel(
        name="Simulated paybill",
        kind="paybill",
        shortcode=config.paybill,
        environment="simulator",
        base_url=server.base_url,
        consumer_key=config.consumer_key,
        consumer_secret=config.consumer_secret,
        passkey=SANDBOX_PASSKEY,
        allowlist_mode="off",
    )


def test_a_paid_push_whose_callback_is_lost_is_settled_by_the_janitor_against_the_simulator(db, running_simulator):
    channel = simulator_channel(running_simulator)
    customer = CustomerFactory(account_number="10010", phone="254700000007")  # paid, callback lost

    request = stk.request_stk_push("top_up", customer=customer, amount=25)
    assert request.status == "pending" and request.checkout_request_id.startswith("ws_CO_")

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stk.settle_pending_stk(timezone.now() + dt.timedelta(seconds=61))
        request.refresh_from_db()
        if request.status != "pending":
            break
        time.sleep(0.1)

    payment = Payment.objects.get()
    assert (request.status, request.settled_by, request.payment_id) == ("paid", "query", payment.pk)
    assert (payment.source, payment.amount, payment.customer_id) == (channel.shortcode, 25, customer.pk)

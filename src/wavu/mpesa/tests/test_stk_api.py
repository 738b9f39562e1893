"""The payment-requests API (staff): ask a customer's phone to pay, then poll until the answer is final; and
true end-to-end runs: Wavu pushes to the simulator over HTTP, the simulator calls Wavu's hook on a live
server, the stored callback is processed as the worker would, and the poll shows the outcome."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from wavu.core.db import drop_row_protections, install_row_protections
from wavu.mpesa import stk
from wavu.mpesa.models import InboundCallback, StkRequest
from wavu.mpesa.tests.test_stk import FakeDaraja, deliver, make_channel, stk_body
from wavu.mpesa.tests.test_stk_janitor import running_simulator, simulator_channel  # noqa: F401
from wavu.payments.models import Payment
from wavu.payments.tests.factories import issued_invoice
from wavu.testing.api import staff_client
from wavu.testing.factories import CustomerFactory
from wavu.testing.tasks import run_queued_tasks

URL = "/api/v1/payment-requests/"


@pytest.fixture
def api(db):
    return staff_client("ops")


@pytest.fixture
def fake(monkeypatch):
    fake = FakeDaraja()
    monkeypatch.setattr(stk.daraja, "DarajaClient", fake)
    return fake


@pytest.fixture
def wanjiku(db):
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008", phone="254712345678")


def test_asking_for_an_invoice_sends_the_push_and_the_poll_shows_it_paid(api, fake, wanjiku):
    channel = make_channel()
    invoice = issued_invoice(wanjiku, "2000.00")

    response = api.post(URL, {"purpose": "invoice", "invoice": invoice.pk, "phone": "0712 345 678"}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["amount"], body["phone"], body["customer"]) == (
        "pending",
        "2000.00",
        "254712345678",
        wanjiku.pk,
    )
    deliver(channel, stk_body(StkRequest.objects.get(pk=body["id"]), receipt="SIMAPI0001"))
    polled = api.get(f"{URL}{body['id']}/").json()
    assert (polled["status"], polled["receipt"]) == ("paid", "SIMAPI0001") and polled["payment"]
    assert "Thank you" in polled["customer_message"]


def test_a_second_request_for_the_same_purpose_is_409_with_a_clear_code(api, fake, wanjiku):
    make_channel()
    first = api.post(URL, {"purpose": "top_up", "customer": wanjiku.pk, "amount": 100}, format="json")

    second = api.post(URL, {"purpose": "top_up", "customer": wanjiku.pk, "amount": 100}, format="json")

    assert second.status_code == 409
    assert second.json()["error"]["code"] == "stk_request_open"
    assert second.json()["error"]["fields"] == {"request": [str(first.json()["id"])]}
    assert StkRequest.objects.count() == 1 and len(fake.pushes) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "12345", "amount": 100}, "phone"),
        ({"amount": "10.50"}, "amount"),
        ({"amount": 0}, "amount"),
        ({}, "amount"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_nothing_is_sent(api, fake, wanjiku, body, field):
    make_channel()

    response = api.post(URL, {"purpose": "top_up", "customer": wanjiku.pk, **body}, format="json")

    assert response.status_code == 400 and field in response.json()["error"]["fields"]
    assert not StkRequest.objects.exists() and fake.pushes == []


def test_a_push_daraja_refuses_is_502_naming_the_request_and_what_to_do(api, fake, wanjiku):
    make_channel()
    fake.push_error = stk.daraja.SubscriberBusy("Unable to lock subscriber")

    response = api.post(URL, {"purpose": "top_up", "customer": wanjiku.pk, "amount": 100}, format="json")

    error = response.json()["error"]
    assert response.status_code == 502 and error["code"] == "stk_push_failed" and "1 to 3 minutes" in error["message"]
    assert StkRequest.objects.get(pk=int(error["fields"]["request"][0])).status == "failed"


def test_only_staff_may_ask(db, wanjiku):
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("someone", password="x"))

    assert client.post(URL, {"purpose": "top_up", "customer": wanjiku.pk}, format="json").status_code == 403


def test_the_admin_lists_requests_read_only(admin_client, fake, wanjiku):
    make_channel()
    request = stk.request_stk_push("top_up", customer=wanjiku, amount=10)

    assert admin_client.get("/admin/mpesa/stkrequest/").status_code == 200
    assert admin_client.get(f"/admin/mpesa/stkrequest/{request.pk}/change/").status_code == 200
    assert admin_client.get("/admin/mpesa/stkrequest/add/").status_code == 403


# --- end to end: simulator → live server hook → worker -------------------------------------------------


def settle_through_the_worker(request_id: int, timeout: float = 8.0) -> StkRequest:
    """Wait for the simulator's callback(s) to reach the live server, then run the queued jobs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_queued_tasks()
        request = StkRequest.objects.get(pk=request_id)
        if request.status not in StkRequest.OPEN_STATUSES:
            return request
        time.sleep(0.1)
    return StkRequest.objects.get(pk=request_id)


@pytest.fixture
def live_api(live_server, settings, reference_data, django_db_blocker):
    settings.WAVU_PUBLIC_URL = live_server.url
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("ops", password="x", is_staff=True))
    yield client
    # Payments and the journal are append-only (triggers). The live server needs a transactional test,
    # whose teardown flushes the tables: empty them here with the protections lifted, then restore them.
    with django_db_blocker.unblock():
        drop_row_protections()
        try:
            call_command("flush", interactive=False, verbosity=0)
        finally:
            install_row_protections()


def test_end_to_end_a_customer_pays_an_invoice_from_the_phone(live_api, running_simulator):  # noqa: F811
    channel = simulator_channel(running_simulator)
    customer = CustomerFactory(account_number="10020", phone="254708374149")
    invoice = issued_invoice(customer, "450.00")

    response = live_api.post(URL, {"purpose": "invoice", "invoice": invoice.pk}, format="json")
    assert response.status_code == 201, response.json()

    request = settle_through_the_worker(response.json()["id"])

    payment = Payment.objects.get()
    assert (request.status, request.settled_by, request.receipt) == ("paid", "callback", payment.reference)
    assert (payment.source, payment.amount, payment.customer_id) == (channel.shortcode, 450, customer.pk)
    invoice.refresh_from_db()
    assert invoice.status == "paid"
    callback = InboundCallback.objects.get(kind="stk_callback")
    assert callback.status == "processed" and callback.payment_id == payment.pk
    assert live_api.get(f"{URL}{request.pk}/").json()["status"] == "paid"


def test_end_to_end_a_callback_delivered_three_times_pays_once(live_api, running_simulator):  # noqa: F811
    simulator_channel(running_simulator)
    customer = CustomerFactory(account_number="10021", phone="254700000006")  # paid, callback sent 3 times
    running_simulator.state.config.default_script["copy_interval"] = 0.4  # one at a time (SQLite)

    response = live_api.post(URL, {"purpose": "top_up", "customer": customer.pk, "amount": 30}, format="json")
    request = settle_through_the_worker(response.json()["id"])
    deadline = time.monotonic() + 8
    while InboundCallback.objects.filter(kind="stk_callback").count() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    run_queued_tasks()

    statuses = sorted(InboundCallback.objects.filter(kind="stk_callback").values_list("status", flat=True))
    assert request.status == "paid" and Payment.objects.count() == 1
    assert statuses == ["duplicate", "duplicate", "processed"]


def test_end_to_end_a_cancelled_prompt_tells_the_customer_and_pays_nothing(live_api, running_simulator):  # noqa: F811
    simulator_channel(running_simulator)
    customer = CustomerFactory(account_number="10022", phone="254700000001")  # cancels the prompt

    response = live_api.post(URL, {"purpose": "top_up", "customer": customer.pk, "amount": 30}, format="json")
    request = settle_through_the_worker(response.json()["id"])

    assert (request.status, request.result_code) == ("cancelled", "1032") and not Payment.objects.exists()
    assert "cancelled" in live_api.get(f"{URL}{request.pk}/").json()["customer_message"]

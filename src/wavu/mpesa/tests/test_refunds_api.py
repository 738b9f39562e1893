"""The refund-requests API and admin (staff): reverse an M-Pesa payment or refund credit to a phone, poll
the outcome, resolve a timeout; and true end-to-end runs: Wavu calls the simulator over HTTP, the simulator
posts the documented Result to Wavu's hook on a live server, the stored callback is processed as the
worker would, and the books show the outcome."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_credit, trial_balance
from wavu.mpesa import channels, refunds, services
from wavu.mpesa.callbacks import REFUND_KINDS
from wavu.mpesa.models import InboundCallback, RefundRequest
from wavu.mpesa.tests.test_refunds import (
    FakeRefundDaraja,
    deliver,
    make_b2c,
    make_paybill,
    mpesa_payment,
    timeout_body,
)
from wavu.mpesa.tests.test_stk_api import live_api  # noqa: F401
from wavu.mpesa.tests.test_stk_janitor import running_simulator  # noqa: F401
from wavu.mpesa_simulator.tests.support import call
from wavu.payments.models import Payment, Refund
from wavu.payments.tests.factories import issued_invoice
from wavu.testing.api import staff_client
from wavu.testing.factories import CustomerFactory
from wavu.testing.tasks import run_queued_tasks

URL = "/api/v1/refund-requests/"


@pytest.fixture
def api(db):
    return staff_client("ops")


@pytest.fixture
def fake(monkeypatch):
    fake = FakeRefundDaraja()
    monkeypatch.setattr(refunds.daraja, "DarajaClient", fake)
    return fake


@pytest.fixture
def wanjiku(db):
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008", phone="254712345678")


def test_staff_reverse_a_payment_and_the_poll_shows_it_completed(api, fake, wanjiku):
    paybill = make_paybill()
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)

    response = api.post(URL, {"kind": "reversal", "payment": payment.pk, "reason": "Wrong account"}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["kind"], body["status"], body["amount"], body["original_receipt"]) == (
        "reversal",
        "pending",
        "1500.00",
        "SLR7PAY001",
    )
    request = RefundRequest.objects.get(pk=body["id"])
    deliver(paybill, "reversal-result", _reversal_success(request))
    polled = api.get(f"{URL}{body['id']}/").json()
    assert (polled["status"], polled["receipt"], polled["settled_by"]) == ("completed", "SLR9REV001", "result")
    assert api.get(f"{URL}?kind=reversal&status=completed").json()["count"] == 1
    payment.refresh_from_db()
    assert payment.status == "reversed"


def _reversal_success(request):
    from wavu.mpesa.tests.test_refunds import reversal_result

    return reversal_result(request)


def test_a_b2c_refund_over_the_credit_is_409_in_the_house_format_and_nothing_is_written(api, fake, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", make_paybill())
    make_b2c()

    response = api.post(
        URL, {"kind": "b2c", "customer": wanjiku.pk, "amount": "2000", "reason": "Closing"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "refund_exceeds_credit",
        "message": "Account 10008 has KES 1500.00 of unapplied credit; KES 2000 cannot be refunded.",
        "fields": {"amount": ["at most 1500.00"]},
    }
    assert not RefundRequest.objects.exists() and not Refund.objects.exists() and fake.payouts == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "reversal", "reason": "x"}, "payment"),
        ({"kind": "b2c", "reason": "x"}, "customer"),
        ({"kind": "b2c", "customer": "CUSTOMER", "amount": "10.50", "reason": "x"}, "amount"),
        ({"kind": "b2c", "customer": "CUSTOMER", "amount": "10", "reason": "x", "phone": "12345"}, "phone"),
        ({"kind": "b2c", "customer": "CUSTOMER", "reason": "x", "receipt": "SLR"}, "receipt"),
        ({"kind": "refund", "customer": "CUSTOMER", "reason": "x"}, "kind"),
        ({"kind": "b2c", "customer": "CUSTOMER"}, "reason"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_nothing_is_written(api, fake, wanjiku, body, field):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", make_paybill())
    make_b2c()
    body = {k: (wanjiku.pk if v == "CUSTOMER" else v) for k, v in body.items()}

    response = api.post(URL, body, format="json")

    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"]
    assert not RefundRequest.objects.exists() and not Refund.objects.exists() and fake.payouts == []


def test_a_request_daraja_refuses_is_502_naming_it_and_the_credit_is_back(api, fake, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", make_paybill())
    make_b2c()
    fake.error = refunds.daraja.DarajaBadRequest("Daraja refused the request: Bad Request - Invalid PartyA.")

    response = api.post(URL, {"kind": "b2c", "customer": wanjiku.pk, "reason": "Closing"}, format="json")

    error = response.json()["error"]
    assert response.status_code == 502 and error["code"] == "refund_request_failed"
    assert "Invalid PartyA" in error["message"] and "credit is back" in error["message"]
    assert RefundRequest.objects.get(pk=int(error["fields"]["request"][0])).status == "failed"
    assert customer_credit(wanjiku.pk) == Decimal("1500.00")


def test_staff_resolve_a_timed_out_refund_through_the_api(api, fake, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", make_paybill())
    b2c = make_b2c()
    created = api.post(URL, {"kind": "b2c", "customer": wanjiku.pk, "amount": 500, "reason": "Closing"}, format="json")
    request = RefundRequest.objects.get(pk=created.json()["id"])
    deliver(b2c, "b2c-timeout", timeout_body(request))
    assert api.get(f"{URL}{request.pk}/").json()["status"] == "timed_out"

    resolved = api.post(
        f"{URL}{request.pk}/resolve/", {"outcome": "failed", "reason": "Not in the portal"}, format="json"
    )
    again = api.post(f"{URL}{request.pk}/resolve/", {"outcome": "completed", "reason": "oops"}, format="json")

    assert resolved.status_code == 200 and resolved.json()["status"] == "failed"
    assert again.status_code == 409 and again.json()["error"]["code"] == "refund_request_not_open"
    assert customer_credit(wanjiku.pk) == Decimal("1500.00")


def test_only_staff_may_ask(db, wanjiku):
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("someone", password="x"))

    response = client.post(URL, {"kind": "b2c", "customer": wanjiku.pk, "reason": "x"}, format="json")

    assert response.status_code == 403 and "error" in response.json()


# --- admin ------------------------------------------------------------------------------------------------


def test_the_admin_shows_requests_read_only_with_their_outcome(admin_client, fake, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", make_paybill())
    make_b2c()
    request = refunds.request_b2c_refund(wanjiku, amount=100, reason="Closing")

    listing = admin_client.get("/admin/mpesa/refundrequest/")
    detail = admin_client.get(f"/admin/mpesa/refundrequest/{request.pk}/change/")

    assert listing.status_code == 200 and detail.status_code == 200
    assert b"Sent to M-Pesa; waiting for the result." in detail.content
    assert f"B2C-{request.pk}-1".encode() in detail.content
    assert b'name="reason"' not in detail.content  # nothing editable
    posted = admin_client.post(f"/admin/mpesa/refundrequest/{request.pk}/change/", {"reason": "changed"})
    assert posted.status_code == 403
    assert admin_client.post(f"/admin/mpesa/refundrequest/{request.pk}/delete/").status_code == 403


def test_staff_ask_for_a_b2c_refund_in_the_admin_and_over_credit_is_a_form_error(admin_client, fake, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", make_paybill())
    make_b2c()
    form = {"kind": "b2c", "customer": wanjiku.pk, "amount": "1000", "phone": "", "reason": "Closing the account"}

    over = admin_client.post("/admin/mpesa/refundrequest/add/", {**form, "amount": "5000"})
    assert over.status_code == 200 and b"unapplied credit" in over.content
    assert not RefundRequest.objects.exists() and fake.payouts == []

    made = admin_client.post("/admin/mpesa/refundrequest/add/", form)

    assert made.status_code == 302
    request = RefundRequest.objects.get()
    assert (request.status, request.amount, request.requested_by) == ("pending", 1000, "admin")
    assert customer_credit(wanjiku.pk) == Decimal("500.00") and len(fake.payouts) == 1


def test_staff_resolve_timed_out_requests_in_the_admin_with_a_reason(admin_client, fake, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", make_paybill())
    b2c = make_b2c()
    request = refunds.request_b2c_refund(wanjiku, amount=1500, reason="Closing")
    deliver(b2c, "b2c-timeout", timeout_body(request))
    chosen = {"action": "resolve_failed", "_selected_action": [request.pk]}

    asked = admin_client.post("/admin/mpesa/refundrequest/", chosen)
    assert asked.status_code == 200 and b"Resolve as failed" in asked.content
    done = admin_client.post("/admin/mpesa/refundrequest/", {**chosen, "apply": "1", "reason": "Not in the portal"})

    assert done.status_code == 302
    request.refresh_from_db()
    assert (request.status, request.settled_by) == ("failed", "staff")
    assert customer_credit(wanjiku.pk) == Decimal("1500.00")


# --- end to end: Wavu → simulator → live server hook → worker ------------------------------------------


def sim_channels(server):
    config = server.state.config
    common = {
        "environment": "simulator",
        "base_url": server.base_url,
        "consumer_key": config.consumer_key,
        "consumer_secret": config.consumer_secret,
        "initiator_name": config.initiator,
        "security_credential": "simulated-credential",
        "allowlist_mode": "off",
    }
    paybill = channels.create_channel(name="Simulated paybill", kind="paybill", shortcode=config.paybill, **common)
    b2c = channels.create_channel(name="Simulated B2C", kind="b2c", shortcode=config.b2c_shortcode, **common)
    return paybill, b2c


def settle(request_id: int, *, results: int = 1, timeout: float = 30.0) -> RefundRequest:
    """Wait for `results` callbacks of the request's kind to reach the live server, then process what is
    stored as the worker would."""
    kinds = REFUND_KINDS
    deadline = time.monotonic() + timeout
    while InboundCallback.objects.filter(kind__in=kinds).count() < results and time.monotonic() < deadline:
        time.sleep(0.05)
    run_queued_tasks()
    for callback_id in InboundCallback.objects.filter(kind__in=kinds, status="received").values_list("pk", flat=True):
        services.process_callback(callback_id)
    return RefundRequest.objects.get(pk=request_id)


def test_end_to_end_a_b2c_refund_reaches_the_phone_and_the_books_keep_it(live_api, running_simulator):  # noqa: F811
    paybill, _ = sim_channels(running_simulator)
    customer = CustomerFactory(account_number="10030", phone="254708374149")
    mpesa_payment(customer, "2500.00", "SLR7E2E001", paybill)

    response = live_api.post(
        URL, {"kind": "b2c", "customer": customer.pk, "amount": 2000, "reason": "Overpaid"}, format="json"
    )
    assert response.status_code == 201, response.json()
    request = settle(response.json()["id"])

    assert (request.status, request.settled_by) == ("completed", "result") and request.receipt.startswith("SIM")
    assert customer_credit(customer.pk) == Decimal("500.00") and trial_balance()["balanced"]
    sent = call("GET", f"{running_simulator.base_url}/simulator/transactions?kind=b2c")[1]["transactions"]
    assert [(t["amount"], t["phone"], t["receipt"]) for t in sent] == [(2000, "254708374149", request.receipt)]
    assert sent[0]["request"]["Occassion"] == f"Wavu {request.pk}"


def test_end_to_end_a_b2c_refund_the_b2c_account_cannot_fund_gives_the_credit_back_once(
    live_api,  # noqa: F811
    running_simulator,  # noqa: F811
):
    paybill, _ = sim_channels(running_simulator)
    running_simulator.state.config.b2c_balance = 100
    running_simulator.state.config.default_script.update(copies=2, copy_interval=0.4)  # delivered twice
    customer = CustomerFactory(account_number="10031", phone="254708374149")
    mpesa_payment(customer, "2500.00", "SLR7E2E002", paybill)

    response = live_api.post(URL, {"kind": "b2c", "customer": customer.pk, "reason": "Overpaid"}, format="json")
    request = settle(response.json()["id"], results=2)

    assert (request.status, request.result_code) == ("failed", "1")
    assert "balance is too low" in request.outcome
    statuses = sorted(InboundCallback.objects.filter(kind="b2c_result").values_list("status", flat=True))
    assert statuses == ["duplicate", "processed"]
    assert customer_credit(customer.pk) == Decimal("2500.00")
    assert JournalEntry.objects.filter(kind="reversal").count() == 1 and trial_balance()["balanced"]


def test_end_to_end_a_c2b_payment_is_reversed_to_its_payer_and_its_invoice_reopens(
    live_api,  # noqa: F811
    running_simulator,  # noqa: F811
):
    paybill, _ = sim_channels(running_simulator)
    channels.register_c2b_urls(paybill)
    customer = CustomerFactory(account_number="10008", phone="254708374149")
    invoice = issued_invoice(customer, "1000.00")
    status, paid = call("POST", f"{running_simulator.base_url}/simulator/c2b/pay", {"amount": 1000, "account": "10008"})
    assert status == 200
    deadline = time.monotonic() + 30
    while not Payment.objects.exists() and time.monotonic() < deadline:
        run_queued_tasks()
        time.sleep(0.05)
    payment = Payment.objects.get(reference=paid["TransID"])
    invoice.refresh_from_db()
    assert invoice.status == "paid"

    response = live_api.post(URL, {"kind": "reversal", "payment": payment.pk, "reason": "Paid twice"}, format="json")
    assert response.status_code == 201, response.json()
    request = settle(response.json()["id"])

    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (request.status, payment.status, invoice.status) == ("completed", "reversed", "issued")
    assert request.result_parameters["OriginalTransactionID"] == paid["TransID"]
    assert trial_balance()["balanced"]
    again = live_api.post(URL, {"kind": "reversal", "payment": payment.pk, "reason": "again"}, format="json")
    assert again.status_code == 409


def test_end_to_end_a_queue_timeout_leaves_the_refund_for_staff(live_api, running_simulator):  # noqa: F811
    paybill, _ = sim_channels(running_simulator)
    status, _ = call("POST", f"{running_simulator.base_url}/simulator/payouts/next", {"outcome": "queue_timeout"})
    assert status == 200
    customer = CustomerFactory(account_number="10033", phone="254708374149")
    mpesa_payment(customer, "800.00", "SLR7E2E003", paybill)

    response = live_api.post(URL, {"kind": "b2c", "customer": customer.pk, "reason": "Overpaid"}, format="json")
    request = settle(response.json()["id"])

    assert request.status == "timed_out" and customer_credit(customer.pk) == 0
    assert InboundCallback.objects.get().kind == "b2c_timeout"

"""End to end through the Daraja simulator: Wavu runs on a live server, the simulator runs as a real HTTP
server, and they talk to each other the documented way. Wavu registers its C2B URLs through the channel
API; the simulator's customers pay by paybill or till, or answer STK prompts; the simulator calls Wavu's
hooks; the worker (`run_queued_tasks`) processes what was stored; staff see the outcome in the API.

STK runs for one request at a time (paid, cancelled, delivered three times) are in test_stk_api.py; here
the whole C2B path and an invoice whose first prompt is cancelled and whose second is delivered twice."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from django.utils import timezone

from wavu.billing import dunning
from wavu.billing import services as billing
from wavu.catalog.models import Plan
from wavu.core import clock
from wavu.core.identifiers import make_account_number
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.mpesa import channels
from wavu.mpesa.models import InboundCallback, PaymentChannel, StkRequest
from wavu.mpesa.tests.test_stk_api import live_api  # noqa: F401 - staff API client on a live server
from wavu.mpesa_simulator import SimulatorServer, State
from wavu.mpesa_simulator.tests.support import call, fast_config, wait_until
from wavu.payments.models import Allocation, Payment
from wavu.payments.tests.factories import issued_invoice
from wavu.subscriptions.models import Status, SuspensionCause
from wavu.testing.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from wavu.testing.tasks import run_queued_tasks

REQUESTS = "/api/v1/payment-requests/"
PAYER = "254708374149"  # the sandbox's test MSISDN; no scripted behaviour in the simulator


@pytest.fixture
def simulator():
    """The simulator on a free port, quick to act; Wavu's validation answer may take up to 5 s (a slow
    test machine) before the simulator falls back to the registered ResponseType."""
    server = SimulatorServer(("127.0.0.1", 0), state=State(fast_config(validation_timeout=5.0))).start()
    yield server
    server.stop()


def simulated_channel(server: SimulatorServer, **fields) -> PaymentChannel:
    """A channel pointing at the simulator with the credentials it accepts. The simulator calls from
    127.0.0.1, so the Safaricom address allowlist is off."""
    config = server.state.config
    values = {
        "name": "Simulated paybill",
        "kind": "paybill",
        "shortcode": config.paybill,
        "environment": "simulator",
        "base_url": server.base_url,
        "consumer_key": config.consumer_key,
        "consumer_secret": config.consumer_secret,
        "passkey": config.passkey,
        "allowlist_mode": "off",
    }
    return channels.create_channel(**{**values, **fields})


def register_c2b_urls(api, channel: PaymentChannel) -> dict:
    response = api.post(
        f"/api/v1/payment-channels/{channel.pk}/register-c2b-urls/", {"response_type": "Completed"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["registered"] is True
    return response.json()


def pay_at_the_simulator(server: SimulatorServer, **body) -> dict:
    """A customer pays the simulator's shortcode (the control API's C2B payment); returns the finished
    simulator transaction once the validation and confirmation reached Wavu (or it stopped)."""
    status, answer = call("POST", server.base_url + "/simulator/c2b/pay", body)
    assert status == 200, answer
    trans_id = answer["TransID"]

    def finished():
        record = server.state.transaction(trans_id)
        expected = 2 if record["status"] == "completed" else 1
        return record if record["status"] != "pending" and len(record["deliveries"]) >= expected else None

    record = wait_until(finished, timeout=30.0)
    assert record, server.state.transaction(trans_id)
    return record


def work_until(predicate, timeout: float = 30.0):
    """Run the worker's queue until `predicate()` is true (or the time is up); returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        run_queued_tasks()
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def delivered(record: dict, purpose: str) -> list[tuple[int, object]]:
    """(HTTP status, Wavu's answer) of each delivery the simulator made for `purpose`."""
    return [(d.get("status"), d.get("answer")) for d in record["deliveries"] if d["purpose"] == purpose]


def suspense_references(api) -> list[str]:
    """The references of the payments waiting in suspense, as staff see them in the payments API."""
    body = api.get("/api/v1/payments/", {"status": "unmatched"}).json()
    return [row["reference"] for row in (body["results"] if isinstance(body, dict) else body)]


def suspended_for_an_overdue_invoice(customer):
    """A postpaid service whose invoice, issued 20 days ago, is past its due date and the grace period:
    dunning has suspended it."""
    plan = PlanFactory(name="Home Fibre 20 Mbps", kind=Plan.Kind.POSTPAID, with_price=Decimal("2999.00"))
    start = clock.today() - dt.timedelta(days=20)
    period_start = timezone.make_aware(dt.datetime.combine(start, dt.time()))
    service = SubscriptionFactory(
        customer=customer,
        plan=plan,
        current_period_start=period_start,
        current_period_end=period_start + dt.timedelta(days=30),
    )
    invoice = billing.invoice_subscription_period(service, start, start + dt.timedelta(days=29), issue_date=start)
    dunning.run_dunning()
    service.refresh_from_db()
    assert (service.status, service.suspension_cause) == (Status.SUSPENDED, SuspensionCause.OVERDUE)
    return service, invoice


# --- (a) paybill ------------------------------------------------------------------------------------------------


def test_a_suspended_customer_pays_by_paybill_through_the_simulator_and_is_reconnected(live_api, simulator):  # noqa: F811
    channel = simulated_channel(simulator)
    urls = register_c2b_urls(live_api, channel)
    registration = simulator.state.registrations[channel.shortcode]
    assert (registration["version"], registration["ResponseType"]) == (2, "Completed")  # v2: masked MSISDNs
    assert (registration["ConfirmationURL"], registration["ValidationURL"]) == (
        urls["confirmation_url"],
        urls["validation_url"],
    )
    customer = CustomerFactory(account_number=make_account_number(1003), phone="254712000003")
    service, invoice = suspended_for_an_overdue_invoice(customer)

    record = pay_at_the_simulator(simulator, amount=int(invoice.total), account=customer.account_number, phone=PAYER)

    assert record["status"] == "completed"
    assert delivered(record, "c2b_validation") == [(200, {"ResultCode": "0", "ResultDesc": "Accepted"})]
    assert delivered(record, "c2b_confirmation") == [(200, {"ResultCode": 0, "ResultDesc": "Success"})]
    validation = InboundCallback.objects.get(kind="c2b_validation")
    assert validation.status == "processed" and validation.outcome.startswith("accepted: account number")

    payment = work_until(lambda: Payment.objects.filter(reference=record["id"]).first())
    assert payment is not None, list(InboundCallback.objects.values_list("kind", "status", "outcome"))
    assert (payment.customer, payment.source, payment.amount) == (customer, channel.shortcode, invoice.total)
    assert payment.payer_phone == record["callback"]["MSISDN"] and "*" in payment.payer_phone  # masked by v2
    confirmation = InboundCallback.objects.get(kind="c2b_confirmation")
    assert (confirmation.status, confirmation.payment) == ("processed", payment)
    invoice.refresh_from_db()
    assert invoice.status == "paid"

    def reconnected():
        service.refresh_from_db()
        return service.status == Status.ACTIVE

    assert work_until(reconnected), service.status
    assert service.suspension_cause == "" and service.events.filter(kind="resumed").count() == 1
    assert customer_balance(customer.pk) == 0 and trial_balance()["balanced"]


def test_a_paybill_payment_to_an_unknown_account_is_refused_at_validation_and_never_arrives(live_api, simulator):  # noqa: F811
    channel = simulated_channel(simulator, validation="reject_unknown")
    register_c2b_urls(live_api, channel)

    record = pay_at_the_simulator(simulator, amount=500, account="NOBODY-HERE", phone=PAYER)

    assert (record["status"], record["result_code"]) == ("rejected", "C2B00012")
    assert delivered(record, "c2b_validation") == [(200, {"ResultCode": "C2B00012", "ResultDesc": "Rejected"})]
    assert delivered(record, "c2b_confirmation") == []
    assert list(InboundCallback.objects.values_list("kind", "status")) == [("c2b_validation", "processed")]
    run_queued_tasks()
    assert not Payment.objects.exists()


# --- (b) till, no account: suspense, then staff match it ---------------------------------------------------------


def test_a_till_payment_without_an_account_waits_in_suspense_until_staff_match_it(live_api, simulator):  # noqa: F811
    config = simulator.state.config
    till = simulated_channel(
        simulator, name="Shop till", kind="till", shortcode=config.till_store, till_number=config.till
    )
    register_c2b_urls(live_api, till)
    customer = CustomerFactory(account_number=make_account_number(1004), phone="254712000004")
    invoice = issued_invoice(customer, "800.00")

    # The simulator keeps a registration per shortcode paid; Wavu registers the till's store number.
    record = pay_at_the_simulator(
        simulator, amount=800, shortcode=config.till_store, command="CustomerBuyGoodsOnline", phone=PAYER
    )

    assert record["status"] == "completed" and record["callback"]["TransactionType"] == "Buy Goods"
    assert record["callback"]["BillRefNumber"] == ""
    payment = work_until(lambda: Payment.objects.filter(reference=record["id"]).first())
    assert payment is not None, list(InboundCallback.objects.values_list("kind", "status", "outcome"))
    assert (payment.status, payment.customer, payment.source) == ("unmatched", None, till.shortcode)
    assert customer_balance(customer.pk) == invoice.total  # nothing reached the customer yet

    assert suspense_references(live_api) == [record["id"]]

    response = live_api.post(
        f"/api/v1/payments/{payment.pk}/match/",
        {"customer": customer.pk, "reason": "paid at the shop till; the customer read us the receipt"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (payment.status, payment.customer) == ("received", customer)
    assert invoice.status == "paid" and Allocation.objects.get(payment=payment).invoice == invoice
    assert JournalEntry.objects.filter(kind="payment").count() == 1  # matching moved it, it did not pay twice
    assert customer_balance(customer.pk) == 0 and trial_balance()["balanced"]
    assert suspense_references(live_api) == []


# --- (c) STK push for an invoice ---------------------------------------------------------------------------------


def answered(server: SimulatorServer, response, copies: int = 1) -> StkRequest:
    """Wait until the simulator has delivered `copies` callbacks for the push the API `response` made,
    then let the worker process them. (Waiting on the simulator, not on the database, keeps the test
    thread off SQLite while the live server writes.)"""
    assert response.status_code == 201, response.json()
    checkout = response.json()["checkout_request_id"]
    arrived = wait_until(lambda: len(server.state.transaction(checkout)["deliveries"]) >= copies, 10.0)
    assert arrived, server.state.transaction(checkout)
    request_id = response.json()["id"]
    work_until(lambda: not InboundCallback.objects.filter(kind="stk_callback", status="received").exists())
    return StkRequest.objects.get(pk=request_id)


def test_an_invoice_prompt_cancelled_then_paid_with_a_repeated_callback_pays_the_invoice_once(live_api, simulator):  # noqa: F811
    simulated_channel(simulator)
    customer = CustomerFactory(account_number=make_account_number(1005), phone=PAYER)
    invoice = issued_invoice(customer, "1200.00")

    call("POST", simulator.base_url + "/simulator/next", {"outcome": "cancelled", "delay": 0.5})
    response = live_api.post(REQUESTS, {"purpose": "invoice", "invoice": invoice.pk}, format="json")
    cancelled = answered(simulator, response)

    assert (cancelled.status, cancelled.result_code, cancelled.settled_by) == ("cancelled", "1032", "callback")
    polled = live_api.get(f"{REQUESTS}{cancelled.pk}/").json()
    assert polled["status"] == "cancelled" and "you cancelled the m-pesa prompt" in polled["customer_message"].lower()
    assert not Payment.objects.exists()

    # The customer tries again and pays; M-Pesa delivers the callback twice.
    script = {"outcome": "success", "delay": 0.5, "copies": 2, "copy_interval": 0.4}
    call("POST", simulator.base_url + "/simulator/next", script)
    response = live_api.post(REQUESTS, {"purpose": "invoice", "invoice": invoice.pk}, format="json")
    paid = answered(simulator, response, copies=2)

    payment = Payment.objects.get()
    assert (paid.status, paid.settled_by, paid.payment) == ("paid", "callback", payment)
    assert (payment.reference, payment.amount, payment.customer) == (paid.receipt, Decimal("1200.00"), customer)
    invoice.refresh_from_db()
    assert invoice.status == "paid" and Allocation.objects.get().invoice == invoice
    assert sorted(InboundCallback.objects.filter(kind="stk_callback").values_list("status", flat=True)) == [
        "duplicate",
        "processed",
        "processed",
    ]
    record = simulator.state.transaction(paid.checkout_request_id)
    assert delivered(record, "stk_callback") == [(200, {"ResultCode": 0, "ResultDesc": "Accepted"})] * 2
    polled = live_api.get(f"{REQUESTS}{paid.pk}/").json()
    assert (polled["status"], polled["receipt"]) == ("paid", paid.receipt) and "Thank you" in polled["customer_message"]
    assert customer_balance(customer.pk) == 0 and trial_balance()["balanced"]

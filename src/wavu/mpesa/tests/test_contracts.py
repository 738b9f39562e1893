"""Contract tests: every payload shape Safaricom documents, recorded in data/payloads/ (one file per shape),
posted byte for byte through the real hooks. For each: what is kept, what Daraja is answered, and what it
did to the money — a payment, its journal entry, suspense, the STK request — or, on failures and bad
input, that nothing was paid.

Processing is called directly (`services.process_callback`), as the worker does for each stored callback.
The hooks' security (tokens, methods, allowlists) and most bad C2B confirmations are in test_c2b_hooks.py;
this file fills the gaps for the other hooks and for amounts."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.mpesa import reconciliation, services, stk
from wavu.mpesa.daraja import DarajaClient
from wavu.mpesa.models import InboundCallback, PaymentChannel, StkRequest
from wavu.mpesa.tests.test_c2b_hooks import SAFARICOM_IP, hook_url, make_channel
from wavu.payments.models import Allocation, Payment
from wavu.payments.selectors import suspense_queue
from wavu.payments.services import record_payment
from wavu.payments.tests.factories import issued_invoice
from wavu.testing.factories import CustomerFactory

pytestmark = pytest.mark.django_db

PAYLOADS = Path(__file__).parent / "data" / "payloads"
NAIROBI = services.MPESA_TIME_ZONE
CONFIRMATION_ACK = {"ResultCode": 0, "ResultDesc": "Success"}
CALLBACK_ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}
ACCEPTED = {"ResultCode": "0", "ResultDesc": "Accepted"}
CHECKOUT_ID = "ws_CO_191220191020363925"


def recorded(name: str) -> bytes:
    """The recorded payload, exactly as it will be sent."""
    return (PAYLOADS / f"{name}.json").read_bytes()


def changed(name: str, edit) -> bytes:
    """A recorded payload with one thing changed by `edit(data)` (for bad input)."""
    data = json.loads(recorded(name))
    edit(data)
    return json.dumps(data).encode()


def post(channel: PaymentChannel, hook: str, body: bytes | str):
    """POST as Safaricom does. The test client raises on a server error, so a 500 fails the test."""
    return Client().post(hook_url(channel, hook), data=body, content_type="application/json", REMOTE_ADDR=SAFARICOM_IP)


def the_callback() -> InboundCallback:
    return InboundCallback.objects.order_by("-pk").first()


def booked(payment: Payment) -> set[tuple[str, Decimal]]:
    """The payment's own journal entry as {(account code, amount)}: debit positive, credit negative."""
    entry = JournalEntry.objects.get(kind="payment", source_type="payments.payment", source_id=str(payment.pk))
    return {(posting.account.code, posting.amount) for posting in entry.postings.select_related("account")}


def nothing_paid() -> bool:
    return not Payment.objects.exists() and not JournalEntry.objects.filter(kind="payment").exists()


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture
def paybill():
    return make_channel()  # shortcode 600638, as in the documented samples


@pytest.fixture
def till():
    return make_channel(name="Shop till", kind="till", shortcode="600100", till_number="600101")


@pytest.fixture
def wanjiku():
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008", phone="254712345678")


# --- C2B validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "validation", "outcome"),
    [
        ("c2b_paybill_validation", "accept_all", "accepted: account number 10008 (10008)"),
        ("c2b_paybill_validation", "reject_unknown", "accepted: account number 10008 (10008)"),
        ("c2b_till_buy_goods_validation", "accept_all", "accepted: no account reference was given"),
    ],
)
def test_a_documented_validation_is_answered_accepted_kept_and_pays_nothing(
    paybill, till, wanjiku, name, validation, outcome
):
    channel = till if "till" in name else paybill
    PaymentChannel.objects.filter(pk=channel.pk).update(validation=validation)

    response = post(channel, "c2b-validation", recorded(name))

    assert response.status_code == 200 and response.json() == ACCEPTED
    callback = the_callback()
    assert (callback.kind, callback.status, callback.outcome) == ("c2b_validation", "processed", outcome)
    assert callback.body == recorded(name).decode() and callback.reference == json.loads(recorded(name))["TransID"]
    assert nothing_paid()


# --- C2B confirmation --------------------------------------------------------------------------------------

# fixture → (the amount it pays, the payer's name as kept, credited to Wanjiku's account 10008 or suspense)
CONFIRMATIONS = {
    "c2b_paybill_confirmation": ("1500.00", "John", True),
    "c2b_till_buy_goods_confirmation": ("750.00", "John", False),
    "c2b_masked_msisdn_confirmation": ("1500.00", "WANJIKU", True),
    "c2b_hashed_msisdn_confirmation": ("1500.00", "WANJIKU", True),
    "c2b_amount_number_confirmation": ("1500.00", "John", True),
    "c2b_amount_cents_confirmation": ("1499.50", "John", True),
    "c2b_amount_number_cents_confirmation": ("1499.50", "John", True),
    "c2b_nameless_payer_confirmation": ("1500.00", "", True),
    "c2b_sandbox_type_confirmation": ("1500.00", "John", True),
}


@pytest.mark.parametrize("name", list(CONFIRMATIONS))
def test_a_documented_confirmation_is_kept_acknowledged_and_becomes_one_booked_payment(paybill, till, wanjiku, name):
    amount, payer_name, to_wanjiku = CONFIRMATIONS[name]
    amount = Decimal(amount)
    sent = json.loads(recorded(name))
    channel = till if sent["TransactionType"] == "Buy Goods" else paybill

    response = post(channel, "c2b-confirmation", recorded(name))

    assert response.status_code == 200 and response.json() == CONFIRMATION_ACK
    callback = the_callback()
    assert (callback.kind, callback.status, callback.reference) == ("c2b_confirmation", "received", sent["TransID"])
    assert callback.body == recorded(name).decode() and callback.source_ip == SAFARICOM_IP
    assert nothing_paid()  # acknowledged before anything is processed

    callback = services.process_callback(callback.pk)

    payment = Payment.objects.get()
    assert (callback.status, callback.payment, callback.attempts) == ("processed", payment, 1)
    assert (payment.method, payment.source, payment.reference) == ("mpesa", channel.shortcode, sent["TransID"])
    assert payment.amount == amount and payment.payer_name == payer_name
    assert payment.payer_phone == sent["MSISDN"]  # masked or hashed: kept exactly as sent, never used to match
    assert payment.received_at == dt.datetime(2019, 11, 22, 6, 38, 45, tzinfo=NAIROBI)
    assert payment.account_reference == sent["BillRefNumber"]
    if to_wanjiku:
        assert (payment.customer, payment.status) == (wanjiku, "received")
        assert booked(payment) == {("1030", amount), ("2200", -amount)}
        assert customer_balance(wanjiku.pk) == -amount
        assert callback.outcome == "credited to 10008, matched by account number 10008"
    else:
        assert (payment.customer, payment.status) == (None, "unmatched")
        assert booked(payment) == {("1030", amount), ("2300", -amount)}
        assert list(suspense_queue()) == [payment] and customer_balance(wanjiku.pk) == 0
        assert callback.outcome == "in suspense: no account reference was given (blank)"
    assert trial_balance()["balanced"]

    again = services.process_callback(callback.pk)  # the job running twice changes nothing
    assert (again.status, again.attempts) == ("processed", 1) and Payment.objects.count() == 1


# --- STK push: the documented answer and callbacks -----------------------------------------------------------


def documented_daraja(request: httpx.Request) -> httpx.Response:
    """Daraja answering as documented: a token, and the recorded STK push answer."""
    if request.url.path == "/oauth/v1/generate":
        return httpx.Response(200, json={"access_token": "c9SQxWWhmdVRlyh0zh8gZDTkubVF", "expires_in": "3599"})
    if request.url.path == "/mpesa/stkpush/v1/processrequest":
        return httpx.Response(200, content=recorded("stk_push_accepted"), headers={"Content-Type": "application/json"})
    return httpx.Response(404, json={"errorCode": "404.001.03", "errorMessage": "Invalid Access Token"})


@pytest.fixture
def stk_channel():
    now = timezone.now()
    return PaymentChannel.objects.create(
        name="Main paybill",
        kind="paybill",
        shortcode="174379",
        consumer_key="key",
        consumer_secret="secret",
        passkey="test-passkey",
        created_at=now,
        updated_at=now,
    )


def push(purpose: str, **kwargs) -> StkRequest:
    """An STK push through the real Daraja client, answered with the recorded `stk_push_accepted`."""
    transport = httpx.MockTransport(documented_daraja)
    request = stk.request_stk_push(
        purpose, client_factory=lambda channel: DarajaClient(channel, transport=transport), **kwargs
    )
    assert (request.status, request.checkout_request_id) == ("pending", CHECKOUT_ID)
    assert request.merchant_request_id == "29115-34620561-1"
    return request


@pytest.mark.parametrize("name", ["stk_callback_success", "stk_callback_success_shuffled"])
def test_a_documented_stk_success_pays_the_invoice_once_by_its_receipt(stk_channel, wanjiku, name):
    invoice = issued_invoice(wanjiku, "1500.00")
    request = push("invoice", invoice=invoice)

    response = post(stk_channel, "stk-callback", recorded(name))

    assert response.status_code == 200 and response.json() == CALLBACK_ACK
    callback = the_callback()
    assert (callback.kind, callback.status, callback.reference) == ("stk_callback", "received", CHECKOUT_ID)
    assert callback.body == recorded(name).decode() and nothing_paid()

    callback = services.process_callback(callback.pk)

    payment = Payment.objects.get()
    assert (callback.status, callback.payment, callback.reference) == ("processed", payment, "LHG31AA5TX")
    assert (payment.method, payment.source, payment.reference) == ("mpesa", "174379", "LHG31AA5TX")
    assert (payment.amount, payment.customer, payment.status) == (Decimal("1500.00"), wanjiku, "received")
    assert payment.payer_phone == "254712345678"  # PhoneNumber arrives as a number
    assert payment.received_at == dt.datetime(2019, 12, 19, 10, 21, 15, tzinfo=NAIROBI)  # TransactionDate, a number
    request.refresh_from_db()
    assert (request.status, request.result_code, request.receipt, request.payment) == (
        "paid",
        "0",
        "LHG31AA5TX",
        payment,
    )
    assert request.settled_by == "callback" and "LHG31AA5TX" in request.customer_message
    invoice.refresh_from_db()
    assert invoice.status == "paid" and Allocation.objects.get().invoice == invoice
    assert booked(payment) == {("1030", Decimal("1500.00")), ("2200", Decimal("-1500.00"))}
    assert customer_balance(wanjiku.pk) == 0 and trial_balance()["balanced"]

    post(stk_channel, "stk-callback", recorded(name))  # Safaricom delivers it again
    assert services.process_callback(the_callback().pk).status == "duplicate"
    assert Payment.objects.count() == 1 and JournalEntry.objects.filter(kind="payment").count() == 1


# fixture → (ResultCode, request status, words from what the customer is told)
STK_FAILURES = {
    "stk_callback_cancelled": ("1032", "cancelled", "you cancelled the m-pesa prompt"),
    "stk_callback_wrong_pin": ("2001", "failed", "pin was wrong"),
    "stk_callback_insufficient_funds": ("1", "failed", "balance (with fuliza) is not enough"),
    "stk_callback_unreachable": ("1037", "expired", "could not reach your phone"),
    "stk_callback_push_error": ("1025", "failed", "try again in a few minutes"),
    "stk_callback_expired": ("1019", "expired", "prompt expired"),
    "stk_callback_subscriber_locked": ("1001", "failed", "busy with another m-pesa transaction"),
}


@pytest.mark.parametrize("name", list(STK_FAILURES))
def test_a_documented_stk_failure_settles_the_request_tells_the_customer_and_pays_nothing(stk_channel, wanjiku, name):
    code, status, words = STK_FAILURES[name]
    invoice = issued_invoice(wanjiku, "1500.00")
    request = push("invoice", invoice=invoice)

    response = post(stk_channel, "stk-callback", recorded(name))

    assert response.status_code == 200 and response.json() == CALLBACK_ACK
    callback = services.process_callback(the_callback().pk)

    assert (callback.kind, callback.status, callback.payment) == ("stk_callback", "processed", None)
    request.refresh_from_db()
    sent = json.loads(recorded(name))["Body"]["stkCallback"]
    assert (request.status, request.result_code, request.result_desc) == (status, code, sent["ResultDesc"])
    assert words in request.customer_message.lower() and request.settled_by == "callback"
    assert request.payment is None and request.receipt == ""
    invoice.refresh_from_db()
    assert invoice.status == "issued" and nothing_paid() and not Allocation.objects.exists()


# --- Transaction Status -----------------------------------------------------------------------------------------


def test_a_documented_completed_status_result_records_the_missing_receipt_in_suspense(paybill):
    response = post(paybill, "status-result", recorded("status_result_completed"))

    assert response.status_code == 200 and response.json() == CALLBACK_ACK
    callback = the_callback()
    assert (callback.kind, callback.status, callback.reference) == ("status_result", "received", "LGR919G2AV")
    assert nothing_paid()

    callback = services.process_callback(callback.pk)

    payment = Payment.objects.get()
    assert (callback.status, callback.payment) == ("processed", payment)
    assert (payment.source, payment.reference, payment.amount) == ("600638", "LGR919G2AV", Decimal("450.00"))
    assert (payment.customer, payment.status) == (None, "unmatched")
    assert (payment.payer_name, payment.payer_phone) == ("John Doe", "25470****149")
    assert payment.received_at == dt.datetime(2019, 11, 22, 6, 38, 45, tzinfo=NAIROBI)  # FinalisedTime
    assert payment.notes == reconciliation.FOUND_BY_STATUS_NOTE
    assert booked(payment) == {("1030", Decimal("450.00")), ("2300", Decimal("-450.00"))}
    assert trial_balance()["balanced"]


def test_a_status_result_for_a_receipt_wavu_already_has_is_a_duplicate_and_books_nothing(paybill, wanjiku):
    known, _ = record_payment(method="mpesa", source="600638", reference="LGR919G2AV", amount="450", customer=wanjiku)
    post(paybill, "status-result", recorded("status_result_completed"))

    callback = services.process_callback(the_callback().pk)

    assert (callback.status, callback.payment) == ("duplicate", known)
    assert Payment.objects.get().customer == wanjiku  # not moved to suspense
    assert JournalEntry.objects.filter(kind="payment").count() == 1


def test_a_documented_failed_status_result_is_noted_and_records_nothing(paybill):
    response = post(paybill, "status-result", recorded("status_result_failed"))

    assert response.status_code == 200 and response.json() == CALLBACK_ACK
    callback = services.process_callback(the_callback().pk)

    assert (callback.status, callback.outcome) == (
        "processed",
        "query failed: 2001 The initiator information is invalid.",
    )
    assert nothing_paid()


def test_a_status_timeout_is_kept_for_staff_to_ask_again_and_records_nothing(paybill):
    response = post(paybill, "status-timeout", recorded("status_timeout"))

    assert response.status_code == 200 and response.json() == CALLBACK_ACK
    callback = the_callback()
    assert (callback.kind, callback.status, callback.outcome) == ("status_timeout", "received", services.STORED_ONLY)
    assert services.process_callback(callback.pk).status == "received" and nothing_paid()
    assert [(q.receipt, q.callback_id) for q in reconciliation.timed_out_status_queries()] == [
        ("LGR919G2AV", callback.pk)
    ]


# --- bad input: refused at the door --------------------------------------------------------------------------


def door(hook: str, body, http_status: int, code: str, field: str | None = None, *, case: str):
    return pytest.param(hook, body, http_status, code, field, id=f"{hook}: {case}")


def c2b_with(**changes) -> bytes:
    return changed("c2b_paybill_confirmation", lambda data: data.update(changes))


NOT_JSON = {
    "malformed JSON": ('{"Body": {"stkCallback": ', 400, "malformed_json"),
    "a JSON list": ("[1, 2]", 400, "not_an_object"),
    "not UTF-8": (b'{"Result": "\xff\xfe"}', 400, "malformed_json"),
    "NaN": ('{"Result": {"ResultCode": NaN}}', 400, "malformed_json"),
    "oversized": (json.dumps({"Body": {"stkCallback": {"ResultDesc": "x" * 20_000}}}), 413, "body_too_large"),
}
BAD_INPUT = [
    door(hook, body, http_status, code, case=case)
    for hook in ("c2b-validation", "stk-callback", "status-result", "status-timeout")
    for case, (body, http_status, code) in NOT_JSON.items()
] + [
    door(
        "c2b-confirmation", c2b_with(TransAmount=-1500), 400, "invalid_payload", "TransAmount", case="negative number"
    ),
    door("c2b-confirmation", c2b_with(TransAmount="1500 KES"), 400, "invalid_payload", "TransAmount", case="currency"),
    door("c2b-confirmation", c2b_with(TransAmount="NaN"), 400, "invalid_payload", "TransAmount", case="NaN as text"),
    door("c2b-confirmation", c2b_with(TransAmount="Infinity"), 400, "invalid_payload", "TransAmount", case="Infinity"),
    door(
        "c2b-confirmation",
        c2b_with(TransAmount="100000000.01"),
        400,
        "invalid_payload",
        "TransAmount",
        case="over the largest amount",
    ),
    door(
        "c2b-confirmation", c2b_with(TransAmount=1499.505), 400, "invalid_payload", "TransAmount", case="part of a cent"
    ),
    door(
        "c2b-confirmation",
        c2b_with(MSISDN={"masked": "2547 ***** 126"}),
        400,
        "invalid_payload",
        "MSISDN",
        case="MSISDN as an object",
    ),
    door(
        "c2b-confirmation",
        c2b_with(TransTime="2019-11-22 06:38:45"),
        400,
        "invalid_payload",
        "TransTime",
        case="TransTime with dashes",
    ),
    door(
        "c2b-confirmation",
        c2b_with(TransAmount="1e30"),
        400,
        "invalid_payload",
        "TransAmount",
        case="an amount beyond the money type",
    ),
]


@pytest.mark.parametrize(("hook", "body", "http_status", "code", "field"), BAD_INPUT)
def test_bad_input_is_a_clear_4xx_in_the_error_format_kept_as_rejected_and_never_paid(
    paybill, wanjiku, hook, body, http_status, code, field
):
    response = post(paybill, hook, body)

    assert response.status_code == http_status
    error = response.json()["error"]
    assert set(error) == {"code", "message", "fields"} and error["code"] == code and error["message"]
    if field:
        assert field in error["fields"]
    callback = the_callback()
    assert callback.status == "rejected" and callback.outcome.startswith(f"{http_status}: ")
    assert services.process_callback(callback.pk).status == "rejected"
    assert nothing_paid()


# --- bad input: well-formed JSON of the wrong shape at the STK and status hooks --------------------------------
# These hooks check only that the body is a JSON object before acknowledging (Safaricom gets its answer
# at once); the job then reads the body strictly and rejects it. Either way: kept, never paid.


def stk_item(name: str, value, *, raw: str = "") -> bytes:
    """The recorded STK success with item `name` set to `value` (or to the JSON text `raw`)."""

    def edit(data):
        for item in data["Body"]["stkCallback"]["CallbackMetadata"]["Item"]:
            if item["Name"] == name:
                item["Value"] = "raw-value" if raw else value

    body = changed("stk_callback_success", edit)
    return body.replace(b'"raw-value"', raw.encode()) if raw else body


def status_parameter(key: str, value) -> bytes:
    def edit(data):
        for item in data["Result"]["ResultParameters"]["ResultParameter"]:
            if item["Key"] == key:
                item["Value"] = value

    return changed("status_result_completed", edit)


WRONG_SHAPES = [
    pytest.param("stk-callback", json.dumps({"Body": {"stkCallback": "cancelled"}}), id="stk: no stkCallback object"),
    pytest.param(
        "stk-callback",
        changed("stk_callback_success", lambda data: data["Body"]["stkCallback"].update(ResultCode={"code": 0})),
        id="stk: ResultCode as an object",
    ),
    pytest.param("stk-callback", stk_item("Amount", -1500), id="stk: a negative Amount"),
    pytest.param("stk-callback", stk_item("Amount", "fifteen hundred"), id="stk: Amount in words"),
    pytest.param("stk-callback", stk_item("MpesaReceiptNumber", 31415), id="stk: MpesaReceiptNumber as a number"),
    pytest.param("stk-callback", stk_item("TransactionDate", 20191399102115), id="stk: TransactionDate not a date"),
    pytest.param("status-result", json.dumps({"Result": "done"}), id="status: Result as text"),
    pytest.param("status-result", status_parameter("Amount", -450), id="status: a negative Amount"),
    pytest.param(
        "stk-callback",
        stk_item("Amount", None, raw="1E+30"),
        id="stk: an Amount beyond the money type",
    ),
]


@pytest.mark.parametrize(("hook", "body"), WRONG_SHAPES)
def test_a_wrong_shaped_stk_or_status_body_is_acknowledged_kept_and_rejected_never_paid(
    stk_channel, paybill, wanjiku, hook, body
):
    channel = stk_channel if hook == "stk-callback" else paybill
    request = push("top_up", customer=wanjiku, amount=1500) if hook == "stk-callback" else None

    response = post(channel, hook, body)

    assert response.status_code == 200 and response.json() == CALLBACK_ACK
    callback = services.process_callback(the_callback().pk)
    assert callback.status == "rejected" and callback.outcome and callback.payment is None
    assert nothing_paid()
    if request is not None:
        request.refresh_from_db()
        assert request.status == "pending"  # still waiting for a real answer (or the janitor's query)

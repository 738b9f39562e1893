"""The paybill hooks as Safaricom calls them: validation and confirmation over HTTP, the answers
Daraja expects, and everything a stranger could send refused with a clear 4xx, kept for audit and
never turned into money.

Helpers at the top are shared by the other C2B test files (they import them from here)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from wavu.billing import dunning
from wavu.billing import services as billing
from wavu.catalog.models import Plan
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, trial_balance
from wavu.mpesa.models import SAFARICOM_CALLBACK_IPS, InboundCallback, PaymentChannel
from wavu.mpesa.services import STORED_ONLY
from wavu.payments.models import Payment
from wavu.subscriptions.models import Status, SuspensionCause
from wavu.testing.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from wavu.testing.tasks import run_queued_tasks

pytestmark = pytest.mark.django_db

SAFARICOM_IP = "196.201.214.200"
STRANGER_IP = "203.0.113.9"
HOOKS = ("c2b-validation", "c2b-confirmation", "stk-callback", "status-result", "status-timeout")


# --- shared helpers ----------------------------------------------------------------------------------


def make_channel(**fields) -> PaymentChannel:
    now = timezone.now()
    values = {"name": "Main paybill", "kind": "paybill", "shortcode": "600638", "created_at": now, "updated_at": now}
    return PaymentChannel.objects.create(**{**values, **fields})


def c2b_payload(**overrides) -> dict:
    """The documented C2B confirmation (mpesa-daraja.md §1.6), with the account and amount to test."""
    payload = {
        "TransactionType": "Pay Bill",
        "TransID": "RKTQDM7W6S",
        "TransTime": "20191122063845",
        "TransAmount": "10.00",
        "BusinessShortCode": "600638",
        "BillRefNumber": "invoice008",
        "InvoiceNumber": "",
        "OrgAccountBalance": "49197.00",
        "ThirdPartyTransID": "",
        "MSISDN": "25470****149",
        "FirstName": "John",
        "MiddleName": "",
        "LastName": "",
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def trans_time(moment: dt.datetime) -> str:
    return timezone.localtime(moment).strftime("%Y%m%d%H%M%S")


def hook_url(channel_or_token, name: str = "c2b-confirmation") -> str:
    token = channel_or_token if isinstance(channel_or_token, str) else channel_or_token.hook_token
    return reverse(f"mpesa-hooks:{name}", args=[token])


def post(client, channel, payload, name: str = "c2b-confirmation", *, source=SAFARICOM_IP, **extra):
    body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    return client.post(hook_url(channel, name), data=body, content_type="application/json", REMOTE_ADDR=source, **extra)


def work(capture) -> int:
    """Run queued jobs, and the jobs their commits enqueue, until nothing is left (as `wavu worker`)."""
    total = 0
    while True:
        with capture(execute=True):
            ran = run_queued_tasks()
        total += ran
        if not ran:
            return total


def pay_by_paybill(client, channel, capture, payload, **extra):
    """Deliver a confirmation through the hook and let the worker process it."""
    with capture(execute=True):
        response = post(client, channel, payload, **extra)
    work(capture)
    return response


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def channel():
    return make_channel()


@pytest.fixture
def client():
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def wanjiku():
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008", phone="254712345678")


# --- the documented happy paths ------------------------------------------------------------------------


def test_a_documented_confirmation_is_stored_acknowledged_and_becomes_one_matched_payment(
    client, channel, wanjiku, django_capture_on_commit_callbacks
):
    payload = c2b_payload(BillRefNumber="10008", TransAmount="2500.00")

    with django_capture_on_commit_callbacks(execute=True):
        response = post(
            client, channel, payload, HTTP_COOKIE="sessionid=abc", HTTP_AUTHORIZATION="Bearer x", HTTP_USER_AGENT="UA"
        )

    assert response.status_code == 200
    assert response.json() == {"ResultCode": 0, "ResultDesc": "Success"}
    callback = InboundCallback.objects.get()
    assert (callback.kind, callback.status, callback.reference) == ("c2b_confirmation", "received", "RKTQDM7W6S")
    assert json.loads(callback.body) == payload and callback.source_ip == SAFARICOM_IP and callback.source_allowed
    assert callback.headers["User-Agent"] == "UA"
    assert not {"Cookie", "Authorization"} & set(callback.headers)
    assert not Payment.objects.exists()  # acknowledged before any processing

    assert work(django_capture_on_commit_callbacks) >= 1

    payment = Payment.objects.get()
    assert (payment.method, payment.source, payment.reference) == ("mpesa", "600638", "RKTQDM7W6S")
    assert payment.customer == wanjiku and payment.status == "received" and payment.amount == Decimal("2500.00")
    assert payment.received_at == dt.datetime(2019, 11, 22, 3, 38, 45, tzinfo=dt.UTC)  # 06:38:45 in Nairobi
    assert (payment.payer_name, payment.payer_phone, payment.account_reference) == ("John", "25470****149", "10008")
    callback.refresh_from_db()
    assert (callback.status, callback.payment, callback.attempts) == ("processed", payment, 1)
    assert "credited to 10008" in callback.outcome and "account number" in callback.outcome
    assert JournalEntry.objects.filter(kind="payment").count() == 1
    assert customer_balance(wanjiku.pk) == Decimal("-2500.00")
    assert trial_balance()["balanced"]


def test_an_account_number_with_a_wrong_check_digit_goes_to_suspense_not_to_a_neighbour(
    client, channel, wanjiku, django_capture_on_commit_callbacks
):
    neighbour = CustomerFactory(account_number="10019")
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, c2b_payload(BillRefNumber="10009"))

    payment = Payment.objects.get()
    assert payment.customer is None and payment.status == "unmatched"
    assert customer_balance(wanjiku.pk) == 0 and customer_balance(neighbour.pk) == 0
    callback = InboundCallback.objects.get()
    assert callback.status == "processed" and callback.outcome.startswith("in suspense")


def test_the_payers_other_names_are_kept_with_the_first_name(
    client, channel, wanjiku, django_capture_on_commit_callbacks
):
    payload = c2b_payload(BillRefNumber="10008", FirstName="JOHN", MiddleName="KAMAU", LastName="DOE")
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload)
    assert Payment.objects.get().payer_name == "JOHN KAMAU DOE"


def test_a_till_payment_without_an_account_reference_waits_in_suspense(client, django_capture_on_commit_callbacks):
    till = make_channel(name="Shop till", kind="till", shortcode="600100", till_number="5123456")
    payload = c2b_payload(TransactionType="Buy Goods", BusinessShortCode="5123456", BillRefNumber="")
    pay_by_paybill(client, till, django_capture_on_commit_callbacks, payload)

    payment = Payment.objects.get()
    assert payment.source == "600100" and payment.status == "unmatched"
    assert "BusinessShortCode" not in InboundCallback.objects.get().outcome


# --- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "reference", "answer"),
    [
        ("accept_all", "10008", {"ResultCode": "0", "ResultDesc": "Accepted"}),
        ("accept_all", "nobody", {"ResultCode": "0", "ResultDesc": "Accepted"}),
        ("reject_unknown", "#1000-8", {"ResultCode": "0", "ResultDesc": "Accepted"}),
        ("reject_unknown", "10009", {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}),
        ("reject_unknown", "nobody", {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}),
    ],
)
def test_validation_accepts_or_rejects_unknown_accounts_as_the_channel_says(
    client, wanjiku, setting, reference, answer
):
    channel = make_channel(validation=setting)
    response = post(client, channel, c2b_payload(BillRefNumber=reference), "c2b-validation")

    assert response.status_code == 200 and response.json() == answer
    callback = InboundCallback.objects.get()
    assert callback.kind == "c2b_validation" and callback.status == "processed"
    assert callback.outcome.startswith("rejected C2B00012" if answer["ResultCode"] != "0" else "accepted")
    assert not Payment.objects.exists()


def test_validation_is_answered_from_a_handful_of_indexed_reads(client, wanjiku):
    channel = make_channel(validation="reject_unknown")
    with CaptureQueriesContext(connection) as queries:
        response = post(client, channel, c2b_payload(BillRefNumber="nobody-here"), "c2b-validation")
    assert response.json()["ResultCode"] == "C2B00012"
    assert len(queries) <= 10  # token, channel, four matching rules, the stored row


def test_a_validation_without_receipt_fields_is_still_answered(client, wanjiku):
    payload = c2b_payload(BillRefNumber="10008", TransID=None, TransTime=None)
    response = post(client, make_channel(validation="reject_unknown"), payload, "c2b-validation")
    assert response.json() == {"ResultCode": "0", "ResultDesc": "Accepted"}


# --- STK and Transaction Status: stored only, for now ------------------------------------------------------


STK_SUCCESS = {
    "Body": {
        "stkCallback": {
            "MerchantRequestID": "29115-34620561-1",
            "CheckoutRequestID": "ws_CO_191220191020363925",
            "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "CallbackMetadata": {
                "Item": [
                    {"Name": "Amount", "Value": 1.0},
                    {"Name": "MpesaReceiptNumber", "Value": "LHG31AA5TX"},
                    {"Name": "Balance"},
                    {"Name": "TransactionDate", "Value": 20191219102115},
                    {"Name": "PhoneNumber", "Value": 254712345678},
                ]
            },
        }
    }
}
STATUS_RESULT = {"Result": {"ResultType": 0, "ResultCode": 0, "TransactionID": "LGR0000000", "ConversationID": "AG_1"}}


@pytest.mark.parametrize(
    ("name", "payload", "kind", "reference"),
    [("status-timeout", STATUS_RESULT, "status_timeout", "LGR0000000")],
)
def test_a_status_timeout_is_kept_and_acknowledged_for_staff(
    client, channel, name, payload, kind, reference, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, channel, payload, name)

    assert response.status_code == 200 and response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    callback = InboundCallback.objects.get()
    assert (callback.kind, callback.status, callback.outcome, callback.reference) == (
        kind,
        "received",
        STORED_ONLY,
        reference,
    )
    assert work(django_capture_on_commit_callbacks) == 0 and not Payment.objects.exists()


def test_a_completed_status_result_at_the_hook_records_the_missing_receipt_once_in_suspense(
    client, channel, django_capture_on_commit_callbacks
):
    body = {
        "Result": {
            "ResultType": 0,
            "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "TransactionID": "SKN9QRST02",
            "ResultParameters": {
                "ResultParameter": [
                    {"Key": "ReceiptNo", "Value": "SKN9QRST02"},
                    {"Key": "FinalisedTime", "Value": 20261124101415},
                    {"Key": "Amount", "Value": 450},
                    {"Key": "TransactionStatus", "Value": "Completed"},
                    {"Key": "DebitPartyName", "Value": "25479****111 - JANE DOE"},
                ]
            },
        }
    }
    for _ in range(2):  # Safaricom may deliver the result twice
        with django_capture_on_commit_callbacks(execute=True):
            assert post(client, channel, body, "status-result").status_code == 200
    work(django_capture_on_commit_callbacks)

    assert sorted(InboundCallback.objects.values_list("status", flat=True)) == ["duplicate", "processed"]
    payment = Payment.objects.get()
    assert (payment.reference, payment.amount, payment.status) == ("SKN9QRST02", Decimal("450"), "unmatched")


# --- security: token, method, size, source ---------------------------------------------------------------


@pytest.mark.parametrize("name", HOOKS)
def test_an_unknown_token_is_404_and_nothing_is_stored(client, channel, name):
    for token in ("x" * 43, channel.hook_token[:-1], channel.hook_token + "x", "y" * 200):
        response = post(client, token, c2b_payload(), name)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert not InboundCallback.objects.exists() and not Payment.objects.exists()


def test_hook_paths_avoid_the_words_safaricom_refuses(channel):
    for name in HOOKS:
        url = hook_url(channel, name).lower()
        assert url.startswith("/hooks/")
        assert not any(word in url for word in ("mpesa", "m-pesa", "safaricom", "query", "sql", "exe", "cmd"))


def test_the_hooks_need_no_csrf_token_and_set_no_session(client, channel):
    response = post(client, channel, c2b_payload(), "c2b-validation")
    assert response.status_code == 200 and not response.cookies


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_a_method_other_than_post_is_405_and_kept(client, channel, method):
    response = getattr(client, method)(hook_url(channel), REMOTE_ADDR=SAFARICOM_IP)

    assert response.status_code == 405 and response["Allow"] == "POST"
    callback = InboundCallback.objects.get()
    assert callback.status == "rejected" and callback.outcome.startswith("405")


def test_an_oversized_body_is_413_kept_truncated_and_never_paid(
    client, channel, wanjiku, django_capture_on_commit_callbacks
):
    payload = c2b_payload(BillRefNumber="10008", FirstName="A" * 20_000)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, channel, payload)

    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    callback = InboundCallback.objects.get()
    assert callback.status == "rejected" and len(callback.body) <= 2048
    assert work(django_capture_on_commit_callbacks) == 0 and not Payment.objects.exists()


def test_the_size_limit_is_a_setting(client, channel, settings):
    settings.WAVU = {**settings.WAVU, "HOOK_MAX_BODY_BYTES": 100}
    assert post(client, channel, c2b_payload(), "c2b-validation").status_code == 413


def test_an_address_off_the_allowlist_is_refused_and_kept_when_the_channel_enforces_it(
    client, channel, wanjiku, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, channel, c2b_payload(BillRefNumber="10008"), source=STRANGER_IP)

    assert response.status_code == 403 and response.json()["error"]["code"] == "source_not_allowed"
    callback = InboundCallback.objects.get()
    assert (callback.status, callback.source_ip, callback.source_allowed) == ("rejected", STRANGER_IP, False)
    assert STRANGER_IP in callback.outcome
    assert work(django_capture_on_commit_callbacks) == 0 and not Payment.objects.exists()


def test_in_log_only_mode_an_unknown_address_is_processed_but_flagged(
    client, wanjiku, django_capture_on_commit_callbacks
):
    channel = make_channel(allowlist_mode="log_only")
    response = pay_by_paybill(
        client, channel, django_capture_on_commit_callbacks, c2b_payload(BillRefNumber="10008"), source=STRANGER_IP
    )

    assert response.status_code == 200
    callback = InboundCallback.objects.get()
    assert callback.status == "processed" and callback.source_allowed is False
    assert "not on the allowlist" in callback.outcome
    assert Payment.objects.get().customer == wanjiku


def test_with_the_allowlist_off_any_address_is_processed(client, wanjiku, django_capture_on_commit_callbacks):
    channel = make_channel(allowlist_mode="off")
    pay_by_paybill(
        client, channel, django_capture_on_commit_callbacks, c2b_payload(BillRefNumber="10008"), source=STRANGER_IP
    )
    assert InboundCallback.objects.get().source_allowed and Payment.objects.count() == 1


def test_every_published_safaricom_address_and_a_configured_network_are_allowed(client):
    channel = make_channel(allowlist=SAFARICOM_CALLBACK_IPS + "\n10.8.0.0/16, not-an-address")
    for address in [*SAFARICOM_CALLBACK_IPS.split(), "10.8.3.4"]:
        assert post(client, channel, c2b_payload(), "c2b-validation", source=address).status_code == 200
    assert post(client, channel, c2b_payload(), "c2b-validation", source="10.9.0.1").status_code == 403


def test_x_forwarded_for_is_ignored_unless_a_trusted_proxy_is_configured(client, channel, settings):
    behind_proxy = {"source": "127.0.0.1", "HTTP_X_FORWARDED_FOR": f"{STRANGER_IP}, {SAFARICOM_IP}"}
    assert post(client, channel, c2b_payload(), "c2b-validation", **behind_proxy).status_code == 403

    settings.WAVU = {**settings.WAVU, "HOOK_TRUSTED_PROXIES": 1}
    assert post(client, channel, c2b_payload(), "c2b-validation", **behind_proxy).status_code == 200
    assert InboundCallback.objects.order_by("pk").last().source_ip == SAFARICOM_IP
    spoofed = {"source": "127.0.0.1", "HTTP_X_FORWARDED_FOR": f"{SAFARICOM_IP}, {STRANGER_IP}"}
    assert post(client, channel, c2b_payload(), "c2b-validation", **spoofed).status_code == 403


# --- bad input: a clear 4xx, kept, never a payment ---------------------------------------------------------


def raw(payload: dict) -> str:
    return json.dumps(payload)


BAD_BODIES = {
    "malformed JSON": ('{"TransID": "RKTQDM7W6S", "TransAmount": ', "malformed_json", None),
    "not UTF-8": (b'{"TransID": "\xff\xfe"}', "malformed_json", None),
    "a JSON list": ("[1, 2]", "not_an_object", None),
    "NaN amount": (
        '{"TransID": "RKTQDM7W6S", "TransAmount": NaN, "TransTime": "20191122063845"}',
        "malformed_json",
        None,
    ),
    "non-numeric amount": (raw(c2b_payload(TransAmount="abc")), "invalid_payload", "TransAmount"),
    "negative amount": (raw(c2b_payload(TransAmount="-5")), "invalid_payload", "TransAmount"),
    "zero amount": (raw(c2b_payload(TransAmount="0.00")), "invalid_payload", "TransAmount"),
    "three decimals": (raw(c2b_payload(TransAmount="10.555")), "invalid_payload", "TransAmount"),
    "boolean amount": (raw(c2b_payload(TransAmount=True)), "invalid_payload", "TransAmount"),
    "amount as an object": (raw(c2b_payload(TransAmount={"value": 10})), "invalid_payload", "TransAmount"),
    "missing amount": (raw(c2b_payload(TransAmount=None)), "invalid_payload", "TransAmount"),
    "missing TransID": (raw(c2b_payload(TransID=None)), "invalid_payload", "TransID"),
    "blank TransID": (raw(c2b_payload(TransID="  ")), "invalid_payload", "TransID"),
    "TransID with SQL": (raw(c2b_payload(TransID="X' OR 1=1 --")), "invalid_payload", "TransID"),
    "missing TransTime": (raw(c2b_payload(TransTime=None)), "invalid_payload", "TransTime"),
    "TransTime not a date": (raw(c2b_payload(TransTime="20191399063845")), "invalid_payload", "TransTime"),
    "account as an object": (raw(c2b_payload(BillRefNumber={"a": 1})), "invalid_payload", "BillRefNumber"),
    "overlong account": (raw(c2b_payload(BillRefNumber="9" * 101)), "invalid_payload", "BillRefNumber"),
    "names as a list": (raw(c2b_payload(FirstName=["John"])), "invalid_payload", "FirstName"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES), ids=list(BAD_BODIES))
def test_a_bad_confirmation_is_a_clear_400_kept_for_audit_and_never_a_payment(
    client, channel, wanjiku, case, django_capture_on_commit_callbacks
):
    body, code, field = BAD_BODIES[case]
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, channel, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    if field:
        assert field in error["fields"]
    callback = InboundCallback.objects.get()
    assert callback.status == "rejected" and callback.outcome.startswith("400: ")
    assert work(django_capture_on_commit_callbacks) == 0
    assert not Payment.objects.exists() and not JournalEntry.objects.filter(kind="payment").exists()


def test_a_bad_validation_request_is_a_400_too(client, channel):
    response = post(client, channel, c2b_payload(TransAmount="-5"), "c2b-validation")
    assert response.status_code == 400 and InboundCallback.objects.get().status == "rejected"


def test_an_amount_sent_as_a_json_number_is_read_exactly(client, channel, wanjiku, django_capture_on_commit_callbacks):
    body = raw(c2b_payload(BillRefNumber="10008", TransAmount="X")).replace('"X"', "1500.10")
    pay_by_paybill(client, channel, django_capture_on_commit_callbacks, body)
    assert Payment.objects.get().amount == Decimal("1500.10")


# --- end to end: a suspended customer pays by paybill -----------------------------------------------------


def test_a_customer_suspended_for_an_overdue_invoice_is_reconnected_after_paying_by_paybill(
    client, channel, django_capture_on_commit_callbacks
):
    def at(day, hour=9, minute=30):
        return timezone.make_aware(dt.datetime(2026, 12, day, hour, minute))

    customer = CustomerFactory(account_number="10008")
    plan = PlanFactory(name="Home Fibre 20 Mbps", kind=Plan.Kind.POSTPAID, with_price=Decimal("2999.00"))
    service = SubscriptionFactory(
        customer=customer, plan=plan, current_period_start=at(1, 0, 0), current_period_end=at(31)
    )
    with time_machine.travel(at(1), tick=False):
        invoice = billing.invoice_subscription_period(service, dt.date(2026, 12, 1), dt.date(2026, 12, 31))
    for day in range(1, 15):
        with time_machine.travel(at(day), tick=False):
            dunning.run_dunning()
    service.refresh_from_db()
    assert (service.status, service.suspension_cause) == (Status.SUSPENDED, SuspensionCause.OVERDUE)

    with time_machine.travel(at(15), tick=False):
        payload = c2b_payload(
            TransID="SLF3XYZ123", BillRefNumber="1000 8", TransAmount="2999.00", TransTime=trans_time(at(15, 9, 29))
        )
        response = pay_by_paybill(client, channel, django_capture_on_commit_callbacks, payload)

    assert response.status_code == 200
    invoice.refresh_from_db()
    service.refresh_from_db()
    assert invoice.status == "paid"
    assert (service.status, service.suspension_cause) == (Status.ACTIVE, "")
    assert service.events.filter(kind="resumed").count() == 1
    assert customer_balance(customer.pk) == 0 and trial_balance()["balanced"]

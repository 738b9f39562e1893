"""STK push: what a request may ask for, how the callback is read, what each result means for the customer,
and that a paid request is one payment however often the answer arrives.

Daraja is a stand-in here (`FakeDaraja`); the janitor and the end-to-end runs against the simulator are
in test_stk_janitor.py and test_stk_api.py. Helpers at the top are shared with those files."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from wavu.billing.models import Invoice
from wavu.catalog.models import Plan
from wavu.mpesa import daraja, services, stk
from wavu.mpesa.models import InboundCallback, PaymentChannel, StkRequest
from wavu.mpesa.tests.test_c2b_hooks import SAFARICOM_IP, hook_url
from wavu.payments.models import Allocation, Payment
from wavu.payments.services import record_payment
from wavu.payments.tests.factories import issued_invoice
from wavu.subscriptions.models import Status as SubStatus
from wavu.testing.factories import CustomerFactory, PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

Status = StkRequest.Status
_ids = itertools.count(1)


# --- shared helpers ----------------------------------------------------------------------------------------


class FakeDaraja:
    """Stands in for `DarajaClient`: records pushes, answers queries as scripted. `push_error` is raised
    by the next push; `answers[checkout_id]` is the next query answer (a StkQueryResult or an exception)."""

    def __init__(self):
        self.pushes: list[dict] = []
        self.queries: list[str] = []
        self.push_error: Exception | None = None
        self.answers: dict = {}

    def __call__(self, channel):  # used as the client factory
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass

    def stk_push(self, phone, amount, account_reference, description, callback_url):
        self.pushes.append(
            {"phone": phone, "amount": amount, "ref": account_reference, "desc": description, "url": callback_url}
        )
        if self.push_error is not None:
            error, self.push_error = self.push_error, None
            raise error
        n = next(_ids)
        return daraja.StkPushResult(
            f"MR-{n}", f"ws_CO_TEST{n:06d}", "0", "Success. Request accepted for processing", "Success", {}
        )

    def stk_query(self, checkout_request_id):
        self.queries.append(checkout_request_id)
        answer = self.answers.get(checkout_request_id, "pending")
        if isinstance(answer, Exception):
            raise answer
        if answer == "pending":
            return daraja.StkQueryResult(checkout_request_id, True, None, "The transaction is being processed", "", {})
        code, desc = answer
        return daraja.StkQueryResult(checkout_request_id, False, code, desc, "MR", {})


def make_channel(**fields) -> PaymentChannel:
    now = timezone.now()
    values = {
        "name": "Main paybill",
        "kind": "paybill",
        "shortcode": "174379",
        "passkey": "test-passkey",
        "created_at": now,
        "updated_at": now,
    }
    return PaymentChannel.objects.create(**{**values, **fields})


def stk_body(request: StkRequest | str, code=0, *, receipt="SIM1AB2CD3", amount=None, items=None, desc=None) -> str:
    """The documented stkCallback (mpesa-daraja.md §1.3) for `request` (or a CheckoutRequestID)."""
    checkout = request if isinstance(request, str) else request.checkout_request_id
    callback = {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": checkout,
        "ResultCode": code,
        "ResultDesc": desc or ("The service request is processed successfully." if code == 0 else "Failed"),
    }
    if code == 0:
        value = amount if amount is not None else (int(request.amount) if not isinstance(request, str) else 10)
        phone = int(request.phone) if not isinstance(request, str) else 254712345678
        callback["CallbackMetadata"] = {
            "Item": items
            if items is not None
            else [
                {"Name": "Amount", "Value": value},
                {"Name": "MpesaReceiptNumber", "Value": receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": 20250601103015},
                {"Name": "PhoneNumber", "Value": phone},
            ]
        }
    return json.dumps({"Body": {"stkCallback": callback}})


def deliver(channel, body: str) -> InboundCallback:
    """Post the callback to the hook as Safaricom would, then process it as the queued job would."""
    response = Client().post(
        hook_url(channel, "stk-callback"), data=body, content_type="application/json", REMOTE_ADDR=SAFARICOM_IP
    )
    assert response.status_code == 200, response.content
    callback = InboundCallback.objects.filter(kind="stk_callback").order_by("-id").first()
    return services.process_callback(callback.pk)


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake():
    return FakeDaraja()


@pytest.fixture
def channel():
    return make_channel()


@pytest.fixture
def wanjiku():
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008", phone="254712345678")


@pytest.fixture
def invoice(wanjiku):
    return issued_invoice(wanjiku, "1499.50")


def push(fake, purpose="top_up", **kwargs) -> StkRequest:
    return stk.request_stk_push(purpose, client_factory=fake, **kwargs)


# --- asking ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["0712 345 678", "+254712345678", "712345678", "254712345678", "0712-345-678"])
def test_the_phone_may_be_typed_in_any_usual_form_and_is_sent_as_2547(fake, channel, wanjiku, typed):
    request = push(fake, customer=wanjiku, phone=typed, amount=100)

    assert request.phone == "254712345678" and fake.pushes[0]["phone"] == "254712345678"
    assert request.status == Status.PENDING and request.checkout_request_id.startswith("ws_CO_TEST")
    assert request.next_check_at == request.created_at + dt.timedelta(seconds=60)


def test_without_a_phone_the_customers_own_number_is_prompted(fake, channel, wanjiku):
    assert push(fake, customer=wanjiku, amount=100).phone == "254712345678"


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("phone", {"phone": "0201234567", "amount": 100}),  # a landline
        ("phone", {"phone": "12345", "amount": 100}),
        ("amount", {"amount": "99.50"}),
        ("amount", {"amount": 0}),
        ("amount", {"amount": -5}),
        ("amount", {"amount": 10.0}),  # a float is refused, never rounded
        ("amount", {}),  # a top-up needs an amount
    ],
)
def test_a_bad_phone_or_amount_is_refused_before_anything_is_sent_or_written(fake, channel, wanjiku, field, kwargs):
    with pytest.raises(ValidationError) as caught:
        push(fake, customer=wanjiku, **kwargs)

    assert field in caught.value.message_dict
    assert not StkRequest.objects.exists() and fake.pushes == []


def test_an_account_number_m_pesa_would_drop_is_refused_not_shortened(fake, channel):
    odd = CustomerFactory(account_number="AB/12#", phone="254712345678")

    with pytest.raises(ValidationError) as caught:
        push(fake, customer=odd, amount=100)

    assert "account_reference" in caught.value.message_dict and not StkRequest.objects.exists()


def test_the_account_reference_and_description_fit_m_pesas_limits(fake, channel, wanjiku, invoice):
    for request in (push(fake, customer=wanjiku, amount=5), push(fake, "invoice", invoice=invoice)):
        assert request.account_reference == "10008"
        assert 1 <= len(request.description) <= 13 and daraja.SAFE_TEXT.fullmatch(request.description)
    assert [p["desc"] for p in fake.pushes] == ["Top up", "Invoice"]
    assert all(p["url"].endswith(f"/hooks/stk/{channel.hook_token}/callback") for p in fake.pushes)


def test_an_invoice_is_asked_for_what_it_still_owes_rounded_up_to_whole_shillings(fake, channel, invoice):
    request = push(fake, "invoice", invoice=invoice)

    assert request.amount == Decimal("1500") and fake.pushes[0]["amount"] == 1500
    assert request.customer_id == invoice.customer_id and request.invoice_id == invoice.pk


def test_a_paid_or_void_invoice_cannot_be_asked_for(fake, channel, invoice):
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.VOID)
    invoice.refresh_from_db()

    with pytest.raises(stk.DomainError) as caught:
        push(fake, "invoice", invoice=invoice)

    assert caught.value.code == "invoice_not_open" and not StkRequest.objects.exists()


def test_a_plan_purchase_asks_for_the_price_less_the_credit_the_account_can_spend(fake, channel, wanjiku):
    plan = PlanFactory(kind=Plan.Kind.PREPAID, with_price=Decimal("1000.00"))
    service = SubscriptionFactory(customer=wanjiku, plan=plan, status="pending")
    record_payment(method="cash", reference="C1", amount="300.00", customer=wanjiku)

    request = push(fake, "purchase", subscription=service)

    assert request.amount == Decimal("700") and request.purpose == "purchase"


def test_a_customer_with_a_second_open_request_for_the_same_purpose_is_refused_with_409(fake, channel, invoice):
    first = push(fake, "invoice", invoice=invoice)

    with pytest.raises(stk.StkRequestOpen) as caught:
        push(fake, "invoice", invoice=invoice)

    assert caught.value.code == "stk_request_open" and caught.value.status == 409
    assert caught.value.fields == {"request": [str(first.pk)]}
    assert StkRequest.objects.count() == 1 and len(fake.pushes) == 1


def test_one_open_top_up_per_customer_but_another_purpose_may_be_asked_at_the_same_time(
    fake, channel, wanjiku, invoice
):
    push(fake, customer=wanjiku, amount=50)
    with pytest.raises(stk.StkRequestOpen):
        push(fake, customer=wanjiku, amount=70)

    push(fake, "invoice", invoice=invoice)
    assert StkRequest.objects.filter(status="pending").count() == 2


def test_once_a_request_is_settled_the_customer_may_ask_again(fake, channel, wanjiku):
    first = push(fake, customer=wanjiku, amount=50)
    deliver(channel, stk_body(first, 1032))

    again = push(fake, customer=wanjiku, amount=50)

    assert again.status == Status.PENDING and again.pk != first.pk


def test_a_push_whose_answer_is_lost_is_unknown_and_never_pushed_again(fake, channel, wanjiku):
    fake.push_error = daraja.StkPushOutcomeUnknown("Daraja did not answer (ReadTimeout)")

    request = push(fake, customer=wanjiku, amount=50)

    assert (request.status, request.checkout_request_id, request.result_code) == (
        Status.UNKNOWN,
        None,
        "stk_outcome_unknown",
    )
    assert "do not pay twice" in request.customer_message
    with pytest.raises(stk.StkRequestOpen):  # still open: nobody may push the same purpose blindly
        push(fake, customer=wanjiku, amount=50)
    assert len(fake.pushes) == 1


def test_an_unknown_push_is_settled_by_its_callback_matched_on_amount_and_phone(fake, channel, wanjiku):
    fake.push_error = daraja.StkPushOutcomeUnknown("Daraja did not answer (ReadTimeout)")
    request = push(fake, customer=wanjiku, amount=50)

    callback = deliver(channel, stk_body("ws_CO_UNSEEN1", amount=50, receipt="SIMUNKNOWN1"))

    request.refresh_from_db()
    assert (request.status, request.checkout_request_id, request.receipt) == ("paid", "ws_CO_UNSEEN1", "SIMUNKNOWN1")
    assert callback.status == "processed" and Payment.objects.get().reference == "SIMUNKNOWN1"


def test_a_failure_for_an_unknown_checkout_does_not_settle_an_unknown_push(fake, channel, wanjiku):
    fake.push_error = daraja.StkPushOutcomeUnknown("Daraja did not answer (ReadTimeout)")
    request = push(fake, customer=wanjiku, amount=50)

    deliver(channel, stk_body("ws_CO_SOMEONE_ELSE", 1032))

    request.refresh_from_db()
    assert request.status == Status.UNKNOWN and request.checkout_request_id is None


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (daraja.SubscriberBusy("Unable to lock subscriber"), "busy with another m-pesa transaction"),
        (daraja.DarajaUnavailable("Daraja failed (HTTP 503)"), "cannot be reached"),
        (daraja.DarajaBadRequest("Bad Request - Invalid PhoneNumber"), "try again"),
    ],
)
def test_a_push_daraja_refuses_fails_at_once_with_what_to_do_and_frees_the_purpose(
    fake, channel, wanjiku, error, words
):
    fake.push_error = error

    failed = push(fake, customer=wanjiku, amount=50)

    assert failed.status == Status.FAILED and failed.settled_at is not None and failed.settled_by == "push"
    assert words in failed.customer_message.lower() and not Payment.objects.exists()
    assert push(fake, customer=wanjiku, amount=50).status == Status.PENDING  # the purpose is free again


def test_no_channel_that_can_push_is_a_clear_error(fake, wanjiku):
    make_channel(passkey="")

    with pytest.raises(daraja.ChannelNotConfigured):
        push(fake, customer=wanjiku, amount=50)
    assert not StkRequest.objects.exists()


# --- the callback ----------------------------------------------------------------------------------------


def test_items_are_read_by_name_in_any_order_with_a_balance_without_value():
    items = [
        {"Name": "PhoneNumber", "Value": 254712345678},
        {"Name": "Balance"},
        {"Name": "TransactionDate", "Value": 20191219102115},
        {"Name": "MpesaReceiptNumber", "Value": "LHG31AA5TX"},
        {"Name": "Amount", "Value": 1.0},
    ]
    result = stk.parse_stk_callback(stk_body("ws_CO_1", items=items))

    assert result.amount == Decimal("1.00") and isinstance(result.amount, Decimal)
    assert (result.receipt, result.phone, result.result_code) == ("LHG31AA5TX", "254712345678", "0")
    assert result.transaction_date == dt.datetime(2019, 12, 19, 10, 21, 15, tzinfo=services.MPESA_TIME_ZONE)


@pytest.mark.parametrize(("raw", "amount"), [("1", "1.00"), ("1.0", "1.00"), ("1500", "1500.00"), ("0.1", "0.10")])
def test_an_amount_is_read_from_the_text_never_through_float(raw, amount):
    body = stk_body("ws_CO_1", amount=12345).replace("12345", raw)

    assert stk.parse_stk_callback(body).amount == Decimal(amount)


def test_a_failure_callback_has_no_metadata_and_a_string_code_is_accepted():
    body = json.dumps({"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_2", "ResultCode": "1032"}}})

    assert stk.parse_stk_callback(body).result_code == "1032"


@pytest.mark.parametrize(
    "items",
    [
        [{"Name": "Amount", "Value": 10}],  # no receipt
        [{"Name": "MpesaReceiptNumber", "Value": "ABC"}],  # no amount
        [{"Name": "Amount", "Value": True}, {"Name": "MpesaReceiptNumber", "Value": "ABC"}],
    ],
)
def test_a_success_without_a_receipt_or_amount_is_rejected_and_pays_nothing(fake, channel, wanjiku, items):
    request = push(fake, customer=wanjiku, amount=10)

    callback = deliver(channel, stk_body(request, items=items))

    request.refresh_from_db()
    assert callback.status == "rejected" and request.status == Status.PENDING and not Payment.objects.exists()


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        (1032, "cancelled", "cancelled"),
        (2001, "failed", "pin was wrong"),
        (1, "failed", "balance"),
        (1037, "expired", "could not reach your phone"),
        (1001, "failed", "busy with another m-pesa transaction"),
        (1025, "failed", "try again in a few minutes"),
        (9999, "failed", "try again in a few minutes"),
        (1019, "expired", "expired"),
        (4242, "failed", "code 4242"),
    ],
)
def test_each_failure_tells_the_customer_what_to_do_and_pays_nothing(fake, channel, wanjiku, code, status, words):
    request = push(fake, customer=wanjiku, amount=10)

    callback = deliver(channel, stk_body(request, code))

    request.refresh_from_db()
    assert (request.status, request.result_code, request.settled_by) == (status, str(code), "callback")
    assert words in request.customer_message.lower()
    assert callback.status == "processed" and not Payment.objects.exists() and request.payment is None


def test_a_paid_callback_records_one_payment_by_receipt_that_pays_the_oldest_invoice(fake, channel, invoice):
    request = push(fake, "invoice", invoice=invoice)

    callback = deliver(channel, stk_body(request, receipt="SIMPAID001"))

    request.refresh_from_db()
    payment = Payment.objects.get()
    assert (payment.method, payment.source, payment.reference, payment.amount) == (
        "mpesa",
        "174379",
        "SIMPAID001",
        Decimal("1500.00"),
    )
    assert payment.customer_id == invoice.customer_id and payment.account_reference == "10008"
    assert payment.received_at == dt.datetime(2025, 6, 1, 10, 30, 15, tzinfo=services.MPESA_TIME_ZONE)
    assert (request.status, request.payment_id, request.receipt) == ("paid", payment.pk, "SIMPAID001")
    assert "SIMPAID001" in request.customer_message
    assert callback.status == "processed" and callback.payment_id == payment.pk
    invoice.refresh_from_db()
    assert invoice.status == "paid" and Allocation.objects.get().invoice_id == invoice.pk


def test_the_same_callback_delivered_three_times_pays_once(fake, channel, wanjiku):
    request = push(fake, customer=wanjiku, amount=250)
    body = stk_body(request, receipt="SIMDUP0001")

    first, second, third = (deliver(channel, body) for _ in range(3))

    assert [first.status, second.status, third.status] == ["processed", "duplicate", "duplicate"]
    assert Payment.objects.count() == 1 and second.payment_id == first.payment_id


def test_a_purchase_paid_by_stk_buys_the_period_for_a_new_service(fake, channel, wanjiku):
    plan = PlanFactory(kind=Plan.Kind.PREPAID, with_price=Decimal("1000.00"))
    service = SubscriptionFactory(customer=wanjiku, plan=plan, status="pending")
    request = push(fake, "purchase", subscription=service)

    deliver(channel, stk_body(request, receipt="SIMBUY0001"))

    service.refresh_from_db()
    assert service.status == SubStatus.ACTIVE and service.current_period_end is not None
    assert Invoice.objects.get(subscription=service).status == "paid"


def test_a_late_success_after_the_request_expired_still_pays(fake, channel, wanjiku):
    request = push(fake, customer=wanjiku, amount=40)
    deliver(channel, stk_body(request, 1037))

    deliver(channel, stk_body(request, receipt="SIMLATE001"))

    request.refresh_from_db()
    assert request.status == "paid" and Payment.objects.get().reference == "SIMLATE001"


def test_a_failure_after_the_payment_changes_nothing(fake, channel, wanjiku):
    request = push(fake, customer=wanjiku, amount=40)
    deliver(channel, stk_body(request, receipt="SIMOK00001"))

    callback = deliver(channel, stk_body(request, 1032))

    request.refresh_from_db()
    assert request.status == "paid" and callback.status == "duplicate" and Payment.objects.count() == 1


def test_a_success_that_matches_no_request_is_kept_in_suspense_not_lost(channel):
    callback = deliver(channel, stk_body("ws_CO_STRANGER", amount=99, receipt="SIMSTRAY01"))

    payment = Payment.objects.get()
    assert payment.customer_id is None and payment.status == "unmatched" and callback.payment_id == payment.pk


def test_a_failure_that_matches_no_request_is_only_noted(channel):
    callback = deliver(channel, stk_body("ws_CO_NOBODY", 1032))

    assert callback.status == "processed" and "no STK request" in callback.outcome and not Payment.objects.exists()

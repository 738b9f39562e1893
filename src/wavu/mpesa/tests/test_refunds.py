"""M-Pesa refunds: reversing a payment (Daraja Reversal) and paying credit back to a phone (B2C).

Daraja is a stand-in here (`FakeRefundDaraja`); results are the documented bodies (mpesa-daraja.md §1.10,
§1.11 and the samples they cite), posted to the hooks as Safaricom would and processed as the worker
would. The API, the admin and the end-to-end runs against the simulator are in test_refunds_api.py; the
PostgreSQL races in test_refunds_races.py. Helpers at the top are shared with those files."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from wavu.billing.models import Invoice
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_credit, trial_balance
from wavu.mpesa import channels, daraja, refunds, services
from wavu.mpesa.models import InboundCallback, PaymentChannel, RefundRequest, StkRequest
from wavu.mpesa.tests.test_c2b_hooks import SAFARICOM_IP, hook_url
from wavu.mpesa.tests.test_daraja import FakeDaraja as FakeTransport
from wavu.mpesa.tests.test_daraja import client_for
from wavu.payments import services as payments
from wavu.payments.models import Payment, Refund
from wavu.payments.tests.factories import issued_invoice
from wavu.testing.factories import CustomerFactory

pytestmark = pytest.mark.django_db

Status = RefundRequest.Status
_ids = itertools.count(1)


# --- shared helpers ----------------------------------------------------------------------------------------


class FakeRefundDaraja:
    """Stands in for `DarajaClient`: records reversals and B2C payments and accepts them, like Daraja's
    synchronous answer; `error` is raised by the next call instead."""

    def __init__(self):
        self.reversals: list[dict] = []
        self.payouts: list[dict] = []
        self.error: Exception | None = None

    def __call__(self, channel):  # used as the client factory
        self.channel = channel
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        pass

    def _answer(self, originator: str | None = None) -> daraja.AcceptedResult:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        n = next(_ids)
        return daraja.AcceptedResult(
            "0", "Accept the service request successfully.", f"AG_20261124_{n:020x}", originator or f"{n}-4298025-1", {}
        )

    def reversal(self, trans_id, amount, result_url, timeout_url, *, remarks="", occasion=""):
        self.reversals.append({"receipt": trans_id, "amount": amount, "result_url": result_url, "timeout": timeout_url})
        return self._answer()

    def b2c_payment(self, phone, amount, result_url, timeout_url, *, originator_conversation_id, **kwargs):
        self.payouts.append(
            {"phone": phone, "amount": amount, "ocid": originator_conversation_id, "result_url": result_url, **kwargs}
        )
        return self._answer(originator_conversation_id)


def make_paybill(**fields) -> PaymentChannel:
    now = timezone.now()
    values = {
        "name": "Main paybill",
        "kind": "paybill",
        "shortcode": "600638",
        "initiator_name": "apiop37",
        "security_credential": "SECCRED==",
        "created_at": now,
        "updated_at": now,
    }
    return PaymentChannel.objects.create(**{**values, **fields})


def make_b2c(**fields) -> PaymentChannel:
    return make_paybill(**{"name": "Refunds", "kind": "b2c", "shortcode": "600996", **fields})


def mpesa_payment(customer, amount, receipt: str, channel: PaymentChannel) -> Payment:
    payment, _ = payments.record_payment(
        method="mpesa", source=channel.shortcode, reference=receipt, amount=amount, customer=customer
    )
    return payment


def reversal_result(request: RefundRequest, code=0, *, receipt="SLR9REV001", desc=None, params=True, amount=None):
    """The documented Reversal result (mpesa-daraja.md §1.11, mpesakit's sample); `params=False` gives the
    shorter sample without ResultParameters (Ghostscypher/php-mpesa)."""
    result = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": desc or ("The service request is processed successfully." if code in (0, "0") else "Failed"),
        "OriginatorConversationID": request.originator_conversation_id,
        "ConversationID": request.conversation_id,
        "TransactionID": receipt,
        "ReferenceData": {
            "ReferenceItem": {
                "Key": "QueueTimeoutURL",
                "Value": "https://internalsandbox.safaricom.co.ke/mpesa/reversalresults/v1/submit",
            }
        },
    }
    if code in (0, "0") and params:
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "DebitAccountBalance", "Value": "Utility Account|KES|51661.00|51661.00|0.00|0.00"},
                {"Key": "Amount", "Value": amount if amount is not None else Decimal(request.amount)},
                {"Key": "TransCompletedTime", "Value": 20261124153225},
                {"Key": "OriginalTransactionID", "Value": request.original_receipt},
                {"Key": "Charge", "Value": Decimal("0.00")},
                {"Key": "CreditPartyPublicName", "Value": "254708374149 - John Doe"},
                {"Key": "DebitPartyPublicName", "Value": "600638 - Safaricom1338"},
            ]
        }
    return result_body(result)


def b2c_result(request: RefundRequest, code=0, *, receipt="SLR9B2C001", desc=None, amount=None):
    """The documented B2C result (mpesa-daraja.md §1.10, Ghostscypher/php-mpesa's sample)."""
    result = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": desc or ("The service request is processed successfully." if code in (0, "0") else "Failed"),
        "OriginatorConversationID": request.originator_conversation_id,
        "ConversationID": request.conversation_id,
        "TransactionID": receipt,
        "ReferenceData": {
            "ReferenceItem": {
                "Key": "QueueTimeoutURL",
                "Value": "https://internalsandbox.safaricom.co.ke/mpesa/b2cresults/v1/submit",
            }
        },
    }
    if code in (0, "0"):
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "TransactionReceipt", "Value": receipt},
                {"Key": "TransactionAmount", "Value": amount if amount is not None else int(request.amount)},
                {"Key": "B2CWorkingAccountAvailableFunds", "Value": 150000},
                {"Key": "B2CUtilityAccountAvailableFunds", "Value": 133568},
                {"Key": "TransactionCompletedDateTime", "Value": "24.11.2026 10:54:57"},
                {"Key": "ReceiverPartyPublicName", "Value": f"{request.phone} - John Doe"},
                {"Key": "B2CChargesPaidAccountAvailableFunds", "Value": 0},
                {"Key": "B2CRecipientIsRegisteredCustomer", "Value": "Y"},
            ]
        }
    return result_body(result)


def timeout_body(request: RefundRequest) -> str:
    return result_body(
        {
            "ResultType": 1,
            "ResultCode": "1",
            "ResultDesc": "The service request timed out.",
            "OriginatorConversationID": request.originator_conversation_id,
            "ConversationID": request.conversation_id,
        }
    )


def result_body(result: dict) -> str:
    return json.dumps({"Result": result}, default=lambda value: float(value) if isinstance(value, Decimal) else value)


def deliver(channel: PaymentChannel, hook: str, body: str) -> InboundCallback:
    """Post a result to the hook as Safaricom would, then process the stored callback as the worker does."""
    response = Client().post(
        hook_url(channel, hook), data=body, content_type="application/json", REMOTE_ADDR=SAFARICOM_IP
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
    callback = InboundCallback.objects.order_by("-id").first()
    return services.process_callback(callback.pk)


def entries(kind: str) -> int:
    return JournalEntry.objects.filter(kind=kind).count()


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture
def fake():
    return FakeRefundDaraja()


@pytest.fixture
def paybill():
    return make_paybill()


@pytest.fixture
def b2c():
    return make_b2c()


@pytest.fixture
def wanjiku():
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008", phone="254712345678")


def reverse(payment, fake, reason="Paid to the wrong account", **kwargs) -> RefundRequest:
    return refunds.request_reversal(payment, reason=reason, client_factory=fake, **kwargs)


def refund(customer, fake, reason="Moving away; closing the account", **kwargs) -> RefundRequest:
    return refunds.request_b2c_refund(customer, reason=reason, client_factory=fake, **kwargs)


# --- reversal: asking ------------------------------------------------------------------------------------------


def test_a_reversal_is_sent_once_with_the_receipt_and_waits_with_the_books_untouched(fake, paybill, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    before = JournalEntry.objects.count()

    request = reverse(payment, fake)

    assert (request.kind, request.status, request.amount, request.original_receipt) == (
        "reversal",
        "pending",
        Decimal("1500.00"),
        "SLR7PAY001",
    )
    assert request.conversation_id.startswith("AG_") and request.customer == wanjiku
    assert fake.reversals == [
        {
            "receipt": "SLR7PAY001",
            "amount": 1500,
            "result_url": f"{settings.WAVU_PUBLIC_URL}/hooks/reversal/{paybill.hook_token}/result",
            "timeout": f"{settings.WAVU_PUBLIC_URL}/hooks/reversal/{paybill.hook_token}/timeout",
        }
    ]
    payment.refresh_from_db()
    assert payment.status == "received" and JournalEntry.objects.count() == before
    assert "waiting for the result" in request.outcome


def test_a_second_reversal_of_the_same_payment_is_refused_and_sends_nothing(fake, paybill, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    first = reverse(payment, fake)

    with pytest.raises(refunds.ReversalAlreadyRequested) as caught:
        reverse(payment, fake)

    assert caught.value.status == 409 and caught.value.fields == {"request": [str(first.pk)]}
    assert RefundRequest.objects.count() == 1 and len(fake.reversals) == 1


def test_payments_m_pesa_cannot_reverse_are_refused_before_anything_is_written_or_sent(fake, paybill, wanjiku):
    cash, _ = payments.record_payment(method="cash", reference="RCPT-1", amount="500", customer=wanjiku)
    reversed_one = mpesa_payment(wanjiku, "200.00", "SLR7PAY002", paybill)
    payments.reverse_payment(reversed_one, reason="typed twice")
    refunded = mpesa_payment(wanjiku, "300.00", "SLR7PAY003", paybill)
    payments.refund_payment(refunded, amount="100", method="cash", reference="R-1", reason="overpaid")
    janitor_paid, _ = payments.record_payment(
        method="mpesa", source=paybill.shortcode, reference="ws_CO_191220191020363925", amount="50", customer=wanjiku
    )
    cents = mpesa_payment(wanjiku, "99.50", "SLR7PAY004", paybill)
    other = make_paybill(shortcode="600100", initiator_name="")
    no_initiator = mpesa_payment(wanjiku, "10.00", "SLR7PAY005", other)

    for payment, code in [
        (cash, "payment_not_reversible"),
        (reversed_one, "payment_not_reversible"),
        (refunded, "payment_refunded"),
        (janitor_paid, "receipt_unknown"),
        (cents, "payment_not_reversible"),
        (no_initiator, "channel_not_configured"),
    ]:
        with pytest.raises(refunds.DomainError) as caught:
            reverse(payment, fake)
        assert caught.value.code == code and caught.value.status == 409, (payment, caught.value.message)
    with pytest.raises(ValidationError) as caught:
        reverse(mpesa_payment(wanjiku, "10", "SLR7PAY006", paybill), fake, reason="  ")
    assert "reason" in caught.value.message_dict
    assert not RefundRequest.objects.exists() and fake.reversals == []


def test_an_stk_payment_settled_by_the_janitor_is_reversed_with_the_receipt_its_request_learnt(fake, paybill, wanjiku):
    payment, _ = payments.record_payment(
        method="mpesa", source=paybill.shortcode, reference="ws_CO_191220191020363925", amount="50", customer=wanjiku
    )
    StkRequest.objects.create(
        channel=paybill, purpose="top_up", customer=wanjiku, phone="254712345678", amount=50, account_reference="10008",
        description="Top up", checkout_request_id="ws_CO_191220191020363925", status="paid", receipt="SLR7STK001",
        payment=payment, created_at=timezone.now(),
    )  # fmt: skip

    assert reverse(payment, fake).original_receipt == "SLR7STK001"


def test_daraja_refusing_the_reversal_marks_it_failed_at_once_and_the_payment_may_be_asked_again(
    fake, paybill, wanjiku
):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    fake.error = daraja.DarajaBadRequest("Daraja refused the request: Bad Request - Invalid TransactionID.")

    request = reverse(payment, fake)

    assert (request.status, request.settled_by) == ("failed", "daraja")
    assert "Invalid TransactionID" in request.outcome and "Nothing changed in the books" in request.outcome
    assert reverse(payment, fake).status == "pending"  # a failed reversal does not block another


# --- reversal: the result -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, "0"])
def test_the_documented_success_reverses_the_payment_in_its_own_entry_and_reopens_its_invoice(
    fake, paybill, wanjiku, code
):
    invoice = issued_invoice(wanjiku, "1000.00")
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)  # 1000 to the invoice, 500 credit
    request = reverse(payment, fake)

    callback = deliver(paybill, "reversal-result", reversal_result(request, code, receipt="SLR9REV001"))

    request.refresh_from_db()
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (callback.status, callback.payment_id, callback.reference) == ("processed", payment.pk, "SLR9REV001")
    assert (request.status, request.receipt, request.settled_by) == ("completed", "SLR9REV001", "result")
    assert request.result_parameters["OriginalTransactionID"] == "SLR7PAY001"
    assert payment.status == "reversed" and "SLR9REV001" in payment.reversal_reason
    assert invoice.status == Invoice.Status.ISSUED and invoice.amount_paid == 0
    mirror = JournalEntry.objects.get(kind="reversal", source_id=str(payment.pk))
    assert mirror.reverses.kind == "payment" and mirror.reverses.source_id == str(payment.pk)
    assert customer_credit(wanjiku.pk) == 0 and trial_balance()["balanced"]
    assert "reversed in Wavu" in request.outcome


def test_the_short_documented_sample_without_result_parameters_also_completes_it(fake, paybill, wanjiku):
    payment = mpesa_payment(wanjiku, "700.00", "SLR7PAY001", paybill)
    request = reverse(payment, fake)

    deliver(paybill, "reversal-result", reversal_result(request, receipt="LGR019G3J2", params=False))

    request.refresh_from_db()
    payment.refresh_from_db()
    assert (request.status, request.receipt, payment.status) == ("completed", "LGR019G3J2", "reversed")


def test_a_reversal_result_delivered_twice_reverses_the_payment_once(fake, paybill, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = reverse(payment, fake)
    body = reversal_result(request)

    first = deliver(paybill, "reversal-result", body)
    second = deliver(paybill, "reversal-result", body)

    assert (first.status, second.status) == ("processed", "duplicate")
    assert "already completed" in second.outcome
    assert JournalEntry.objects.filter(kind="reversal", source_id=str(payment.pk)).count() == 1
    assert services.process_callback(second.pk).status == "duplicate"  # processing again changes nothing


@pytest.mark.parametrize(
    ("code", "desc", "says"),
    [
        ("R000002", "The OriginalTransactionID is invalid.", "does not know this receipt"),
        ("R000001", "The transaction has already been reversed.", "already reversed"),
        (2001, "The initiator information is invalid.", "initiator"),
        (99, "Something new", "M-Pesa refused it (M-Pesa: 99 Something new)"),
    ],
)
def test_a_failed_reversal_records_the_mapped_reason_and_changes_nothing_in_the_books(
    fake, paybill, wanjiku, code, desc, says
):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = reverse(payment, fake)
    before = JournalEntry.objects.count()

    callback = deliver(paybill, "reversal-result", reversal_result(request, code, desc=desc))

    request.refresh_from_db()
    payment.refresh_from_db()
    assert callback.status == "processed"
    assert (request.status, request.result_code, request.result_desc) == ("failed", str(code), desc)
    assert says in request.outcome and "Nothing changed in the books" in request.outcome
    assert payment.status == "received" and JournalEntry.objects.count() == before
    assert customer_credit(wanjiku.pk) == Decimal("1500.00")


def test_a_timeout_leaves_the_reversal_for_staff_and_a_later_result_still_settles_it(fake, paybill, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = reverse(payment, fake)

    timed_out = deliver(paybill, "reversal-timeout", timeout_body(request))
    again = deliver(paybill, "reversal-timeout", timeout_body(request))

    request.refresh_from_db()
    payment.refresh_from_db()
    assert (timed_out.status, again.status) == ("processed", "duplicate")
    assert request.status == "timed_out" and "Check the receipt in the M-Pesa portal" in request.outcome
    assert payment.status == "received"
    with pytest.raises(refunds.ReversalAlreadyRequested):  # still open: not asked twice
        reverse(payment, fake)

    deliver(paybill, "reversal-result", reversal_result(request))
    request.refresh_from_db()
    payment.refresh_from_db()
    assert (request.status, payment.status) == ("completed", "reversed")


def test_staff_resolve_a_timed_out_reversal_after_checking_the_portal(fake, paybill, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = reverse(payment, fake)
    deliver(paybill, "reversal-timeout", timeout_body(request))

    resolved = refunds.resolve_request(
        request, outcome="completed", reason="Portal shows it reversed", receipt="slr9rev001"
    )

    payment.refresh_from_db()
    assert (resolved.status, resolved.settled_by, resolved.receipt) == ("completed", "staff", "SLR9REV001")
    assert payment.status == "reversed"
    with pytest.raises(refunds.RequestNotOpen):
        refunds.resolve_request(request, outcome="failed", reason="changed my mind")
    late = deliver(paybill, "reversal-result", reversal_result(request, "R000001", desc="Already reversed"))
    assert late.status == "mismatch" and "correct by hand" in late.outcome
    assert JournalEntry.objects.filter(kind="reversal", source_id=str(payment.pk)).count() == 1


def test_a_reversal_whose_answer_was_lost_is_matched_by_the_original_receipt(fake, paybill, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    fake.error = daraja.OutcomeUnknown("Daraja did not answer (ReadTimeout).")
    request = reverse(payment, fake)
    assert (request.status, request.conversation_id) == ("pending", None)
    assert "answer was lost" in request.outcome
    request.conversation_id, request.originator_conversation_id = "AG_20261124_00004d7ee675c0c7ee0b", "8521-4298025-1"

    callback = deliver(paybill, "reversal-result", reversal_result(request))

    request.refresh_from_db()
    assert callback.status == "processed" and request.status == "completed"
    assert request.conversation_id == "AG_20261124_00004d7ee675c0c7ee0b"


def test_a_success_for_another_amount_is_flagged_and_applies_nothing(fake, paybill, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = reverse(payment, fake)

    callback = deliver(paybill, "reversal-result", reversal_result(request, amount=100))

    request.refresh_from_db()
    payment.refresh_from_db()
    assert callback.status == "mismatch" and request.status == "pending" and payment.status == "received"
    assert "KES 100.00" in request.outcome


# --- B2C: asking ---------------------------------------------------------------------------------------------


def test_a_b2c_refund_takes_the_credit_when_accepted_so_it_cannot_be_spent_twice(fake, paybill, b2c, wanjiku):
    payment = mpesa_payment(wanjiku, "2500.00", "SLR7PAY001", paybill)

    request = refund(wanjiku, fake, amount=2000, phone="0712 345 678")

    assert (request.kind, request.status, request.amount, request.phone) == ("b2c", "pending", 2000, "254712345678")
    assert request.originator_conversation_id and request.conversation_id.startswith("AG_")
    [sent] = fake.payouts
    assert (sent["phone"], sent["amount"], sent["ocid"]) == ("254712345678", 2000, request.originator_conversation_id)
    assert sent["result_url"] == f"{settings.WAVU_PUBLIC_URL}/hooks/b2c/{b2c.hook_token}/result"
    assert (sent["remarks"], sent["occasion"]) == ("Refund 10008", f"Wavu {request.pk}")
    [taken] = request.refunds.all()
    assert (taken.payment, taken.amount, taken.method, taken.reference) == (
        payment,
        2000,
        "mpesa",
        f"B2C-{request.pk}-1",
    )
    entry = JournalEntry.objects.get(kind="refund", source_id=str(taken.pk))
    assert sorted((p.account.code, p.amount) for p in entry.postings.all()) == [
        ("1030", Decimal("-2000.00")),
        ("2200", Decimal("2000.00")),
    ]
    assert customer_credit(wanjiku.pk) == Decimal("500.00")

    with pytest.raises(refunds.RefundExceedsCredit):  # the reserved credit is gone
        refund(wanjiku, fake, amount=501)
    invoice = issued_invoice(wanjiku, "800.00")
    payments.apply_customer_credit(wanjiku.pk)
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("500.00")  # only what was left


def test_a_b2c_refund_over_the_credit_is_refused_with_a_clear_409_and_nothing_is_written(fake, paybill, b2c, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    before = (JournalEntry.objects.count(), Refund.objects.count())

    with pytest.raises(refunds.RefundExceedsCredit) as caught:
        refund(wanjiku, fake, amount=1501)

    assert caught.value.status == 409 and caught.value.code == "refund_exceeds_credit"
    assert "KES 1500.00 of unapplied credit" in caught.value.message
    assert caught.value.fields == {"amount": ["at most 1500.00"]}
    assert (JournalEntry.objects.count(), Refund.objects.count()) == before
    assert not RefundRequest.objects.exists() and fake.payouts == []


def test_without_an_amount_all_the_credit_is_refunded_in_whole_shillings(fake, paybill, b2c, wanjiku):
    mpesa_payment(wanjiku, "1500.75", "SLR7PAY001", paybill)

    assert refund(wanjiku, fake).amount == Decimal("1500")
    assert customer_credit(wanjiku.pk) == Decimal("0.75")
    with pytest.raises(refunds.NothingToRefund):
        refund(wanjiku, fake)


def test_credit_on_two_payments_is_taken_newest_first(fake, paybill, b2c, wanjiku):
    older = mpesa_payment(wanjiku, "300.00", "SLR7PAY001", paybill)
    newer, _ = payments.record_payment(method="cash", reference="RCPT-9", amount="500", customer=wanjiku)

    request = refund(wanjiku, fake, amount=700)

    assert [(r.payment_id, r.amount) for r in request.refunds.order_by("pk")] == [
        (newer.pk, Decimal("500.00")),
        (older.pk, Decimal("200.00")),
    ]
    assert customer_credit(wanjiku.pk) == Decimal("100.00")


def test_credit_on_a_payment_being_reversed_cannot_be_refunded_by_b2c(fake, paybill, b2c, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    reverse(payment, fake)

    with pytest.raises(refunds.RefundExceedsCredit):
        refund(wanjiku, fake, amount=10)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"amount": "99.50"}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": 10.0}, "amount"),
        ({"amount": 100, "phone": "0201234567"}, "phone"),
        ({"amount": 100, "reason": ""}, "reason"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(fake, paybill, b2c, wanjiku, kwargs, field):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)

    with pytest.raises(ValidationError) as caught:
        refunds.request_b2c_refund(wanjiku, client_factory=fake, **{"reason": "Closing the account", **kwargs})

    assert field in caught.value.message_dict
    assert not RefundRequest.objects.exists() and not Refund.objects.exists() and fake.payouts == []


def test_without_a_b2c_channel_a_refund_is_a_clear_409(fake, paybill, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)

    with pytest.raises(daraja.ChannelNotConfigured) as caught:
        refund(wanjiku, fake, amount=100)

    assert caught.value.status == 409 and "No active B2C channel" in caught.value.message
    with pytest.raises(ValidationError):  # a paybill is not a B2C channel
        refund(wanjiku, fake, amount=100, channel=paybill)
    assert not RefundRequest.objects.exists() and not Refund.objects.exists()


def test_daraja_refusing_the_b2c_payment_gives_the_credit_back_at_once(fake, paybill, b2c, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    fake.error = daraja.DarajaUnavailable("Cannot reach Daraja at https://sandbox.safaricom.co.ke (ConnectError).")

    request = refund(wanjiku, fake, amount=1000)

    assert (request.status, request.settled_by) == ("failed", "daraja")
    assert "credit is back on the account" in request.outcome
    assert customer_credit(wanjiku.pk) == Decimal("1500.00") and trial_balance()["balanced"]
    [taken] = request.refunds.all()
    assert JournalEntry.objects.get(kind="reversal", source_id=str(taken.pk)).reverses.kind == "refund"
    assert Payment.objects.get().amount_refunded == 0


# --- B2C: the result -----------------------------------------------------------------------------------------


def test_the_documented_b2c_success_completes_it_with_the_receipt_and_books_nothing_more(fake, paybill, b2c, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = refund(wanjiku, fake, amount=1500)
    before = JournalEntry.objects.count()

    callback = deliver(b2c, "b2c-result", b2c_result(request, receipt="LGH3197RIB"))

    request.refresh_from_db()
    assert (callback.status, callback.reference) == ("processed", "LGH3197RIB")
    assert (request.status, request.receipt, request.settled_by) == ("completed", "LGH3197RIB", "result")
    assert request.result_parameters["ReceiverPartyPublicName"] == "254712345678 - John Doe"
    assert JournalEntry.objects.count() == before and customer_credit(wanjiku.pk) == 0
    assert "KES 1500.00 paid to 254712***678" in request.outcome


@pytest.mark.parametrize(
    ("code", "desc", "says"),
    [
        (1, "The balance is insufficient for the transaction.", "B2C account's balance is too low"),
        ("2001", "The initiator information is invalid.", "initiator"),
        (2040, "Credit Party customer type can't be supported by the service.", "not a registered M-Pesa customer"),
    ],
)
def test_a_failed_b2c_result_gives_the_credit_back_in_its_own_mirror_entry(
    fake, paybill, b2c, wanjiku, code, desc, says
):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = refund(wanjiku, fake, amount=1200)
    assert customer_credit(wanjiku.pk) == Decimal("300.00")

    callback = deliver(b2c, "b2c-result", b2c_result(request, code, desc=desc))

    request.refresh_from_db()
    payment.refresh_from_db()
    assert callback.status == "processed"
    assert (request.status, request.result_code) == ("failed", str(code))
    assert says in request.outcome and "KES 1200.00 credit is back on the account" in request.outcome
    assert customer_credit(wanjiku.pk) == Decimal("1500.00") and payment.amount_refunded == 0
    [taken] = request.refunds.all()
    mirror = JournalEntry.objects.get(kind="reversal", source_id=str(taken.pk))
    assert mirror.reverses == JournalEntry.objects.get(kind="refund", source_id=str(taken.pk))
    assert trial_balance()["balanced"]


def test_a_failed_result_delivered_twice_gives_the_credit_back_once(fake, paybill, b2c, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = refund(wanjiku, fake, amount=1500)
    body = b2c_result(request, 1, desc="The balance is insufficient for the transaction.")

    first, second = deliver(b2c, "b2c-result", body), deliver(b2c, "b2c-result", body)

    assert (first.status, second.status) == ("processed", "duplicate")
    assert entries("reversal") == 1 and customer_credit(wanjiku.pk) == Decimal("1500.00")


def test_the_credit_returned_by_a_failure_pays_an_open_invoice_like_any_credit(fake, paybill, b2c, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = refund(wanjiku, fake, amount=1500)
    invoice = issued_invoice(wanjiku, "400.00")  # issued while the credit was reserved: stays open

    deliver(b2c, "b2c-result", b2c_result(request, 1))

    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID and customer_credit(wanjiku.pk) == Decimal("1100.00")


def test_a_b2c_timeout_keeps_the_credit_reserved_until_staff_resolve_it_as_failed(fake, paybill, b2c, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = refund(wanjiku, fake, amount=1500)

    deliver(b2c, "b2c-timeout", timeout_body(request))

    request.refresh_from_db()
    assert request.status == "timed_out" and "the credit stays reserved" in request.outcome
    assert customer_credit(wanjiku.pk) == 0
    resolved = refunds.resolve_request(request, outcome="failed", reason="Portal shows no such payment")
    assert (resolved.status, resolved.settled_by) == ("failed", "staff")
    assert customer_credit(wanjiku.pk) == Decimal("1500.00")
    late = deliver(b2c, "b2c-result", b2c_result(request))  # M-Pesa paid after all: staff must look
    assert late.status == "mismatch" and entries("reversal") == 1


def test_a_lost_b2c_answer_keeps_the_credit_reserved_and_our_originator_id_matches_the_result(
    fake, paybill, b2c, wanjiku
):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    fake.error = daraja.OutcomeUnknown("Daraja did not answer (ReadTimeout).")
    request = refund(wanjiku, fake, amount=1000)
    assert (request.status, request.conversation_id) == ("pending", None)
    assert customer_credit(wanjiku.pk) == Decimal("500.00")
    request.conversation_id = "AG_20261124_00006be9c8b5cc46abb6"

    deliver(b2c, "b2c-result", b2c_result(request))

    request.refresh_from_db()
    assert request.status == "completed" and request.conversation_id == "AG_20261124_00006be9c8b5cc46abb6"


def test_result_shapes_daraja_is_known_to_send_are_read(fake, paybill, b2c, wanjiku):
    """ResultParameters as a bare array, a single ResultParameter object, amounts as text or numbers."""
    mpesa_payment(wanjiku, "3000.00", "SLR7PAY001", paybill)
    shapes = [
        [{"Key": "TransactionAmount", "Value": 1000}, {"Key": "TransactionReceipt", "Value": "SLR9B2C001"}],
        {"ResultParameter": {"Key": "TransactionReceipt", "Value": "SLR9B2C002"}},
        {"ResultParameter": [{"Key": "TransactionAmount", "Value": "1000.00"}, {"Key": "TransactionReceipt"}]},
    ]
    for n, shape in enumerate(shapes, start=1):
        request = refund(wanjiku, fake, amount=1000)
        body = json.loads(b2c_result(request, receipt=f"SLR9B2C00{n}"))
        body["Result"]["ResultParameters"] = shape
        deliver(b2c, "b2c-result", json.dumps(body))
        request.refresh_from_db()
        assert (request.status, request.receipt) == ("completed", f"SLR9B2C00{n}"), shape


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"Body": {}}),
        json.dumps({"Result": {"ResultCode": 0, "ResultDesc": "no ids"}}),
    ],
)
def test_a_malformed_result_is_rejected_at_the_hook_or_in_processing_and_changes_nothing(
    fake, paybill, b2c, wanjiku, body
):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = refund(wanjiku, fake, amount=1500)
    before = JournalEntry.objects.count()

    Client().post(hook_url(b2c, "b2c-result"), data=body, content_type="application/json", REMOTE_ADDR=SAFARICOM_IP)
    callback = InboundCallback.objects.get()
    services.process_callback(callback.pk)

    callback.refresh_from_db()
    request.refresh_from_db()
    assert callback.status == "rejected" and request.status == "pending"
    assert JournalEntry.objects.count() == before


def test_a_success_without_a_receipt_or_a_result_code_is_rejected(fake, paybill, b2c, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = refund(wanjiku, fake, amount=1500)
    no_receipt = json.loads(b2c_result(request, receipt=""))
    no_code = json.loads(b2c_result(request))
    del no_code["Result"]["ResultCode"]

    assert deliver(b2c, "b2c-result", json.dumps(no_receipt)).status == "rejected"
    assert deliver(b2c, "b2c-result", json.dumps(no_code)).status == "rejected"
    request.refresh_from_db()
    assert request.status == "pending"


def test_a_result_code_written_as_a_fraction_or_exponent_is_no_success(fake, paybill, b2c, wanjiku):
    """Daraja writes ResultCode 0 as an integer: 0.0 or 0E+0 is not read as success, so no refund is booked."""
    for n, code in enumerate(("0.0", "0E+0")):
        mpesa_payment(wanjiku, "1500.00", f"SLR7PAY00{n}", paybill)
        request = refund(wanjiku, fake, amount=1500)
        body = b2c_result(request).replace('"ResultCode": 0,', f'"ResultCode": {code},')
        assert f'"ResultCode": {code},' in body

        deliver(b2c, "b2c-result", body)
        request.refresh_from_db()
        assert (request.status, request.result_code) == ("failed", code)


def test_a_result_for_another_kind_of_request_is_rejected(fake, paybill, b2c, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = reverse(payment, fake)

    assert deliver(b2c, "b2c-result", b2c_result(request)).status == "rejected"
    request.refresh_from_db()
    assert request.status == "pending"


def test_a_result_posted_to_another_channels_hook_is_rejected(fake, paybill, b2c, wanjiku):
    payment = mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = reverse(payment, fake)

    assert deliver(b2c, "reversal-result", reversal_result(request)).status == "rejected"
    payment.refresh_from_db()
    assert payment.status == "received"


def test_a_result_matching_no_request_waits_and_is_retried_by_the_sweep(fake, paybill, b2c, wanjiku):
    mpesa_payment(wanjiku, "1500.00", "SLR7PAY001", paybill)
    request = refund(wanjiku, fake, amount=1500)
    ghost = RefundRequest(
        originator_conversation_id="1-2-3", conversation_id="AG_20261124_unknown", amount=1500, phone="254712345678"
    )

    waiting = deliver(b2c, "b2c-result", b2c_result(ghost))
    assert (waiting.status, waiting.attempts) == ("failed", 1) and "AG_20261124_unknown" in waiting.last_error

    RefundRequest.objects.filter(pk=request.pk).update(conversation_id="AG_20261124_unknown")
    summary = services.retry_callbacks(timezone.now() + dt.timedelta(minutes=1))

    waiting.refresh_from_db()
    request.refresh_from_db()
    assert summary.as_dict() == {"picked": 1, "processed": 1}
    assert waiting.status == "processed" and request.status == "completed"


# --- hooks, the client, channels ---------------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["b2c-result", "b2c-timeout", "reversal-result", "reversal-timeout"])
def test_the_refund_hooks_store_what_arrives_and_an_unknown_token_stores_nothing(paybill, hook):
    body = result_body({"ResultCode": 0, "ConversationID": "AG_1", "OriginatorConversationID": "1-1-1"})

    unknown = Client().post(hook_url("no-such-token", hook), data=body, content_type="application/json")
    known = Client().post(hook_url(paybill, hook), data=body, content_type="application/json", REMOTE_ADDR=SAFARICOM_IP)

    assert unknown.status_code == 404 and known.status_code == 200
    callback = InboundCallback.objects.get()
    assert (callback.kind, callback.status, callback.body) == (hook.replace("-", "_"), "received", body)
    assert not channels.forbidden_words(hook_url(paybill, hook))


def test_the_b2c_request_is_the_documented_body_with_darajas_occassion_spelling():
    channel = make_b2c(consumer_key="ck", consumer_secret="cs", environment="sandbox")
    fake = FakeTransport(
        {
            daraja.B2C_PATH: [
                {
                    "json": {
                        "ConversationID": "AG_20261124_00006c6f7f5b8b6b1a62",
                        "OriginatorConversationID": "feb5e3f2-fbbc-4745-844c-ee37b546f627",
                        "ResponseCode": "0",
                        "ResponseDescription": "Accept the service request successfully.",
                    }
                }
            ]
        }
    )

    accepted = client_for(channel, fake).b2c_payment(
        "0712 345 678", "1500.00", "https://b.example/r", "https://b.example/q",
        originator_conversation_id="feb5e3f2-fbbc-4745-844c-ee37b546f627", remarks="Refund 10008", occasion="Wavu 7",
    )  # fmt: skip

    assert accepted.conversation_id == "AG_20261124_00006c6f7f5b8b6b1a62"
    assert fake.body(daraja.B2C_PATH) == {
        "OriginatorConversationID": "feb5e3f2-fbbc-4745-844c-ee37b546f627",
        "InitiatorName": "apiop37",
        "SecurityCredential": "SECCRED==",
        "CommandID": "BusinessPayment",
        "Amount": "1500",
        "PartyA": "600996",
        "PartyB": "254712345678",
        "Remarks": "Refund 10008",
        "QueueTimeOutURL": "https://b.example/q",
        "ResultURL": "https://b.example/r",
        "Occassion": "Wavu 7",
    }


def test_a_b2c_payment_is_sent_once_and_never_from_a_paybill():
    channel = make_b2c(consumer_key="ck", consumer_secret="cs", environment="sandbox")
    fake = FakeTransport({daraja.B2C_PATH: [httpx.ReadTimeout("slow")]})
    with pytest.raises(daraja.OutcomeUnknown):
        client_for(channel, fake).b2c_payment(
            "254712345678", 10, "https://b.example/r", "https://b.example/q", originator_conversation_id="x-1"
        )
    assert len(fake.calls(daraja.B2C_PATH)) == 1

    paybill = make_paybill(shortcode="600100", consumer_key="ck", consumer_secret="cs")
    with pytest.raises(daraja.ChannelNotConfigured):
        client_for(paybill, FakeTransport()).b2c_payment(
            "254712345678", 10, "https://b.example/r", "https://b.example/q", originator_conversation_id="x-2"
        )


def test_a_b2c_channel_has_no_till_number_or_passkey_and_registers_no_c2b_urls():
    with pytest.raises(ValidationError) as caught:
        channels.create_channel(name="Payouts", kind="b2c", shortcode="600996", till_number="600101", passkey="pk")
    assert set(caught.value.message_dict) == {"till_number", "passkey"}

    channel = channels.create_channel(name="Payouts", kind="b2c", shortcode="600996", initiator_name="apiop37")
    with pytest.raises(ValidationError) as caught:
        channels.register_c2b_urls(channel)
    assert "receives no C2B payments" in caught.value.message_dict["kind"][0]


def test_refund_urls_refuse_a_public_address_safaricom_would_refuse(settings, b2c):
    settings.WAVU_PUBLIC_URL = "https://mpesa.isp.co.ke"
    with pytest.raises(ValidationError) as caught:
        refunds.refund_urls(b2c, "b2c")
    assert "mpesa" in caught.value.message_dict["WAVU_PUBLIC_URL"][0]


def test_cancelling_a_refund_twice_gives_the_credit_back_once(paybill, wanjiku):
    payment = mpesa_payment(wanjiku, "1000.00", "SLR7PAY001", paybill)
    taken = payments.refund_payment(payment, amount="400", method="mpesa", reference="B2C-T-1", reason="refund")

    first = payments.cancel_refund(taken, reason="B2C failed")
    second = payments.cancel_refund(taken, reason="B2C failed")

    payment.refresh_from_db()
    assert first == second and entries("reversal") == 1
    assert payment.amount_refunded == 0 and customer_credit(wanjiku.pk) == Decimal("1000.00")

"""STK push (M-Pesa Express): ask a customer's phone to pay, settle the answer once, chase lost answers.

Purposes (`StkRequest.Purpose`): an open invoice (default amount: what it still owes), one period
of a prepaid service's plan (a new service or a renewal; default amount: the price less the credit
the account can spend on it) or a top-up (amount given). Inputs are refused, never changed: the
phone must be a Kenyan mobile number (any usual form, stored 2547…/2541…), the amount whole
shillings ≥ 1, the AccountReference (the customer's account number) at most 12 and the
TransactionDesc at most 13 characters of [A-Za-z0-9 -].

Guarantees:
- **One open request per purpose.** A request is "pending" (or "unknown") until settled; a unique
  partial index on (customer, purpose, invoice, subscription) refuses a second one with
  `StkRequestOpen` (HTTP 409, code stk_request_open), whatever the concurrency.
- **No HTTP inside a transaction.** The request row is committed first, Daraja is called, then the
  answer is stored. A push whose fate is unknown (`StkPushOutcomeUnknown`) becomes "unknown" and is
  never pushed again: the callback settles it, or the janitor expires it.
- **A request pays once.** Settling (by the callback, by the janitor's STK query, or both at once)
  locks the request row first (then `record_payment` locks customer → payments → invoices) and only
  an unpaid request is paid; the payment is `record_payment(method="mpesa", source=<shortcode>,
  reference=<MpesaReceiptNumber>)`, unique on the receipt. The STK query does not return the
  receipt: a request paid by the janitor is recorded with its CheckoutRequestID as the reference and
  a later callback only adds the receipt to the request (the payment is not recorded twice), as does
  the statement import (`reconciliation.stk_payment_for`).
- **Money is never dropped.** A success callback pays even after the request was expired or failed
  (a late callback); a success callback that matches no request is recorded in suspense.
- **A request is paid only at the amount it asked.** A success whose Amount differs (cents included:
  STK amounts are whole shillings) is recorded in suspense at M-Pesa's amount, the callback is
  "mismatch" for staff, and the request is closed as failed (`_hold_other_amount`), so neither amount
  is credited silently.
- After the payment: an invoice request's money goes to the customer's oldest open invoices
  (`record_payment`); a purchase request then buys the period (`prepaid.purchase_period`, from the
  credit just received; a refusal is noted on the request, the money stays as credit); the
  after-payment job does the rest (reconnection, renewals from credit).

The janitor (`settle_pending_stk`, every 30 s) queries requests still open about 60 s after the push,
then with backoff (30 s, 60 s, 2 min, 4 min, then every 5 min); "still processing" keeps them open;
after `EXPIRE_AFTER` (15 min) with no final answer a request is "expired" (1037). It also processes
STK callbacks that were stored but not processed (a lost job).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from wavu.billing import prepaid
from wavu.billing.models import Invoice
from wavu.billing.selectors import open_invoices
from wavu.catalog.selectors import plan_price
from wavu.core import audit, clock
from wavu.core.errors import DomainError, NotAllowed
from wavu.core.models import AuditEvent
from wavu.core.phones import normalize_msisdn
from wavu.customers.models import Customer
from wavu.ledger.selectors import customer_credit
from wavu.payments.services import FUTURE_TOLERANCE, DuplicateReferenceMismatch, record_payment
from wavu.subscriptions.models import Subscription

from . import channels, daraja, payloads
from .callbacks import finish, mark_failed
from .models import InboundCallback, PaymentChannel, StkRequest

logger = logging.getLogger("wavu.mpesa")

Purpose = StkRequest.Purpose
Status = StkRequest.Status
OPEN = (Status.PENDING, Status.UNKNOWN)

FIRST_CHECK_AFTER = dt.timedelta(seconds=60)
BACKOFF_BASE = dt.timedelta(seconds=30)
BACKOFF_MAX = dt.timedelta(minutes=5)
EXPIRE_AFTER = dt.timedelta(minutes=15)
STUCK_CALLBACK_AFTER = dt.timedelta(seconds=60)

DESCRIPTIONS = {Purpose.INVOICE: "Invoice", Purpose.PURCHASE: "Internet plan", Purpose.TOP_UP: "Top up"}
OPEN_INVOICE_STATUSES = (Invoice.Status.ISSUED, Invoice.Status.PARTIALLY_PAID)

# --- result codes → what the customer should do ------------------------------------------------------

TRY_LATER = "M-Pesa could not send the prompt. Please try again in a few minutes."
RESULTS: dict[str, tuple[str, str]] = {
    "0": (Status.PAID, "Payment received. Thank you."),
    "1032": (Status.CANCELLED, "You cancelled the M-Pesa prompt. Start again when you are ready to pay."),
    "1031": (Status.CANCELLED, "You cancelled the M-Pesa prompt. Start again when you are ready to pay."),
    "2001": (Status.FAILED, "The M-Pesa PIN was wrong. Try again and enter your PIN carefully."),
    "1": (
        Status.FAILED,
        "Your M-Pesa balance (with Fuliza) is not enough. Top up M-Pesa, then try again.",
    ),
    "1037": (
        Status.EXPIRED,
        "We could not reach your phone or the prompt timed out. Keep the phone on, unlocked and with "
        "signal, then try again.",
    ),
    "1001": (
        Status.FAILED,
        "Your phone is busy with another M-Pesa transaction. Finish or close it, wait 1 to 3 minutes and try again.",
    ),
    "1019": (Status.EXPIRED, "The M-Pesa prompt expired before it was answered. Please try again."),
    "1025": (Status.FAILED, TRY_LATER),
    "9999": (Status.FAILED, TRY_LATER),
    "17": (Status.FAILED, TRY_LATER),
    "26": (Status.FAILED, "M-Pesa is busy. Please try again in a few minutes."),
}


def customer_outcome(result_code) -> tuple[str, str]:
    """(request status, what the customer should do) for an STK ResultCode (number or string)."""
    code = str(result_code).strip()
    return RESULTS.get(code, (Status.FAILED, f"M-Pesa could not complete the payment (code {code}). {TRY_LATER}"))


PUSH_ERROR_MESSAGES = {
    daraja.SubscriberBusy: RESULTS["1001"][1],
    daraja.DarajaUnavailable: "M-Pesa cannot be reached right now. Please try again in a few minutes.",
}


class StkRequestOpen(NotAllowed):
    """A request for the same purpose is still waiting for the customer (HTTP 409)."""

    code = "stk_request_open"


class NothingToPay(NotAllowed):
    code = "nothing_to_pay"


# --- asking for a payment -----------------------------------------------------------------------------


def default_channel() -> PaymentChannel | None:
    """The first active channel that can push (has a passkey), by id."""
    for channel in PaymentChannel.objects.filter(is_active=True).order_by("pk"):
        if channel.passkey:
            return channel
    return None


def _owed(customer_id: int) -> Decimal:
    return sum(
        (total - paid - credited)
        for total, paid, credited in open_invoices(customer_id).values_list("total", "amount_paid", "amount_credited")
    ) or Decimal("0")


def _whole_up(amount: Decimal) -> int:
    return int(math.ceil(amount))


def _purpose_amount(purpose, *, customer, invoice, subscription, now) -> int:
    """The default amount for a purpose, in whole shillings (rounded up)."""
    if purpose == Purpose.INVOICE:
        due = invoice.total - invoice.amount_paid - invoice.amount_credited
        return _whole_up(due)
    start = prepaid._next_start(subscription, now)
    price = plan_price(prepaid._plan_at(subscription, start), start).amount
    spendable = customer_credit(customer.pk) - _owed(customer.pk)
    needed = price - spendable
    if needed <= 0:
        raise NothingToPay(
            f"The account's credit already pays for {subscription.username}'s next period; buy it from credit."
        )
    return _whole_up(needed)


def _resolve(purpose, *, customer, invoice, subscription, amount, phone, channel, now) -> dict:
    """Check everything and return the row's values; raises ValidationError / DomainError, writes nothing."""
    errors: dict[str, list[str]] = {}
    if purpose not in Purpose.values:
        raise ValidationError({"purpose": [f"purpose must be one of {', '.join(Purpose.values)}."]})
    if purpose == Purpose.INVOICE:
        if invoice is None:
            raise ValidationError({"invoice": ["Name the invoice to pay."]})
        if invoice.status not in OPEN_INVOICE_STATUSES:
            raise NotAllowed(f"Invoice {invoice.number or invoice.pk} is not open.", code="invoice_not_open")
        subscription = None
        owner = invoice.customer
    elif purpose == Purpose.PURCHASE:
        if subscription is None:
            raise ValidationError({"subscription": ["Name the service to buy a period for."]})
        prepaid._check_purchasable(subscription)
        invoice = None
        owner = subscription.customer
    else:
        if customer is None:
            raise ValidationError({"customer": ["Name the customer to top up."]})
        invoice = subscription = None
        owner = customer
    if customer is not None and customer.pk != owner.pk:
        raise ValidationError({"customer": ["The customer does not own that invoice or service."]})
    customer = owner
    if customer.status == Customer.Status.CLOSED:
        raise NotAllowed(f"Account {customer.account_number} is closed.", code="account_closed")

    try:
        msisdn = normalize_msisdn(phone or customer.phone)
    except ValidationError as exc:
        errors["phone"] = exc.messages
    if amount is None or amount == "":
        if purpose == Purpose.TOP_UP:
            errors["amount"] = ["Give the amount to top up, in whole shillings."]
        else:
            amount = _purpose_amount(purpose, customer=customer, invoice=invoice, subscription=subscription, now=now)
    if "amount" not in errors:
        try:
            amount = daraja.whole_shillings(amount)
        except ValidationError as exc:
            errors["amount"] = exc.message_dict.get("amount", exc.messages)
    try:
        reference = daraja.check_safe_text("account_reference", customer.account_number, daraja.ACCOUNT_REFERENCE_MAX)
    except ValidationError as exc:
        errors["account_reference"] = exc.message_dict.get("account_reference", exc.messages)
    description = DESCRIPTIONS[purpose]
    if errors:
        raise ValidationError(errors)
    channel = channel or default_channel()
    if channel is None or not channel.is_active or not channel.passkey:
        raise daraja.ChannelNotConfigured("No active M-Pesa channel with a passkey can send STK pushes.")
    daraja.require_readable(channel, "consumer_key", "consumer_secret", "passkey")
    return {
        "channel": channel,
        "purpose": purpose,
        "customer": customer,
        "invoice": invoice,
        "subscription": subscription,
        "phone": msisdn,
        "amount": Decimal(amount),
        "account_reference": reference,
        "description": description,
    }


def _open_for(values: dict) -> StkRequest | None:
    return StkRequest.objects.filter(
        customer=values["customer"],
        purpose=values["purpose"],
        invoice=values["invoice"],
        subscription=values["subscription"],
        status__in=OPEN,
    ).first()


def request_stk_push(
    purpose: str,
    *,
    customer: Customer | None = None,
    invoice: Invoice | None = None,
    subscription: Subscription | None = None,
    phone: str | None = None,
    amount=None,
    channel: PaymentChannel | None = None,
    client_factory=None,
) -> StkRequest:
    """Send an STK push for `purpose` and return the request (pending, unknown, or failed).

    Not idempotent (each call may prompt the phone), but at most one request per purpose is open:
    a second one raises `StkRequestOpen` (409) and sends nothing. Bad input raises ValidationError
    (phone, amount, account_reference) or a DomainError (invoice_not_open, purchase refused,
    nothing_to_pay, account_closed, channel_not_configured) and writes nothing.

    Must not be called inside a transaction: the row is committed, then Daraja is called, then the
    answer stored. Accepted → pending with the CheckoutRequestID, first janitor check in 60 s.
    `StkPushOutcomeUnknown` → unknown (never pushed again). Refused by Daraja (busy subscriber,
    unavailable, bad request …) → failed with what the customer should do, the purpose free again.
    """
    now = clock.now()
    values = _resolve(
        purpose,
        customer=customer,
        invoice=invoice,
        subscription=subscription,
        amount=amount,
        phone=phone,
        channel=channel,
        now=now,
    )
    try:
        with transaction.atomic():
            request = StkRequest.objects.create(
                **values,
                customer_message="Check your phone and enter your M-Pesa PIN to pay.",
                created_at=now,
                next_check_at=now + FIRST_CHECK_AFTER,
            )
            audit.record(request, AuditEvent.Action.CREATE, verb="stk push requested")
    except IntegrityError:
        existing = _open_for(values)
        if existing is None:
            raise
        raise StkRequestOpen(
            f"An M-Pesa prompt for this is still waiting for the customer (request {existing.pk}); "
            "answer or cancel it on the phone, or wait for it to expire.",
            fields={"request": [str(existing.pk)]},
        ) from None

    callback_url = channels.callback_urls(values["channel"])["stk_callback"]
    try:
        with (client_factory or daraja.DarajaClient)(values["channel"]) as client:
            result = client.stk_push(
                request.phone, int(request.amount), request.account_reference, request.description, callback_url
            )
    except daraja.StkPushOutcomeUnknown as exc:
        return _store_push_answer(request.pk, status=Status.UNKNOWN, code=exc.code, desc=exc.message)
    except DomainError as exc:
        message = next((m for kind, m in PUSH_ERROR_MESSAGES.items() if isinstance(exc, kind)), TRY_LATER)
        return _store_push_answer(
            request.pk,
            status=Status.FAILED,
            code=getattr(exc, "daraja_code", "") or exc.code,
            desc=exc.message,
            message=message,
        )
    except ValidationError as exc:
        return _store_push_answer(
            request.pk, status=Status.FAILED, code="invalid", desc="; ".join(exc.messages), message=TRY_LATER
        )
    except Exception as exc:
        # We cannot tell whether the push left: treat it as unknown (never pushed again), then re-raise.
        _store_push_answer(request.pk, status=Status.UNKNOWN, code="error", desc=f"{type(exc).__name__}: {exc}")
        raise
    return _store_push_answer(
        request.pk,
        status=Status.PENDING,
        code="",
        desc=result.response_description,
        merchant_request_id=result.merchant_request_id,
        checkout_request_id=result.checkout_request_id,
    )


def _store_push_answer(
    request_id: int,
    *,
    status: str,
    code: str,
    desc: str,
    message: str = "",
    merchant_request_id: str = "",
    checkout_request_id: str | None = None,
) -> StkRequest:
    """Store Daraja's answer to the push. A callback that arrived first (and adopted the request)
    wins: only a request still open and not yet identified is changed."""
    with transaction.atomic():
        request = StkRequest.objects.select_for_update().get(pk=request_id)
        before = audit.snapshot(request)
        if request.checkout_request_id is None and checkout_request_id:
            request.checkout_request_id = checkout_request_id
            request.merchant_request_id = merchant_request_id
        if request.status in OPEN and request.settled_at is None:
            request.status = status
            request.result_desc = desc[:300]
            if status == Status.FAILED:
                request.result_code = str(code)[:20]
                request.customer_message = message
                request.settled_at = clock.now()
                request.settled_by = "push"
                request.next_check_at = None
            elif status == Status.UNKNOWN:
                request.result_code = str(code)[:20]
                request.customer_message = (
                    "We could not confirm that the M-Pesa prompt was sent. If it reaches your phone, answer it; "
                    "do not pay twice."
                )
        request.save()
        audit.record(request, AuditEvent.Action.UPDATE, before=before, verb=f"stk push {request.status}")
    return request


# --- the callback ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StkResult:
    """A parsed `Body.stkCallback`. `amount`, `receipt`, `transaction_date`, `phone` only on success."""

    merchant_request_id: str
    checkout_request_id: str
    result_code: str
    result_desc: str
    amount: Decimal | None = None
    receipt: str = ""
    transaction_date: dt.datetime | None = None
    phone: str = ""
    extra: dict = field(default_factory=dict)


def _number_text(value) -> str:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int | Decimal):
        text = str(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
    else:
        raise ValueError("not a number")
    return text


def parse_stk_callback(body: bytes | str) -> StkResult:
    """Parse an STK callback (mpesa-daraja.md §1.3). Items are looked up by Name in any order; `Balance`
    may have no Value; Amount (1 or 1.0) is read from the raw text as Decimal, never float, in ASCII
    digits without an exponent (`payloads.daraja_amount`); ResultCode is 0 only when written 0;
    TransactionDate is a number yyyyMMddHHmmss (Nairobi time, a plausible date: `payloads.daraja_time`);
    PhoneNumber a number. ResultCode 0 without MpesaReceiptNumber or Amount, or with a TransactionDate
    that is no plausible date, is malformed, as is text PostgreSQL cannot store (NUL) anywhere.
    Raises `payloads.BadCallback`."""
    data = payloads.load_json_object(body)
    payloads.require_storable(data)
    stk = (data.get("Body") or {}).get("stkCallback") if isinstance(data.get("Body"), dict) else None
    if not isinstance(stk, dict):
        raise payloads.BadCallback("not_stk_callback", "the body has no Body.stkCallback object")
    checkout = stk.get("CheckoutRequestID")
    if not isinstance(checkout, str) or not checkout.strip():
        raise payloads.BadCallback(
            "missing_field", "CheckoutRequestID is required", {"CheckoutRequestID": ["required"]}
        )
    raw_code = stk.get("ResultCode")
    try:
        code = _number_text(raw_code)
        if not re.fullmatch(r"-?[0-9]+", code):  # int() would read "٠" as 0: a success
            raise ValueError("not an integer in ASCII digits")
        code = str(int(code))
    except (ValueError, TypeError):
        if isinstance(raw_code, str) and raw_code.strip():
            code = raw_code.strip()  # e.g. SFC_IC0003; any code but "0" is no success
        else:
            raise payloads.BadCallback(
                "missing_field", "ResultCode is required", {"ResultCode": ["required"]}
            ) from None
    result = {
        "merchant_request_id": str(stk.get("MerchantRequestID") or ""),
        "checkout_request_id": checkout.strip(),
        "result_code": code,
        "result_desc": str(stk.get("ResultDesc") or "")[:300],
    }
    if code != "0":
        return StkResult(**result)
    items = ((stk.get("CallbackMetadata") or {}).get("Item")) if isinstance(stk.get("CallbackMetadata"), dict) else None
    if not isinstance(items, list):
        raise payloads.BadCallback("missing_field", "a successful callback needs CallbackMetadata.Item")
    values = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("Name"), str):
            values[item["Name"]] = item.get("Value")
    errors: dict[str, list[str]] = {}
    amount = receipt = None
    try:
        amount = payloads.daraja_amount(values.get("Amount"), field="Amount")
    except ValidationError as exc:
        errors.update(exc.message_dict)
    receipt = values.get("MpesaReceiptNumber")
    if not isinstance(receipt, str) or not payloads.RECEIPT_NUMBER.match(receipt.strip()):
        errors["MpesaReceiptNumber"] = ["MpesaReceiptNumber is required for a successful payment"]
    when = None
    if values.get("TransactionDate") not in (None, ""):
        try:
            when = payloads.daraja_time(values["TransactionDate"], field="TransactionDate")
        except ValueError as exc:
            errors["TransactionDate"] = [str(exc)]
    phone = ""
    if values.get("PhoneNumber") not in (None, ""):
        phone = str(values["PhoneNumber"]).strip()[:64]
    if errors:
        raise payloads.BadCallback("bad_metadata", "the callback metadata is incomplete: " + ", ".join(errors), errors)
    return StkResult(
        **result,
        amount=amount,
        receipt=receipt.strip(),
        transaction_date=when,
        phone=phone,
    )


def _adopt(channel_id: int, result: StkResult) -> StkRequest | None:
    """The locked request a callback belongs to: by CheckoutRequestID, else, for a success, the one open
    request on the channel not yet identified (its push answer was lost or not stored yet) with the same
    amount and phone. None when nothing (or more than one) matches."""
    request = StkRequest.objects.select_for_update().filter(checkout_request_id=result.checkout_request_id).first()
    if request is not None:
        return request
    if result.amount is None:  # a failure names no amount or phone: too little to adopt a request by
        return None
    candidates = StkRequest.objects.filter(
        channel_id=channel_id, status__in=OPEN, checkout_request_id__isnull=True, amount=result.amount
    )
    if result.phone.isdigit():
        candidates = candidates.filter(phone=result.phone)
    found = list(candidates.select_for_update().order_by("pk")[:2])
    if len(found) != 1:
        return None
    request = found[0]
    request.checkout_request_id = result.checkout_request_id
    request.merchant_request_id = result.merchant_request_id
    request.save(update_fields=["checkout_request_id", "merchant_request_id"])
    return request


@dataclass
class Settlement:
    """What settling a request did: `paid` a new payment was recorded, `changed` the request moved."""

    request: StkRequest
    changed: bool
    payment: object = None
    paid: bool = False
    note: str = ""


def _settle(
    request: StkRequest,
    *,
    code: str,
    desc: str,
    by: str,
    amount: Decimal | None = None,
    receipt: str = "",
    received_at: dt.datetime | None = None,
    phone: str = "",
) -> Settlement:
    """Apply a final result to a LOCKED request, in the caller's transaction. Paid wins: a paid request
    never changes again (a later success only adds the receipt); a success pays any unpaid request."""
    now = clock.now()
    before = audit.snapshot(request)
    status, message = customer_outcome(code)
    if request.status == Status.PAID:
        if receipt and not request.receipt:
            request.receipt = receipt
            request.save(update_fields=["receipt"])
            audit.record(request, AuditEvent.Action.UPDATE, before=before, verb="stk receipt added")
        return Settlement(request, False, request.payment, note=f"already paid (payment {request.payment_id})")
    if status != Status.PAID:
        if request.status not in OPEN:
            return Settlement(request, False, note=f"already {request.status}")
        request.status, request.customer_message = status, message
    else:
        received_at = _received_at(received_at, now)
        payment, created = record_payment(
            method="mpesa",
            source=request.channel.shortcode,
            reference=receipt or request.checkout_request_id,
            amount=amount if amount is not None else request.amount,
            customer=request.customer,
            received_at=received_at,
            payer_phone=phone or request.phone,
            account_reference=request.account_reference,
            notes=f"STK push {request.pk} ({request.get_purpose_display().lower()})",
        )
        request.status, request.payment, request.receipt = Status.PAID, payment, receipt
        shown = f" (receipt {receipt})" if receipt else ""
        request.customer_message = f"Payment of KES {payment.amount} received{shown}. Thank you."
        if created and request.purpose == Purpose.PURCHASE and request.subscription_id:
            message = _buy_period(request)
            if message:
                desc = f"{desc}; {message}"
    request.result_code, request.result_desc = str(code)[:20], desc[:300]
    request.settled_at, request.settled_by, request.next_check_at = now, by, None
    request.save()
    audit.record(request, AuditEvent.Action.UPDATE, before=before, verb=f"stk {request.status} ({by})")
    paid = request.status == Status.PAID
    return Settlement(request, True, request.payment, paid=paid, note=f"{request.status} by {by}")


def _received_at(stated: dt.datetime | None, fallback: dt.datetime) -> dt.datetime:
    """TransactionDate, unless missing or in the future (a wrong clock): then `fallback`."""
    if stated is None or stated > clock.now() + FUTURE_TOLERANCE:
        return fallback
    return stated


def _buy_period(request: StkRequest) -> str:
    """Buy the period the request was for, from the credit just received; '' or why it was not bought."""
    subscription = Subscription.objects.get(pk=request.subscription_id)
    try:
        with transaction.atomic():
            prepaid.purchase_period(subscription, reason=f"paid by M-Pesa STK push {request.pk}")
    except DomainError as exc:
        logger.warning("stk %s: paid, but the period was not bought: %s", request.pk, exc)
        return f"period not bought: {exc.message}"[:200]
    return ""


def process_stk_callback(callback_id: int) -> InboundCallback | None:
    """Settle the request a stored STK callback is about, exactly once. Idempotent and safe to run
    concurrently with itself and the janitor: locks the callback row, then the request row, then what
    `record_payment` locks. Outcomes: processed, duplicate (the request was already settled the same
    way), mismatch (the receipt is another payment's), rejected (a payload that can never be
    processed). A success for another amount than the request asked is "mismatch", held in suspense
    (`_hold_other_amount`). An unexpected error leaves the callback "failed" (the janitor retries it)."""
    try:
        with transaction.atomic():
            callback = InboundCallback.objects.select_for_update().filter(pk=callback_id).first()
            if (
                callback is None
                or callback.kind != InboundCallback.Kind.STK_CALLBACK
                or callback.status not in (InboundCallback.Status.RECEIVED, InboundCallback.Status.FAILED)
            ):
                return callback
            return _apply_callback(callback)
    except Exception as exc:  # noqa: BLE001 - recorded on the callback and retried by the janitor
        logger.exception("STK callback %s could not be processed", callback_id)
        return mark_failed(callback_id, exc)


def _apply_callback(callback: InboundCallback) -> InboundCallback:
    CB = InboundCallback.Status
    callback.attempts += 1
    try:
        result = parse_stk_callback(callback.body)
    except payloads.BadCallback as exc:
        return finish(callback, CB.REJECTED, exc.message)
    callback.reference = (result.receipt or result.checkout_request_id)[:60]
    callback.save(update_fields=["reference"])
    request = _adopt(callback.channel_id, result)
    if request is None:
        if result.result_code != "0":
            return finish(callback, CB.PROCESSED, f"no STK request {result.checkout_request_id}; ignored")
        note = f"STK callback {result.checkout_request_id} matched no request"
        recorded = _record_in_suspense(callback, result, note)
        if isinstance(recorded, InboundCallback):
            return recorded
        payment, created = recorded
        status = CB.PROCESSED if created else CB.DUPLICATE
        return finish(callback, status, f"no STK request {result.checkout_request_id}: in suspense", payment)
    if result.result_code == "0" and result.amount != request.amount:
        return _hold_other_amount(callback, request, result)
    try:
        settled = _settle(
            request,
            code=result.result_code,
            desc=result.result_desc,
            by="callback",
            amount=result.amount,
            receipt=result.receipt,
            received_at=result.transaction_date,
            phone=result.phone,
        )
    except DuplicateReferenceMismatch as exc:
        return finish(callback, CB.MISMATCH, exc.message)
    except ValidationError as exc:
        return finish(callback, CB.REJECTED, "; ".join(exc.messages))
    status = CB.PROCESSED if settled.changed else CB.DUPLICATE
    return finish(callback, status, f"STK request {request.pk}: {settled.note}", settled.payment)


def _record_in_suspense(callback: InboundCallback, result: StkResult, notes: str):
    """Record the receipt of a successful STK callback that credits nobody (a payment in suspense, unique
    on the channel's shortcode and the receipt, so a second copy is no second payment). Returns
    (payment, created), or the callback finished as "mismatch" (the receipt was recorded with another
    amount) or "rejected" (the payment refused the callback's data)."""
    CB = InboundCallback.Status
    try:
        return record_payment(
            method="mpesa",
            source=callback.channel.shortcode,
            reference=result.receipt,
            amount=result.amount,
            customer=None,
            received_at=_received_at(result.transaction_date, callback.received_at),
            payer_phone=result.phone,
            notes=notes,
        )
    except DuplicateReferenceMismatch as exc:
        return finish(callback, CB.MISMATCH, exc.message)
    except ValidationError as exc:
        return finish(callback, CB.REJECTED, "; ".join(exc.messages))


def _hold_other_amount(callback: InboundCallback, request: StkRequest, result: StkResult) -> InboundCallback:
    """A success whose Amount is not what the LOCKED request asked (cents included: STK amounts are whole
    shillings). M-Pesa says money moved, so it is recorded, never dropped, but never credited to the
    customer at either amount: the payment goes to suspense at M-Pesa's amount (reference = the receipt,
    so the statement import knows it), the callback is "mismatch" (needing action), and an open request
    is closed as failed, so the janitor's query cannot pay it at the asked amount as well. A request
    already paid (by the query, at the asked amount) only learns the receipt (so the statement import
    compares the amounts and reports the difference, rather than recording the receipt again)."""
    CB = InboundCallback.Status
    note = (
        f"M-Pesa reports KES {result.amount} paid (receipt {result.receipt}) for STK request {request.pk}, "
        f"which asked KES {request.amount}"
    )
    if request.status == Status.PAID:
        if not request.receipt:
            before = audit.snapshot(request)
            request.receipt = result.receipt
            request.save(update_fields=["receipt"])
            audit.record(request, AuditEvent.Action.UPDATE, before=before, verb="stk receipt added")
        outcome = f"{note}; the request was already paid (payment {request.payment_id}): check by hand"
        return finish(callback, CB.MISMATCH, outcome, request.payment)
    recorded = _record_in_suspense(
        callback, result, f"STK request {request.pk} asked KES {request.amount}; M-Pesa reports KES {result.amount}"
    )
    if isinstance(recorded, InboundCallback):
        return recorded
    payment, created = recorded
    if not created:
        return finish(callback, CB.DUPLICATE, f"already held in suspense: payment {payment.pk}", payment)
    if request.status in OPEN:
        before = audit.snapshot(request)
        request.status, request.result_code = Status.FAILED, str(result.result_code)[:20]
        request.result_desc = f"{note}; held in suspense as payment {payment.pk}"[:300]
        request.customer_message = (
            f"M-Pesa reports a payment of KES {result.amount}, not the KES {request.amount} asked. "
            "We are checking it and will credit your account; do not pay again for now."
        )
        request.settled_at, request.settled_by, request.next_check_at = clock.now(), "callback", None
        request.save()
        audit.record(request, AuditEvent.Action.UPDATE, before=before, verb="stk amount differs (callback)")
    outcome = f"{note}; held in suspense as payment {payment.pk} for staff to match or refund"
    return finish(callback, CB.MISMATCH, outcome, payment)


# --- the janitor -------------------------------------------------------------------------------------------


def _backoff(checks: int) -> dt.timedelta:
    return min(BACKOFF_BASE * 2 ** max(checks - 1, 0), BACKOFF_MAX)


def settle_from_query(request_id: int, result: daraja.StkQueryResult | None, *, error: str = "") -> Settlement:
    """Apply an STK query answer (or the lack of one: `result` None, `error` why) to a request.

    Only an open request changes (the callback may have settled it meanwhile: nothing happens).
    A final ResultCode settles it (0 pays, see `_settle`); "still processing" or no answer keeps it
    open with the next check after the backoff, until EXPIRE_AFTER since the push: then "expired"
    (1037). Locks the request row, then what `record_payment` locks."""
    with transaction.atomic():
        request = StkRequest.objects.select_for_update().select_related("channel").get(pk=request_id)
        if request.status not in OPEN:
            return Settlement(request, False, note=f"already {request.status}")
        now = clock.now()
        if result is not None and not result.pending and result.result_code:
            return _settle(request, code=result.result_code, desc=result.result_desc, by="query")
        if now - request.created_at >= EXPIRE_AFTER:
            return _settle(
                request,
                code="1037",
                desc=f"no final answer from M-Pesa within {int(EXPIRE_AFTER.total_seconds() // 60)} minutes",
                by="expiry",
            )
        request.checks += 1
        request.next_check_at = min(now + _backoff(request.checks), request.created_at + EXPIRE_AFTER)
        if error:
            request.result_desc = error[:300]
        request.save(update_fields=["checks", "next_check_at", "result_desc"])
        return Settlement(request, False, note="still waiting")


@dataclass
class JanitorSummary:
    checked: int = 0
    by_outcome: dict = field(default_factory=dict)
    callbacks_retried: int = 0

    def as_dict(self) -> dict:
        return {"checked": self.checked, "callbacks_retried": self.callbacks_retried, **self.by_outcome}


def settle_pending_stk(now: dt.datetime | None = None, *, limit: int = 100, client_factory=None) -> JanitorSummary:
    """Every 30 s: settle open STK requests whose next check has come, and process STK callbacks
    stored but not processed for a minute. Each request: an STK query (no transaction held during the
    HTTP call), then `settle_from_query`. A request with no CheckoutRequestID (push answer lost) cannot
    be queried: it waits for its callback and expires after EXPIRE_AFTER. Idempotent: a double run,
    or a run racing the callback, settles and pays each request once."""
    now = now or clock.now()
    client_factory = client_factory or daraja.DarajaClient
    summary = JanitorSummary()
    stuck = InboundCallback.objects.filter(
        kind=InboundCallback.Kind.STK_CALLBACK,
        status__in=(InboundCallback.Status.RECEIVED, InboundCallback.Status.FAILED),
        received_at__lte=now - STUCK_CALLBACK_AFTER,
        attempts__lt=10,
        resolved_at__isnull=True,
    ).values_list("pk", flat=True)[:limit]
    for callback_id in list(stuck):
        process_stk_callback(callback_id)
        summary.callbacks_retried += 1
    due = list(
        StkRequest.objects.filter(status__in=OPEN, next_check_at__lte=now)
        .order_by("next_check_at", "pk")
        .values_list("pk", "channel_id", "checkout_request_id")[:limit]
    )
    clients: dict[int, daraja.DarajaClient] = {}
    try:
        for request_id, channel_id, checkout_id in due:
            summary.checked += 1
            result, error = None, ""
            if checkout_id:
                try:
                    if channel_id not in clients:
                        clients[channel_id] = client_factory(PaymentChannel.objects.get(pk=channel_id))
                    result = clients[channel_id].stk_query(checkout_id)
                except (DomainError, ValidationError) as exc:
                    error = f"query failed: {exc}"
            try:
                settled = settle_from_query(request_id, result, error=error)
            except DuplicateReferenceMismatch as exc:
                logger.error("stk janitor: request %s: %s", request_id, exc)
                summary.by_outcome["mismatch"] = summary.by_outcome.get("mismatch", 0) + 1
                continue
            if settled.changed:
                outcome = settled.request.status
            else:
                outcome = "waiting" if settled.note == "still waiting" else "skipped"
            summary.by_outcome[outcome] = summary.by_outcome.get(outcome, 0) + 1
    finally:
        for client in clients.values():
            client.close()
    if summary.checked or summary.callbacks_retried:
        logger.info("stk janitor: %s", summary.as_dict())
    return summary

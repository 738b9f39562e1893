"""M-Pesa refunds: send a payment back to its payer (Daraja Reversal), or pay a customer's unapplied
credit to a phone (Daraja B2C), and settle each exactly once when M-Pesa's result arrives.

A request (`RefundRequest`) is made by staff with a reason (API `refund-requests`, the admin). It is
committed before Daraja is called (no transaction is held during the HTTP call) and stays "pending"
until the result reaches the hook `/hooks/reversal/<token>/result` or `/hooks/b2c/<token>/result`;
the stored callback is processed by `apply_refund_result` (through `services.process_callback`).

Books (see docs/mpesa.md "Refunds"):
- **Reversal**: nothing is booked while it is pending. Success → `payments.reverse_payment`: the
  payment comes off its invoices (they re-open) and the mirror of its payment entry is posted, one
  entry of its own. Failure → nothing changes; the request says why.
- **B2C**: the credit is taken when Wavu accepts the request, in the same transaction as the request
  row and under the customer's money lock: one `payments.refund_payment` per payment the credit sits
  on (Dr 2200 customer credit / Cr 1030 M-Pesa), newest payment first, so the money cannot be applied
  or refunded twice while M-Pesa works. Success → nothing more to book. Failure (or a definite refusal
  by Daraja) → `payments.cancel_refund` per refund: the mirror entry gives the credit back.

Guarantees:
- **A result changes the books once.** ConversationID and OriginatorConversationID are unique on the
  request; processing locks the callback row, then the request row, and only an open request
  ("pending" or "timed_out") is settled, so a result delivered twice (or twenty times at once) is
  applied once; the other copies are "duplicate". Locks: callback → request → customer → payment →
  invoices (the payments services' order).
- **Never sent twice.** Reversal and B2C are sent once. A lost answer (`daraja.OutcomeUnknown`)
  leaves the request pending: its result still arrives (a B2C result names our own
  OriginatorConversationID; a reversal result is also matched by its OriginalTransactionID).
- **A timeout is for staff.** A QueueTimeOut callback marks the request "timed_out": nothing changes
  in the books (a B2C refund keeps the credit reserved); a later result still settles it, or staff
  check the M-Pesa portal and `resolve_request` it as completed or failed, with a reason.
- **Bad input writes nothing.** A B2C amount over the customer's credit is refused
  (`RefundExceedsCredit`, 409) before anything is written; so are a reversal of a payment that is not
  M-Pesa, already reversed, partly refunded or already being reversed.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from wavu.core import audit, clock
from wavu.core.errors import DomainError, NotAllowed
from wavu.core.models import AuditEvent
from wavu.core.phones import mask_msisdn, normalize_msisdn
from wavu.customers.models import Customer
from wavu.customers.services import lock_accounts
from wavu.payments import selectors as payment_selectors
from wavu.payments import services as payments
from wavu.payments.models import Method, Payment

from . import channels, daraja, payloads
from .callbacks import REFUND_KINDS, mark_failed
from .models import InboundCallback, PaymentChannel, RefundRequest, StkRequest

logger = logging.getLogger("wavu.mpesa")

Kind = RefundRequest.Kind
Status = RefundRequest.Status
CB = InboundCallback.Status
OPEN = RefundRequest.OPEN_STATUSES

RESULT_KINDS = {InboundCallback.Kind.B2C_RESULT: Kind.B2C, InboundCallback.Kind.REVERSAL_RESULT: Kind.REVERSAL}
TIMEOUT_KINDS = {InboundCallback.Kind.B2C_TIMEOUT: Kind.B2C, InboundCallback.Kind.REVERSAL_TIMEOUT: Kind.REVERSAL}
HOOK_PREFIX = {Kind.B2C: "b2c", Kind.REVERSAL: "reversal"}
RECEIPT_RE = re.compile(r"^[A-Z0-9]{6,20}$")

# --- result codes → what staff should do ------------------------------------------------------------

TRY_LATER = "M-Pesa could not process it just now; ask again in a few minutes."
RESULT_MESSAGES = {
    "1": "The B2C account's balance is too low: move money to its utility account, then ask again.",
    "2001": "M-Pesa refused the initiator: check the channel's initiator name and security credential.",
    "8006": "The initiator's security credential is locked: reset the API operator in the M-Pesa portal.",
    "21": "The API operator may not do this: give it the B2C or reversal role in the M-Pesa portal.",
    "2040": "The phone is not a registered M-Pesa customer: refund another way.",
    "11": "The shortcode is not in a state that allows this: check it in the M-Pesa portal.",
    "17": TRY_LATER,
    "26": TRY_LATER,
    "R000001": "M-Pesa says the payment was already reversed: check the M-Pesa portal; if it was, "
    "reverse the payment in Wavu (payments, reverse).",
    "R000002": "M-Pesa does not know this receipt on this shortcode: check the receipt and the channel.",
}


def staff_message(code: str, desc: str) -> str:
    """What staff should know about a failed reversal or B2C payment (ResultCode and ResultDesc)."""
    known = RESULT_MESSAGES.get(str(code).strip())
    said = f"M-Pesa: {code} {desc}".strip()
    return f"{known} ({said})" if known else f"M-Pesa refused it ({said})."


# --- errors ----------------------------------------------------------------------------------------------


class RefundExceedsCredit(NotAllowed):
    """A B2C refund larger than the customer's unapplied credit (HTTP 409); nothing is written."""

    code = "refund_exceeds_credit"


class NothingToRefund(NotAllowed):
    code = "nothing_to_refund"


class PaymentNotReversible(NotAllowed):
    code = "payment_not_reversible"


class ReversalAlreadyRequested(NotAllowed):
    """The payment has a reversal that is pending, timed out or completed (HTTP 409)."""

    code = "reversal_already_requested"


class RequestNotOpen(NotAllowed):
    code = "refund_request_not_open"


# --- URLs and channels -----------------------------------------------------------------------------------


def refund_urls(channel: PaymentChannel, kind: str) -> tuple[str, str]:
    """The absolute (result, timeout) URLs for a `kind` request on `channel`: WAVU_PUBLIC_URL +
    /hooks/b2c/<token>/result|timeout or /hooks/reversal/<token>/result|timeout. Refused
    (ValidationError) when a URL contains a word Safaricom refuses, or is http for production."""
    base = settings.WAVU_PUBLIC_URL.rstrip("/")
    prefix = HOOK_PREFIX[kind]
    urls = tuple(
        base + reverse(f"mpesa-hooks:{prefix}-{end}", kwargs={"token": channel.hook_token})
        for end in ("result", "timeout")
    )
    for url in urls:
        channels.check_public_url(url, field="WAVU_PUBLIC_URL")
        if channel.environment == PaymentChannel.Environment.PRODUCTION and not url.startswith("https://"):
            raise ValidationError({"WAVU_PUBLIC_URL": [f"Daraja production needs https callback URLs; got {url}."]})
    return urls


def _check_initiator(channel: PaymentChannel) -> None:
    if not channel.is_active:
        raise daraja.ChannelNotConfigured(f"Channel {channel.shortcode} is not active.")
    daraja.require_readable(channel, "consumer_key", "consumer_secret", "security_credential")
    if not channel.initiator_name or not channel.security_credential:
        raise daraja.ChannelNotConfigured(
            f"Channel {channel.shortcode} needs an initiator name and security credential for refunds."
        )


def b2c_channel(channel: PaymentChannel | None = None) -> PaymentChannel:
    """`channel` if it is an active B2C channel with an initiator, else the first such channel; else
    ChannelNotConfigured (409)."""
    if channel is None:
        channel = PaymentChannel.objects.filter(kind=PaymentChannel.Kind.B2C, is_active=True).order_by("pk").first()
        if channel is None:
            raise daraja.ChannelNotConfigured(
                "No active B2C channel: add one (a B2C shortcode with its initiator and credential) to refund "
                "by M-Pesa."
            )
    if channel.kind != PaymentChannel.Kind.B2C:
        raise ValidationError({"channel": [f"Channel {channel.shortcode} is not a B2C channel."]})
    _check_initiator(channel)
    return channel


def reversal_channel(payment: Payment, channel: PaymentChannel | None = None) -> PaymentChannel:
    """The paybill or till that received `payment` (its shortcode is the payment's source)."""
    if channel is None:
        channel = (
            PaymentChannel.objects.filter(shortcode=payment.source)
            .exclude(kind=PaymentChannel.Kind.B2C)
            .order_by("pk")
            .first()
        )
        if channel is None:
            raise daraja.ChannelNotConfigured(
                f"No M-Pesa channel has shortcode {payment.source or '(none)'}, which received payment "
                f"{payment.reference}: it cannot be reversed through M-Pesa."
            )
    elif channel.shortcode != payment.source or channel.kind == PaymentChannel.Kind.B2C:
        raise ValidationError({"channel": [f"Payment {payment.reference} was not received on {channel.shortcode}."]})
    _check_initiator(channel)
    return channel


# --- asking ------------------------------------------------------------------------------------------------


def _clean_reason(reason) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise ValidationError({"reason": ["Say why the money goes back (at most 300 characters)."]})
    if len(text) > 300:
        raise ValidationError({"reason": [f"The reason is at most 300 characters; it has {len(text)}."]})
    return text


def receipt_of(payment: Payment) -> str:
    """The M-Pesa receipt of `payment`: its reference, or (an STK payment settled by the janitor, whose
    reference is the CheckoutRequestID) the receipt its STK request learnt later; "" when unknown."""
    reference = (payment.reference or "").strip().upper()
    if RECEIPT_RE.match(reference):
        return reference
    receipt = (
        StkRequest.objects.filter(payment=payment).exclude(receipt="").values_list("receipt", flat=True).first() or ""
    )
    return receipt.strip().upper() if RECEIPT_RE.match(receipt.strip().upper()) else ""


def prepare_reversal(payment: Payment, *, reason, channel: PaymentChannel | None = None) -> dict:
    """Check a reversal of `payment` and return the request's values; raises (ValidationError,
    PaymentNotReversible, ReversalAlreadyRequested, ChannelNotConfigured) and writes nothing."""
    reason = _clean_reason(reason)
    payment = Payment.objects.get(pk=payment.pk)
    if payment.method != Method.MPESA:
        raise PaymentNotReversible(
            f"Payment {payment.reference} is {payment.get_method_display()}, not M-Pesa: reverse it in Wavu only "
            "(payments, reverse) and return the money another way."
        )
    if payment.status == Payment.Status.REVERSED:
        raise PaymentNotReversible(f"Payment {payment.reference} is already reversed.")
    if payment.amount_refunded > 0:
        raise PaymentNotReversible(
            f"KES {payment.amount_refunded} of payment {payment.reference} was refunded (or is being refunded); "
            "it cannot be reversed.",
            code="payment_refunded",
        )
    receipt = receipt_of(payment)
    if not receipt:
        raise PaymentNotReversible(
            f"Wavu does not know the M-Pesa receipt of payment {payment.reference}; reverse it from the M-Pesa portal.",
            code="receipt_unknown",
        )
    try:
        amount = daraja.whole_shillings(payment.amount)
    except ValidationError:
        raise PaymentNotReversible(f"Payment {payment.reference} has cents; M-Pesa reverses whole shillings.") from None
    channel = reversal_channel(payment, channel)
    existing = _open_reversal(payment.pk)
    if existing is not None:
        raise _already_requested(existing)
    result_url, timeout_url = refund_urls(channel, Kind.REVERSAL)
    return {
        "kind": Kind.REVERSAL,
        "channel": channel,
        "payment": payment,
        "customer_id": payment.customer_id,
        "amount": Decimal(amount),
        "original_receipt": receipt,
        "reason": reason,
        "urls": (result_url, timeout_url),
    }


def _open_reversal(payment_id: int) -> RefundRequest | None:
    return (
        RefundRequest.objects.filter(kind=Kind.REVERSAL, payment_id=payment_id)
        .exclude(status=Status.FAILED)
        .order_by("pk")
        .first()
    )


def _already_requested(existing: RefundRequest) -> ReversalAlreadyRequested:
    return ReversalAlreadyRequested(
        f"Payment {existing.payment_id} already has a reversal ({existing.get_status_display().lower()}, request "
        f"{existing.pk}).",
        fields={"request": [str(existing.pk)]},
    )


def request_reversal(
    payment: Payment, *, reason, channel: PaymentChannel | None = None, client_factory=None
) -> RefundRequest:
    """Ask M-Pesa to send `payment` back to its payer; returns the request (pending, or failed when
    Daraja refused it at once). Nothing changes in the books until the result says it is done.

    Not idempotent, but a payment has at most one reversal that is not failed: a second request is
    refused with ReversalAlreadyRequested (409) and sends nothing. The row is written (under the
    customer's money lock, re-checking that nothing was refunded meanwhile) and committed before Daraja
    is called; must not be called inside a transaction.
    """
    values = prepare_reversal(payment, reason=reason, channel=channel)
    result_url, timeout_url = values.pop("urls")
    try:
        with transaction.atomic():
            lock_accounts(payment.customer_id)
            current = Payment.objects.get(pk=payment.pk)
            if current.amount_refunded > 0 or current.status == Payment.Status.REVERSED:
                raise PaymentNotReversible(f"Payment {payment.reference} was refunded or reversed meanwhile.")
            request = RefundRequest.objects.create(
                **values, requested_by=audit.current_actor().label[:120], created_at=clock.now()
            )
            audit.record(request, AuditEvent.Action.CREATE, verb="mpesa reversal requested", reason=values["reason"])
    except IntegrityError:
        existing = _open_reversal(payment.pk)
        if existing is None:
            raise
        raise _already_requested(existing) from None

    def send(client):
        return client.reversal(
            request.original_receipt, int(request.amount), result_url, timeout_url, remarks=f"Reversal {request.pk}"
        )

    return _send(request, send, client_factory)


def _credit_sources(customer_id: int) -> list[Payment]:
    """The customer's payments with unapplied money, newest first, except those being reversed."""
    being_reversed = RefundRequest.objects.filter(kind=Kind.REVERSAL, status__in=OPEN, payment__isnull=False).values(
        "payment_id"
    )
    return list(payment_selectors.payments_with_credit(customer_id).exclude(pk__in=being_reversed).reverse())


def prepare_b2c_refund(
    customer: Customer, *, reason, amount=None, phone: str | None = None, channel: PaymentChannel | None = None
) -> dict:
    """Check a B2C refund and return the request's values; raises (ValidationError naming the field,
    ChannelNotConfigured, RefundExceedsCredit, NothingToRefund) and writes nothing. The credit is
    checked again under the money lock by `request_b2c_refund`."""
    errors: dict[str, list[str]] = {}
    values: dict = {"kind": Kind.B2C, "customer": customer}
    try:
        values["reason"] = _clean_reason(reason)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        values["phone"] = normalize_msisdn(phone or customer.phone)
    except ValidationError as exc:
        errors["phone"] = exc.messages
    values["amount"] = None
    if amount not in (None, ""):
        try:
            values["amount"] = Decimal(daraja.whole_shillings(amount))
        except ValidationError as exc:
            errors["amount"] = exc.message_dict.get("amount", exc.messages)
    if errors:
        raise ValidationError(errors)
    values["channel"] = b2c_channel(channel)
    values["urls"] = refund_urls(values["channel"], Kind.B2C)
    _check_credit(customer, values["amount"], _available(_credit_sources(customer.pk)))
    return values


def _available(sources: list[Payment]) -> Decimal:
    return sum((p.unallocated for p in sources), Decimal("0.00"))


def _check_credit(customer: Customer, wanted: Decimal | None, available: Decimal) -> Decimal:
    """The amount to refund (`wanted`, or all the credit in whole shillings); raises NothingToRefund or
    RefundExceedsCredit."""
    if wanted is None:
        wanted = Decimal(math.floor(available))
        if wanted < 1:
            raise NothingToRefund(f"Account {customer.account_number} has no credit to refund (KES {available}).")
    if wanted > available:
        raise RefundExceedsCredit(
            f"Account {customer.account_number} has KES {available} of unapplied credit; KES {wanted} cannot be "
            "refunded.",
            fields={"amount": [f"at most {available}"]},
        )
    return wanted


def request_b2c_refund(
    customer: Customer,
    *,
    reason,
    amount=None,
    phone: str | None = None,
    channel: PaymentChannel | None = None,
    client_factory=None,
) -> RefundRequest:
    """Pay `amount` (whole shillings; default: all the credit, rounded down) of the customer's unapplied
    credit to `phone` (default: the customer's phone) from a B2C channel; returns the request (pending,
    or failed when Daraja refused it at once, with the credit given back).

    In one transaction, under the customer's money lock: the amount is checked against the credit
    (over → RefundExceedsCredit 409, nothing written), the request row is written with a fresh
    OriginatorConversationID, and the credit is taken by `payments.refund_payment` (method mpesa,
    reference B2C-<request>-<n>) on the customer's payments, newest first. Then Daraja is called once.
    Must not be called inside a transaction.
    """
    values = prepare_b2c_refund(customer, reason=reason, amount=amount, phone=phone, channel=channel)
    result_url, timeout_url = values.pop("urls")
    wanted = values.pop("amount")
    with transaction.atomic():
        lock_accounts(customer.pk)
        sources = _credit_sources(customer.pk)
        wanted = _check_credit(customer, wanted, _available(sources))  # again, under the lock
        request = RefundRequest.objects.create(
            **values,
            amount=wanted,
            originator_conversation_id=str(uuid.uuid4()),
            requested_by=audit.current_actor().label[:120],
            created_at=clock.now(),
        )
        memo = f"M-Pesa B2C refund {request.pk} to {mask_msisdn(request.phone)}: {request.reason}"[:300]
        remaining, taken = wanted, []
        for number, payment in enumerate(sources, start=1):
            share = min(remaining, payment.unallocated)
            taken.append(
                payments.refund_payment(
                    payment, amount=share, method=Method.MPESA, reference=f"B2C-{request.pk}-{number}", reason=memo
                )
            )
            remaining -= share
            if remaining <= 0:
                break
        request.refunds.set(taken)
        audit.record(request, AuditEvent.Action.CREATE, verb="mpesa b2c refund requested", reason=request.reason)

    def send(client):
        return client.b2c_payment(
            request.phone,
            int(request.amount),
            result_url,
            timeout_url,
            originator_conversation_id=request.originator_conversation_id,
            remarks=f"Refund {customer.account_number}"[:100] if _safe(customer.account_number) else "Refund",
            occasion=f"Wavu {request.pk}",
        )

    return _send(request, send, client_factory)


def _safe(text: str) -> bool:
    return bool(daraja.SAFE_TEXT.fullmatch(text or ""))


def _send(request: RefundRequest, send, client_factory) -> RefundRequest:
    """Call Daraja once (outside any transaction) and store its answer on the request."""
    try:
        with (client_factory or daraja.DarajaClient)(request.channel) as client:
            accepted = send(client)
    except daraja.OutcomeUnknown as exc:
        return _store_answer(request.pk, None, note=f"{exc.message} The result will still settle it; do not ask again.")
    except (DomainError, ValidationError) as exc:
        message = getattr(exc, "message", None) or "; ".join(exc.messages)
        code = getattr(exc, "daraja_code", "") or getattr(exc, "code", "") or "invalid"
        return _refused(request.pk, str(code), message)
    except Exception as exc:
        # We cannot tell whether it left: keep it pending (its result may come), then re-raise.
        _store_answer(request.pk, None, note=f"{type(exc).__name__}: {exc}; waiting for a result")
        raise
    return _store_answer(request.pk, accepted)


def _store_answer(request_id: int, accepted: daraja.AcceptedResult | None, *, note: str = "") -> RefundRequest:
    with transaction.atomic():
        request = RefundRequest.objects.select_for_update().get(pk=request_id)
        before = audit.snapshot(request)
        fields = []
        if accepted is not None:
            if accepted.conversation_id and not request.conversation_id:
                request.conversation_id = accepted.conversation_id[:64]
                fields.append("conversation_id")
            if accepted.originator_conversation_id and not request.originator_conversation_id:
                request.originator_conversation_id = accepted.originator_conversation_id[:64]
                fields.append("originator_conversation_id")
        if request.status == Status.PENDING and request.settled_at is None:
            request.outcome = (
                "Sent to M-Pesa; waiting for the result."
                if accepted is not None
                else f"M-Pesa's answer was lost: {note}"[:400]
            )
            fields.append("outcome")
        if fields:
            request.save(update_fields=fields)
            audit.record(request, AuditEvent.Action.UPDATE, before=before, verb="mpesa refund sent")
    return request


def _refused(request_id: int, code: str, message: str) -> RefundRequest:
    """Daraja refused the request outright (nothing was sent on, or it said no): failed, books as before."""
    with transaction.atomic():
        request = RefundRequest.objects.select_for_update().get(pk=request_id)
        if request.status in OPEN:
            _fail(request, code=code, desc=message, by="daraja", message=f"Daraja refused the request: {message}")
    return request


# --- settling -------------------------------------------------------------------------------------------------


def _fail(request: RefundRequest, *, code: str, desc: str, by: str, message: str) -> None:
    """Settle a LOCKED open request as failed, in the caller's transaction: a B2C refund gives the
    credit back (the mirror of each refund entry); a reversal changes nothing."""
    before = audit.snapshot(request)
    if request.kind == Kind.B2C:
        for refund in request.refunds.order_by("pk"):
            payments.cancel_refund(refund, reason=f"M-Pesa B2C refund {request.pk} failed: {desc}"[:300])
        books = f" The KES {request.amount} credit is back on the account."
    else:
        books = " Nothing changed in the books."
    request.status = Status.FAILED
    request.result_code, request.result_desc = str(code)[:20], (desc or "")[:300]
    request.outcome = (message + books)[:400]
    request.settled_at, request.settled_by = clock.now(), by
    request.save()
    audit.record(request, AuditEvent.Action.UPDATE, before=before, verb=f"mpesa refund failed ({by})")


def _complete(request: RefundRequest, *, code: str, desc: str, by: str, receipt: str, params: dict) -> None:
    """Settle a LOCKED open request as completed, in the caller's transaction: a reversal reverses the
    payment in Wavu (`payments.reverse_payment`: invoices re-open, the mirror entry); a B2C refund's
    books were written when it was accepted."""
    before = audit.snapshot(request)
    if request.kind == Kind.REVERSAL:
        payment = Payment.objects.get(pk=request.payment_id)
        reason = f"M-Pesa reversal {receipt or request.pk} (request {request.pk}): {request.reason}"[:300]
        try:
            with transaction.atomic():
                payments.reverse_payment(payment, reason=reason)
            books = "The payment is reversed in Wavu (its invoices re-open)."
        except NotAllowed as exc:
            if exc.code == "payment_already_reversed":
                books = "The payment was already reversed in Wavu."
            else:
                logger.error("mpesa reversal %s completed but the payment was not reversed: %s", request.pk, exc)
                books = f"M-Pesa reversed it, but Wavu could not reverse the payment ({exc.message}): correct by hand."
    else:
        books = f"KES {request.amount} paid to {mask_msisdn(request.phone)}."
    request.status = Status.COMPLETED
    request.result_code, request.result_desc = str(code)[:20], (desc or "")[:300]
    request.receipt = (receipt or "")[:20]
    request.result_parameters = _jsonable(params)
    shown = f" (receipt {receipt})" if receipt else ""
    request.outcome = f"Completed{shown}. {books}"[:400]
    request.settled_at, request.settled_by = clock.now(), by
    request.save()
    audit.record(request, AuditEvent.Action.UPDATE, before=before, verb=f"mpesa refund completed ({by})")


def _jsonable(params: dict) -> dict:
    return {str(k): (str(v) if isinstance(v, Decimal) else v) for k, v in (params or {}).items()}


def resolve_request(request: RefundRequest, *, outcome: str, reason, receipt: str = "") -> RefundRequest:
    """Staff settle an open request (pending or timed out) after checking the M-Pesa portal: outcome
    "completed" (a reversal then reverses the payment in Wavu) or "failed" (a B2C refund's credit comes
    back). A settled request is refused (RequestNotOpen, 409). Locks the request row. Audited."""
    reason = _clean_reason(reason)
    receipt = (receipt or "").strip().upper()
    if outcome not in (Status.COMPLETED, Status.FAILED):
        raise ValidationError({"outcome": ['outcome is "completed" or "failed".']})
    if receipt and not RECEIPT_RE.match(receipt):
        raise ValidationError({"receipt": [f"{receipt!r} is not an M-Pesa receipt number."]})
    with transaction.atomic():
        locked = RefundRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status not in OPEN:
            raise RequestNotOpen(f"Refund request {locked.pk} is already {locked.status}.")
        if outcome == Status.COMPLETED:
            _complete(locked, code="", desc=f"resolved by staff: {reason}", by="staff", receipt=receipt, params={})
        else:
            _fail(locked, code="", desc=f"resolved by staff: {reason}", by="staff", message=f"Marked failed: {reason}.")
    request.refresh_from_db()
    return request


# --- the result ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundResult:
    """A parsed `Result` of a B2C payment or a reversal (mpesa-daraja.md §1.10, §1.11)."""

    result_code: str
    result_desc: str
    originator_conversation_id: str
    conversation_id: str
    transaction_id: str
    parameters: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.result_code == "0"

    @property
    def receipt(self) -> str:
        """B2C: TransactionReceipt; reversal: the reversal's TransactionID."""
        value = self.parameters.get("TransactionReceipt") or self.transaction_id
        text = str(value or "").strip().upper()
        return text if RECEIPT_RE.match(text) else ""

    @property
    def amount(self) -> Decimal | None:
        """TransactionAmount (B2C) or Amount (reversal); None when not given. `parse_refund_result`
        refuses a result whose amount is given but is no amount as Daraja writes one."""
        value = self.parameters.get("TransactionAmount", self.parameters.get("Amount"))
        if value in (None, ""):
            return None
        return payloads.daraja_amount(value, field="TransactionAmount")

    @property
    def original_receipt(self) -> str:
        return str(self.parameters.get("OriginalTransactionID") or "").strip().upper()


def _items(value) -> list[dict]:
    """ResultParameters / ResultParameter as Daraja sends them: an object, an array, or an object
    holding either."""
    if isinstance(value, dict) and "ResultParameter" in value:
        value = value["ResultParameter"]
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _code_text(value) -> str:
    """A ResultCode as text, as Daraja wrote it: 0 or "0" is "0" (success); 0.0 or 0E+0 stays "0.0" /
    "0E+0", which is no success (Daraja writes integers; nothing else is read as one)."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, payloads.JsonNumber):
        return value.text[:20]
    return str(value).strip()[:20]


def parse_refund_result(body: bytes | str) -> RefundResult:
    """Read a B2C or Reversal `Result` (also the QueueTimeOut body). ResultCode may be a number or a
    string; ResultParameters may be missing, an object or an array; keys are read by name, a key
    without a Value is kept as None. Raises payloads.BadCallback when there is no Result object or no
    ConversationID / OriginatorConversationID to match it by, when a success's amount is given but is no
    amount as Daraja writes one (`payloads.daraja_amount`: "１００" or 1E+2 is not read as 100), or when
    the body holds text PostgreSQL cannot store (NUL: the parameters are kept in a JSON column)."""
    data = payloads.load_json_object(body)
    payloads.require_storable(data)
    result = data.get("Result")
    if not isinstance(result, dict):
        raise payloads.BadCallback("no_result", "the body has no Result object")
    ids = {}
    for name in ("OriginatorConversationID", "ConversationID", "TransactionID"):
        value = result.get(name)
        ids[name] = value.strip()[:64] if isinstance(value, str) else ("" if value is None else str(value)[:64])
    if not ids["OriginatorConversationID"] and not ids["ConversationID"]:
        raise payloads.BadCallback("missing_field", "the Result names no ConversationID or OriginatorConversationID")
    params = {}
    for item in _items(result.get("ResultParameters")):
        if "Key" in item:
            params[str(item["Key"])] = item.get("Value")
    parsed = RefundResult(
        result_code=_code_text(result.get("ResultCode")),
        result_desc=str(result.get("ResultDesc") or "")[:300],
        originator_conversation_id=ids["OriginatorConversationID"],
        conversation_id=ids["ConversationID"],
        transaction_id=ids["TransactionID"],
        parameters=params,
    )
    if parsed.success:  # only a success's amount is used (compared with the request's)
        try:
            parsed.amount  # noqa: B018 - checked here, so a bad amount is refused, never read as "not given"
        except ValidationError as exc:
            raise payloads.BadCallback("bad_amount", "; ".join(exc.messages), exc.message_dict) from None
    return parsed


def _find_request(kind: str, result: RefundResult) -> RefundRequest | None:
    """The LOCKED request a result is about: by ConversationID, by OriginatorConversationID, or (a
    reversal whose answer was not stored yet) the one open reversal of its OriginalTransactionID."""
    locked = RefundRequest.objects.select_for_update()
    if result.conversation_id:
        found = locked.filter(conversation_id=result.conversation_id).first()
        if found is not None:
            return found
    if result.originator_conversation_id:
        found = locked.filter(originator_conversation_id=result.originator_conversation_id).first()
        if found is not None:
            if not found.conversation_id and result.conversation_id:  # its answer was lost: learn it now
                found.conversation_id = result.conversation_id
                found.save(update_fields=["conversation_id"])
            return found
    if kind == Kind.REVERSAL and result.original_receipt:
        found = list(
            locked.filter(
                kind=Kind.REVERSAL, status__in=OPEN, original_receipt=result.original_receipt, conversation_id=None
            ).order_by("pk")[:2]
        )
        if len(found) == 1:
            request = found[0]
            request.conversation_id = result.conversation_id or None
            if not request.originator_conversation_id:
                request.originator_conversation_id = result.originator_conversation_id or None
            request.save(update_fields=["conversation_id", "originator_conversation_id"])
            return request
    return None


def _done(callback: InboundCallback, status: str, outcome: str, request: RefundRequest | None = None):
    callback.status = status
    callback.outcome = outcome[:300]
    callback.processed_at = clock.now()
    if request is not None and request.kind == Kind.REVERSAL and request.payment_id:
        callback.payment_id = request.payment_id
    callback.save(update_fields=["status", "outcome", "processed_at", "payment", "attempts", "reference"])
    return callback


def apply_refund_result(callback_id: int) -> InboundCallback | None:
    """Settle the request a stored B2C / Reversal result or timeout is about, exactly once.

    Idempotent and safe to run concurrently (on the same callback or on copies of one result): locks
    the callback row (only a "received" or "failed" one of these kinds is handled), then the request
    row; only an open request changes. Result 0 → completed (a reversal reverses the payment in Wavu);
    another code → failed with what staff should do (a B2C refund's credit comes back); a timeout →
    "timed_out" (books unchanged). A copy for a request already settled the same way is "duplicate";
    a result contradicting a settled request, or a success whose amount differs from the request, is
    "mismatch" (nothing applied, staff told). A result that matches no request (yet) is "failed" and
    retried by `services.retry_callbacks`. An unexpected error leaves the callback "failed".
    """
    try:
        with transaction.atomic():
            callback = InboundCallback.objects.select_for_update().filter(pk=callback_id).first()
            if callback is None or callback.kind not in REFUND_KINDS or callback.status not in (CB.RECEIVED, CB.FAILED):
                return callback
            return _apply(callback)
    except Exception as exc:  # noqa: BLE001 - recorded on the callback, retried by services.retry_callbacks
        logger.exception("M-Pesa refund callback %s could not be processed", callback_id)
        return mark_failed(callback_id, exc)


def _apply(callback: InboundCallback) -> InboundCallback:
    callback.attempts += 1
    timeout = callback.kind in TIMEOUT_KINDS
    kind = TIMEOUT_KINDS.get(callback.kind) or RESULT_KINDS[callback.kind]
    try:
        result = parse_refund_result(callback.body)
        if not timeout and not result.result_code:
            raise payloads.BadCallback("missing_field", "the Result has no ResultCode")
    except payloads.BadCallback as exc:
        return _done(callback, CB.REJECTED, exc.message)
    callback.reference = (result.receipt or result.conversation_id or result.originator_conversation_id)[:60]
    request = _find_request(kind, result)
    if request is None:
        callback.status = CB.FAILED
        callback.last_error = (
            f"no refund request with ConversationID {result.conversation_id or '-'} or OriginatorConversationID "
            f"{result.originator_conversation_id or '-'} (yet)"
        )
        callback.outcome = "no matching refund request yet; will be retried"
        callback.save(update_fields=["status", "last_error", "outcome", "attempts", "reference"])
        return callback
    if request.kind != kind:
        return _done(callback, CB.REJECTED, f"a {kind} result for {request.get_kind_display().lower()} {request.pk}")
    if request.channel_id != callback.channel_id:
        return _done(callback, CB.REJECTED, f"refund request {request.pk} belongs to another channel's hook")
    label = f"{request.get_kind_display()} request {request.pk}"
    if timeout:
        if request.status != Status.PENDING:
            return _done(callback, CB.DUPLICATE, f"{label} is already {request.status}; timeout ignored", request)
        before = audit.snapshot(request)
        request.status = Status.TIMED_OUT
        request.outcome = (
            "M-Pesa's queue timed out the request. Check the receipt in the M-Pesa portal, then resolve the request "
            "as completed or failed. Nothing changed in the books"
            + (" (the credit stays reserved)." if request.kind == Kind.B2C else ".")
        )
        request.save(update_fields=["status", "outcome"])
        audit.record(request, AuditEvent.Action.UPDATE, before=before, verb="mpesa refund timed out")
        return _done(callback, CB.PROCESSED, f"{label} timed out at M-Pesa; left for staff", request)
    if request.status not in OPEN:
        same = (request.status == Status.COMPLETED) == result.success
        if same:
            return _done(callback, CB.DUPLICATE, f"{label} is already {request.status}", request)
        note = (
            f"M-Pesa later reported {'success' if result.success else 'failure'} ({result.result_code} "
            f"{result.result_desc}; receipt {result.receipt or '-'}) for a request marked {request.status}: check and "
            "correct by hand."
        )
        RefundRequest.objects.filter(pk=request.pk).update(outcome=f"{request.outcome} {note}"[:400])
        logger.error("mpesa refund request %s: %s", request.pk, note)
        return _done(callback, CB.MISMATCH, note, request)
    if result.success:
        if result.amount is not None and result.amount != request.amount:
            note = f"M-Pesa reports KES {result.amount}, the request was for KES {request.amount}: check by hand."
            RefundRequest.objects.filter(pk=request.pk).update(outcome=note)
            return _done(callback, CB.MISMATCH, f"{label}: {note}", request)
        if not result.receipt:
            return _done(callback, CB.REJECTED, "a successful result without a receipt")
        _complete(
            request,
            code=result.result_code,
            desc=result.result_desc,
            by="result",
            receipt=result.receipt,
            params=result.parameters,
        )
    else:
        _fail(
            request,
            code=result.result_code,
            desc=result.result_desc,
            by="result",
            message=staff_message(result.result_code, result.result_desc),
        )
    return _done(callback, CB.PROCESSED, f"{label}: {request.status}", request)

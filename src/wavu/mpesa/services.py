"""M-Pesa hooks: keep every request Daraja sends, answer it, and turn C2B confirmations into payments.

A hook request goes through `receive_hook` (the views in `hooks.py` only resolve the token and read
the body): source address check, size and method checks, strict payload validation, then one
`InboundCallback` row in its own transaction. Nothing that reaches a valid token is thrown away:
refused requests are kept with status "rejected" and an outcome saying why.

C2B confirmations are acknowledged as soon as they are stored; `process_callback` (a job enqueued
when the row commits) then turns them into money through `payments.services.record_payment`, which
is unique on (method "mpesa", source = channel shortcode, reference = TransID): a receipt delivered
twice credits once (the second callback is "duplicate", linked to the first payment), and the same
TransID with another amount is "mismatch", flagged, nothing applied. A failed processing is
"failed" and retried by `retry_callbacks` (every minute), as is a callback still "received" a
minute after it arrived (the process died between storing and processing).

Locks: the callback row (SELECT … FOR UPDATE), then whatever `record_payment` locks (customer →
payments → invoices). Nothing locks a callback while holding a customer row, so this order is safe.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from wavu.core import clock
from wavu.core.tasks import enqueue_on_commit
from wavu.payments.services import FUTURE_TOLERANCE, DuplicateReferenceMismatch, clean_amount, record_payment

from . import selectors
from .models import InboundCallback, PaymentChannel

logger = logging.getLogger("wavu.mpesa")

Kind = InboundCallback.Kind
Status = InboundCallback.Status

# M-Pesa states TransTime in Kenyan time, whatever the ISP's TIME_ZONE.
MPESA_TIME_ZONE = zoneinfo.ZoneInfo("Africa/Nairobi")
STORED_ONLY = "stored: a Transaction Status query timed out at Safaricom; ask again"
DROPPED_HEADERS = {"cookie", "authorization", "proxy-authorization"}
MAX_HEADER_VALUE = 500
OVERSIZED_BODY_KEPT = 2048  # characters of an oversized body kept for the audit

ACCEPTED = {"ResultCode": "0", "ResultDesc": "Accepted"}  # C2B validation: strings, as Daraja documents
REJECT_UNKNOWN_ACCOUNT = {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
CONFIRMATION_ACK = {"ResultCode": 0, "ResultDesc": "Success"}
CALLBACK_ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}  # STK and Transaction Status


# --- request and answer --------------------------------------------------------------------------


@dataclass(frozen=True)
class HookRequest:
    """What a hook view read from the HTTP request (the body at most the size limit + 1 byte)."""

    method: str
    body: bytes
    headers: dict
    source_ip: str | None
    too_large: bool = False


@dataclass(frozen=True)
class HookAnswer:
    """What the view sends back: an HTTP status and a JSON body; `callback` is the stored row."""

    status: int
    body: dict
    callback: InboundCallback | None = None
    headers: dict = field(default_factory=dict)


class BadCallback(Exception):
    """A payload that cannot be processed; `code` is stable, `fields` names what is wrong."""

    def __init__(self, code: str, message: str, fields: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.fields = code, message, fields or {}


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    """The project's error format (interfaces.md): {"error": {"code", "message", "fields"}}."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def clean_headers(headers) -> dict:
    """The request's headers for the audit, without cookies and credentials, values capped in length."""
    return {
        str(name): str(value)[:MAX_HEADER_VALUE]
        for name, value in headers.items()
        if str(name).lower() not in DROPPED_HEADERS
    }


# --- C2B payload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class C2BNotice:
    """A C2B validation or confirmation, checked and typed. `msisdn` is opaque (masked or hashed)."""

    trans_id: str
    amount: Decimal
    trans_time: dt.datetime | None
    bill_ref: str
    msisdn: str
    payer_name: str
    shortcode: str
    transaction_type: str


_TRANS_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,59}$")
_TRANS_TIME_RE = re.compile(r"^\d{14}$")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def load_json_object(body: bytes | str) -> dict:
    """The body as a JSON object; numbers with a fraction become Decimal, never float.
    Raises BadCallback (malformed_json / not_an_object)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        data = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadCallback("malformed_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadCallback("not_an_object", "the body must be a JSON object")
    return data


def _text(data: dict, errors: dict, name: str, *, max_length: int, required: bool = False) -> str:
    value = data.get(name)
    if value is None:
        value = ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors[name] = [f"{name} must be text"]
        return ""
    value = str(value).strip()
    if required and not value:
        errors[name] = [f"{name} is required"]
    elif len(value) > max_length:
        errors[name] = [f"{name} is longer than {max_length} characters"]
    return value


def parse_trans_time(value: str) -> dt.datetime:
    """TransTime YYYYMMDDHHmmss (Kenyan time) as an aware datetime; ValueError when it is no date."""
    if not _TRANS_TIME_RE.match(value):
        raise ValueError("TransTime must be 14 digits, YYYYMMDDHHmmss")
    return dt.datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=MPESA_TIME_ZONE)


def parse_c2b(body: bytes | str, *, confirmation: bool = True) -> C2BNotice:
    """Check a C2B validation/confirmation payload (mpesa-daraja.md §1.6) and type it.

    Required: TransAmount (a positive amount with at most 2 decimals; text or a JSON number), and for
    a confirmation TransID (letters/digits) and TransTime (YYYYMMDDHHmmss). Optional text fields
    must be text when present. Raises BadCallback(code, message, fields) naming every bad field.
    """
    data = load_json_object(body)
    errors: dict = {}
    trans_id = _text(data, errors, "TransID", max_length=60, required=confirmation)
    if trans_id and "TransID" not in errors and not _TRANS_ID_RE.match(trans_id):
        errors["TransID"] = ["TransID must be letters and digits"]
    amount = None
    raw_amount = data.get("TransAmount")
    if raw_amount is None or raw_amount == "":
        errors["TransAmount"] = ["TransAmount is required"]
    elif isinstance(raw_amount, bool) or not isinstance(raw_amount, str | int | Decimal):
        errors["TransAmount"] = ['TransAmount must be an amount like "1500.00"']
    else:
        try:
            amount = clean_amount(raw_amount, field="TransAmount")
        except ValidationError as exc:
            errors.update(exc.message_dict)
    trans_time = None
    raw_time = _text(data, errors, "TransTime", max_length=14, required=confirmation)
    if raw_time and "TransTime" not in errors:
        try:
            trans_time = parse_trans_time(raw_time)
        except ValueError:
            errors["TransTime"] = [f"TransTime {raw_time!r} is not a date and time YYYYMMDDHHmmss"]
    bill_ref = _text(data, errors, "BillRefNumber", max_length=100)
    msisdn = _text(data, errors, "MSISDN", max_length=80)
    names = [_text(data, errors, name, max_length=80) for name in ("FirstName", "MiddleName", "LastName")]
    shortcode = _text(data, errors, "BusinessShortCode", max_length=20)
    transaction_type = _text(data, errors, "TransactionType", max_length=60)
    if errors:
        summary = "; ".join(message for messages in errors.values() for message in messages)
        raise BadCallback("invalid_payload", f"the payload was refused: {summary}", errors)
    return C2BNotice(
        trans_id=trans_id,
        amount=amount,
        trans_time=trans_time,
        bill_ref=bill_ref,
        msisdn=msisdn,
        payer_name=" ".join(n for n in names if n)[:160],
        shortcode=shortcode,
        transaction_type=transaction_type,
    )


def _reference_of(kind: str, body: bytes | str) -> str:
    """Best effort: the receipt / request id a stored body is about (TransID, CheckoutRequestID …)."""
    try:
        data = load_json_object(body)
    except BadCallback:
        return ""
    if kind in (Kind.C2B_VALIDATION, Kind.C2B_CONFIRMATION):
        value = data.get("TransID")
    elif kind == Kind.STK_CALLBACK:
        value = ((data.get("Body") or {}).get("stkCallback") or {}) if isinstance(data.get("Body"), dict) else {}
        value = value.get("CheckoutRequestID") if isinstance(value, dict) else None
    else:
        result = data.get("Result") if isinstance(data.get("Result"), dict) else {}
        value = result.get("TransactionID") or result.get("ConversationID")
    return value.strip()[:60] if isinstance(value, str) else ""


# --- storing -------------------------------------------------------------------------------------


def store_callback(
    channel: PaymentChannel,
    kind: str,
    request: HookRequest,
    *,
    source_allowed: bool = True,
    status: str = Status.RECEIVED,
    outcome: str = "",
) -> InboundCallback:
    """Keep one hook request (body, headers without cookies/credentials, source address, time) in its
    own transaction; a C2B confirmation or STK callback kept as "received" gets `process_callback`
    enqueued once the row commits. Not idempotent: every request is its own row (that is the audit trail)."""
    text = request.body.decode("utf-8", errors="replace")
    if request.too_large:
        text = text[:OVERSIZED_BODY_KEPT]
    with transaction.atomic():
        callback = InboundCallback.objects.create(
            channel=channel,
            kind=kind,
            received_at=clock.now(),
            source_ip=request.source_ip,
            source_allowed=source_allowed,
            headers=clean_headers(request.headers),
            body=text,
            status=status,
            outcome=outcome[:300],
            reference=_reference_of(kind, request.body) if not request.too_large else "",
            processed_at=clock.now() if status == Status.PROCESSED else None,
        )
        if kind in (Kind.C2B_CONFIRMATION, Kind.STK_CALLBACK, Kind.STATUS_RESULT) and status == Status.RECEIVED:
            from .tasks import process_callback

            enqueue_on_commit(process_callback, callback.pk)
    return callback


def receive_hook(channel: PaymentChannel, kind: str, request: HookRequest) -> HookAnswer:
    """Check, store and answer one hook request for `channel` (the token was already resolved).

    In order: a body over HOOK_MAX_BODY_BYTES → 413; a method other than POST → 405; a source address
    off the allowlist → 403 when the channel enforces it (with log_only the request goes on, flagged
    source_allowed=False); an invalid payload → 400. Each of these is kept with status "rejected" and
    the reason in `outcome`, and never becomes a payment. Then, by kind:
    - C2B validation: the cheap account match decides: accepted, or C2B00012 when the channel
      rejects unknown accounts and nobody matches; kept with the decision;
    - C2B confirmation: kept as "received", acknowledged; processing follows after commit;
    - STK callback, Transaction Status result/timeout: kept as "received" (processing comes with STK
      and status support) and acknowledged.
    """
    allowed = True
    if channel.allowlist_mode != PaymentChannel.Allowlist.OFF:
        allowed = selectors.source_on_allowlist(channel, request.source_ip)

    def refuse(http_status: int, code: str, message: str, fields: dict | None = None, headers=None) -> HookAnswer:
        callback = store_callback(
            channel, kind, request, source_allowed=allowed, status=Status.REJECTED, outcome=f"{http_status}: {message}"
        )
        return HookAnswer(http_status, error_body(code, message, fields), callback, headers or {})

    if request.too_large:
        limit = selectors.hook_setting("HOOK_MAX_BODY_BYTES")
        return refuse(413, "body_too_large", f"the body is larger than {limit} bytes")
    if request.method != "POST":
        return refuse(
            405, "method_not_allowed", f"{request.method} is not allowed; use POST", headers={"Allow": "POST"}
        )
    if not allowed and channel.allowlist_mode == PaymentChannel.Allowlist.ENFORCE:
        return refuse(403, "source_not_allowed", f"source address {request.source_ip} is not on the allowlist")

    if kind in (Kind.C2B_VALIDATION, Kind.C2B_CONFIRMATION):
        try:
            notice = parse_c2b(request.body, confirmation=kind == Kind.C2B_CONFIRMATION)
        except BadCallback as exc:
            return refuse(400, exc.code, exc.message, exc.fields)
    else:
        try:
            load_json_object(request.body)
        except BadCallback as exc:
            return refuse(400, exc.code, exc.message, exc.fields)

    flag = "" if allowed else f"source address {request.source_ip} is not on the allowlist (logged only); "
    if kind == Kind.C2B_VALIDATION:
        match = selectors.match_account_reference(notice.bill_ref)
        if match.customer is None and channel.validation == PaymentChannel.Validation.REJECT_UNKNOWN:
            answer, outcome = REJECT_UNKNOWN_ACCOUNT, f"rejected C2B00012: {match.detail}"
        else:
            answer = ACCEPTED
            outcome = f"accepted: {match.detail}" + (f" ({match.customer.account_number})" if match.customer else "")
        callback = store_callback(
            channel, kind, request, source_allowed=allowed, status=Status.PROCESSED, outcome=flag + outcome
        )
        return HookAnswer(200, answer, callback)
    if kind == Kind.C2B_CONFIRMATION:
        callback = store_callback(channel, kind, request, source_allowed=allowed, outcome=flag.rstrip("; "))
        return HookAnswer(200, CONFIRMATION_ACK, callback)
    if kind in (Kind.STK_CALLBACK, Kind.STATUS_RESULT):  # processed after commit (`process_callback`)
        callback = store_callback(channel, kind, request, source_allowed=allowed, outcome=flag.rstrip("; "))
        return HookAnswer(200, CALLBACK_ACK, callback)
    callback = store_callback(channel, kind, request, source_allowed=allowed, outcome=flag + STORED_ONLY)
    return HookAnswer(200, CALLBACK_ACK, callback)


# --- processing ----------------------------------------------------------------------------------


def process_callback(callback_id: int) -> InboundCallback | None:
    """Process one stored callback by kind: C2B confirmations here, STK callbacks in `stk`,
    Transaction Status results in `reconciliation` (a completed receipt Wavu did not have becomes a
    payment in suspense); timeouts stay stored for staff. Idempotent."""
    kind = InboundCallback.objects.filter(pk=callback_id).values_list("kind", flat=True).first()
    if kind == Kind.C2B_CONFIRMATION:
        return process_c2b_confirmation(callback_id)
    if kind == Kind.STK_CALLBACK:
        from .stk import process_stk_callback

        return process_stk_callback(callback_id)
    if kind == Kind.STATUS_RESULT:
        from .reconciliation import apply_status_result

        return apply_status_result(callback_id)
    return InboundCallback.objects.filter(pk=callback_id).first()


def process_c2b_confirmation(callback_id: int) -> InboundCallback | None:
    """Turn a stored C2B confirmation into a payment, exactly once.

    Idempotent, and safe to run concurrently: the callback row is locked (SELECT … FOR UPDATE) and
    only a callback still "received" or "failed" is processed; any other status is returned as it is.
    In one transaction: match BillRefNumber (`selectors.match_account_reference`; the MSISDN is
    never used), then `record_payment(method="mpesa", source=<channel shortcode>, reference=TransID,
    …)` with customer None (suspense) when nobody matches; allocation, the ledger entry and the
    after-payment job (reconnection) come from record_payment. Outcomes: processed (a new payment),
    duplicate (the receipt was already recorded: linked to that payment, nothing applied again),
    mismatch (same TransID, another amount: flagged, nothing applied), rejected (a payload that can
    never be processed). Each run counts in `attempts`. Any other error rolls the attempt back and
    leaves the callback "failed" with `last_error`, for `retry_callbacks`.
    """
    try:
        with transaction.atomic():
            callback = InboundCallback.objects.select_for_update().filter(pk=callback_id).first()
            if (
                callback is None
                or callback.kind != Kind.C2B_CONFIRMATION
                or callback.status not in (Status.RECEIVED, Status.FAILED)
            ):
                return callback
            return _apply_confirmation(callback)
    except Exception as exc:  # noqa: BLE001 - the failure is recorded on the callback and retried
        logger.exception("C2B confirmation %s could not be processed", callback_id)
        return _mark_failed(callback_id, exc)


def _finish(callback: InboundCallback, status: str, outcome: str, payment=None) -> InboundCallback:
    callback.status = status
    callback.outcome = outcome[:300]
    callback.payment = payment
    callback.processed_at = clock.now()
    callback.save(update_fields=["status", "outcome", "payment", "processed_at", "attempts"])
    return callback


def _apply_confirmation(callback: InboundCallback) -> InboundCallback:
    callback.attempts += 1
    try:
        notice = parse_c2b(callback.body)
    except BadCallback as exc:
        return _finish(callback, Status.REJECTED, exc.message)
    channel = callback.channel
    notes = []
    if not callback.source_allowed:
        notes.append("source address not on the allowlist (logged only)")
    if notice.shortcode and notice.shortcode not in (channel.shortcode, channel.till_number):
        notes.append(f"BusinessShortCode {notice.shortcode} is not this channel's")
    received_at = notice.trans_time
    if received_at > clock.now() + FUTURE_TOLERANCE:
        notes.append(f"TransTime {received_at:%Y-%m-%d %H:%M} is in the future; recorded at the time of receipt")
        received_at = callback.received_at
    match = selectors.match_account_reference(notice.bill_ref)
    try:
        payment, created = record_payment(
            method="mpesa",
            source=channel.shortcode,
            reference=notice.trans_id,
            amount=notice.amount,
            customer=match.customer,
            received_at=received_at,
            payer_name=notice.payer_name,
            payer_phone=notice.msisdn,
            account_reference=notice.bill_ref[:60],
        )
    except DuplicateReferenceMismatch as exc:
        return _finish(callback, Status.MISMATCH, exc.message)
    except ValidationError as exc:
        return _finish(callback, Status.REJECTED, "; ".join(exc.messages))
    suffix = "".join(f"; {note}" for note in notes)
    if not created:
        return _finish(
            callback,
            Status.DUPLICATE,
            f"already processed: receipt {notice.trans_id} is payment {payment.pk}{suffix}",
            payment,
        )
    if match.customer is None:
        outcome = f"in suspense: {match.detail} ({notice.bill_ref or 'blank'})"
    else:
        outcome = f"credited to {match.customer.account_number}, matched by {match.detail}"
    return _finish(callback, Status.PROCESSED, outcome + suffix, payment)


def _mark_failed(callback_id: int, exc: BaseException) -> InboundCallback | None:
    with transaction.atomic():
        callback = InboundCallback.objects.select_for_update().filter(pk=callback_id).first()
        if callback is None or callback.status not in (Status.RECEIVED, Status.FAILED):
            return callback
        callback.status = Status.FAILED
        callback.attempts += 1
        callback.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        callback.outcome = f"processing failed (attempt {callback.attempts}); will be retried"
        callback.save(update_fields=["status", "attempts", "last_error", "outcome"])
    return callback


@dataclass
class RetrySummary:
    """What one `retry_callbacks` run did: callback ids by the status they ended in."""

    picked: int = 0
    by_status: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"picked": self.picked, **{status: len(ids) for status, ids in self.by_status.items()}}


def retry_callbacks(now: dt.datetime | None = None, *, limit: int = 200) -> RetrySummary:
    """Process again the C2B confirmations that failed (with back-off) or got stuck in "received"
    (`selectors.callbacks_to_retry`), each in its own transaction. Idempotent: running it twice, or
    alongside the queued jobs, applies each receipt once (the row lock and status check of
    `process_c2b_confirmation`, and the payment's unique receipt)."""
    summary = RetrySummary()
    for callback_id in selectors.callbacks_to_retry(now, limit=limit):
        summary.picked += 1
        callback = process_c2b_confirmation(callback_id)
        status = callback.status if callback is not None else "missing"
        summary.by_status.setdefault(status, []).append(callback_id)
    if summary.picked:
        logger.info("retried %d stored C2B confirmations: %s", summary.picked, summary.as_dict())
    return summary

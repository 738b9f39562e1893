"""M-Pesa hooks: keep every request Daraja sends, answer it, and turn C2B confirmations into payments.

A hook request goes through `receive_hook` (the views in `hooks.py` only resolve the token and read
the body): source address check, size and method checks, strict payload validation, then one
`InboundCallback` row, committed before the answer. Nothing that reaches a valid token is thrown
away: refused requests are kept with status "rejected" and an outcome saying why.

The store is the queue. C2B confirmations are acknowledged as soon as they are stored; every
`wavu worker` drains the store (`drain_callbacks`, listed in `wavu.schedule.DRAINS`) and turns them
into money in batches (`process_confirmations` → `payments.bulk.record_payments`), unique on
(method "mpesa", source = channel shortcode, reference = TransID): a receipt delivered twice
credits once (the second callback is "duplicate", linked to the first payment), and the same
TransID with another amount is "mismatch", flagged, nothing applied. A worker killed mid-batch
commits nothing, so the next drain takes the same callbacks again. A failed processing is "failed"
and retried by `retry_callbacks` (every minute, with back-off), which also takes a callback still
"received" a minute after it arrived (no worker running).

Locks: the callback rows (SELECT … FOR UPDATE, SKIP LOCKED when draining), then the customers'
money lock and their invoices (`record_payments`). Nothing locks a callback while holding a customer
row, so this order is safe.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from wavu.core import audit, clock
from wavu.core.db import insert_rows, update_rows
from wavu.core.models import AuditEvent
from wavu.core.tasks import enqueue_on_commit
from wavu.payments.services import FUTURE_TOLERANCE

from . import reconciliation, refunds, selectors, stk
from .callbacks import REFUND_KINDS, mark_failed
from .models import InboundCallback, PaymentChannel
from .payloads import (  # noqa: F401 (MPESA_TIME_ZONE: re-exported)
    MPESA_TIME_ZONE,
    RECEIPT_NUMBER,
    BadCallback,
    clean_name,
    daraja_amount,
    daraja_time,
    has_control_characters,
    load_json_object,
    require_storable,
    storable,
    storable_body,
)

logger = logging.getLogger("wavu.mpesa")

Kind = InboundCallback.Kind
Status = InboundCallback.Status

STORED_ONLY = "stored: a Transaction Status query timed out at Safaricom; ask again"
DROPPED_HEADERS = {"cookie", "authorization", "proxy-authorization"}
MAX_HEADER_VALUE = 500
OVERSIZED_BODY_KEPT = 2048  # characters of an oversized body kept for the audit

ACCEPTED = {"ResultCode": "0", "ResultDesc": "Accepted"}  # C2B validation: strings, as Daraja documents
REJECT_UNKNOWN_ACCOUNT = {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
CONFIRMATION_ACK = {"ResultCode": 0, "ResultDesc": "Success"}
CALLBACK_ACK = {"ResultCode": 0, "ResultDesc": "Accepted"}  # STK, Transaction Status, B2C and Reversal


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


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    """The project's error format (interfaces.md): {"error": {"code", "message", "fields"}}."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def clean_headers(headers) -> dict:
    """The request's headers for the audit, without cookies and credentials, values capped in length
    (NUL and lone surrogates escaped: a JSON column takes neither)."""
    return {
        storable(str(name)): storable(str(value)[:MAX_HEADER_VALUE])
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


def _text(data: dict, errors: dict, name: str, *, max_length: int, required: bool = False, person=False) -> str:
    """Field `name` as text. A person's name loses its control characters (`payloads.clean_name`);
    any other field holding one (NUL, escape, a lone surrogate …) is an error: Daraja sends none, and
    guessing what an identifier meant could credit the wrong account."""
    value = data.get(name)
    if value is None:
        value = ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors[name] = [f"{name} must be text"]
        return ""
    value = str(value).strip()
    if person:
        value = clean_name(value)
    elif has_control_characters(value):
        errors[name] = [f"{name} holds a control character (such as NUL), which Daraja never sends"]
        return ""
    if required and not value:
        errors[name] = [f"{name} is required"]
    elif len(value) > max_length:
        errors[name] = [f"{name} is longer than {max_length} characters"]
    return value


def parse_c2b(body: bytes | str, *, confirmation: bool = True) -> C2BNotice:
    """Check a C2B validation/confirmation payload (mpesa-daraja.md §1.6) and type it.

    Required: TransAmount (`payloads.daraja_amount`: a positive amount with at most 2 decimals in
    ASCII digits, text or a JSON number, no exponent), and for a confirmation TransID (letters/digits)
    and TransTime (YYYYMMDDHHmmss, a plausible date: `payloads.daraja_time`; also checked in a
    validation that names one). Optional text fields must be text when present. The payer's names
    lose control characters (NUL, escapes …); BillRefNumber, MSISDN, BusinessShortCode and
    TransactionType holding one are refused. Raises BadCallback(code, message, fields) naming every
    bad field.
    """
    data = load_json_object(body)
    errors: dict = {}
    trans_id = _text(data, errors, "TransID", max_length=60, required=confirmation)
    if trans_id and "TransID" not in errors and not RECEIPT_NUMBER.match(trans_id):
        errors["TransID"] = ["TransID must be letters and digits"]
    amount = None
    try:
        amount = daraja_amount(data.get("TransAmount"), field="TransAmount")
    except ValidationError as exc:
        errors.update(exc.message_dict)
    trans_time = None
    raw_time = _text(data, errors, "TransTime", max_length=14, required=confirmation)
    if raw_time and "TransTime" not in errors:
        try:
            trans_time = daraja_time(raw_time, field="TransTime")
        except ValueError as exc:
            errors["TransTime"] = [str(exc)]
    bill_ref = _text(data, errors, "BillRefNumber", max_length=100)
    msisdn = _text(data, errors, "MSISDN", max_length=80)
    names = [_text(data, errors, name, max_length=80, person=True) for name in ("FirstName", "MiddleName", "LastName")]
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
    return storable(value.strip())[:60] if isinstance(value, str) else ""


# --- storing -------------------------------------------------------------------------------------


_CALLBACK_FIELDS = [
    "channel_id", "kind", "received_at", "source_ip", "source_allowed", "headers", "body", "status", "outcome",
    "reference", "attempts", "last_error", "processed_at", "resolution",
]  # fmt: skip


def store_callback(
    channel: PaymentChannel,
    kind: str,
    request: HookRequest,
    *,
    source_allowed: bool = True,
    status: str = Status.RECEIVED,
    outcome: str = "",
    reference: str | None = None,
) -> InboundCallback:
    """Keep one hook request (body, headers without cookies/credentials, source address, time): one
    INSERT, committed before the hook answers. A callback kept as "received" whose kind is in
    `DRAINED_KINDS` is the worker's to process (`drain_callbacks`): the store is the queue, so no
    job record is written per request. `reference` (TransID, CheckoutRequestID …) is read from the
    body when not given. Not idempotent: every request is its own row (the audit trail).

    Any body can be kept: one that is not UTF-8 or holds NUL bytes is kept in a faithful escaped form
    (`payloads.storable_body`; such a body is never valid JSON, so it was refused)."""
    text = storable_body(request.body)
    if request.too_large:
        text, reference = text[:OVERSIZED_BODY_KEPT], ""
    elif reference is None:
        reference = _reference_of(kind, request.body)
    now = clock.now()
    values = (
        channel.pk, kind, now, request.source_ip, source_allowed, clean_headers(request.headers), text, status,
        storable(outcome)[:300], storable(reference)[:60], 0, "", now if status == Status.PROCESSED else None, "",
    )  # fmt: skip
    # insert_rows rather than objects.create: this is the hook's whole cost, paid on every request
    [pk] = insert_rows(InboundCallback, _CALLBACK_FIELDS, [values], returning=True)
    return InboundCallback(pk, **dict(zip(_CALLBACK_FIELDS, values, strict=True)))


def receive_hook(channel: PaymentChannel, kind: str, request: HookRequest) -> HookAnswer:
    """Check, store and answer one hook request for `channel` (the token was already resolved).

    In order: a body over HOOK_MAX_BODY_BYTES → 413; a method other than POST → 405; a source address
    off the allowlist → 403 when the channel enforces it (with log_only the request goes on, flagged
    source_allowed=False); an invalid payload → 400: a C2B request checked field by field
    (`parse_c2b`), any other kind when it is not a JSON object (`payloads.load_json_object`) or holds
    text PostgreSQL cannot store (`payloads.require_storable`), so what is acknowledged can be
    processed. Each of these is kept with status "rejected" and the reason in `outcome`, and never
    becomes a payment. Then, by kind:
    - C2B validation: the cheap account match decides: accepted, or C2B00012 when the channel
      rejects unknown accounts and nobody matches; kept with the decision;
    - C2B confirmation: kept as "received", acknowledged; processing follows after commit;
    - STK callback, Transaction Status result, B2C and Reversal result/timeout: kept as "received"
      (processed later by `process_callback`) and acknowledged; a Transaction Status timeout is kept
      for staff.
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
            require_storable(load_json_object(request.body))
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
        callback = store_callback(
            channel, kind, request, source_allowed=allowed, outcome=flag.rstrip("; "), reference=notice.trans_id
        )
        return HookAnswer(200, CONFIRMATION_ACK, callback)
    if kind in (Kind.STK_CALLBACK, Kind.STATUS_RESULT, *REFUND_KINDS):  # processed later (`process_callback`)
        callback = store_callback(channel, kind, request, source_allowed=allowed, outcome=flag.rstrip("; "))
        return HookAnswer(200, CALLBACK_ACK, callback)
    callback = store_callback(channel, kind, request, source_allowed=allowed, outcome=flag + STORED_ONLY)
    return HookAnswer(200, CALLBACK_ACK, callback)


# --- processing ----------------------------------------------------------------------------------


def process_callback(callback_id: int) -> InboundCallback | None:
    """Process one stored callback by kind: C2B confirmations here, STK callbacks in `stk`,
    Transaction Status results in `reconciliation` (a completed receipt Wavu did not have becomes a
    payment in suspense), B2C and Reversal results and timeouts in `refunds`; Transaction Status
    timeouts stay stored for staff. Idempotent."""
    kind = InboundCallback.objects.filter(pk=callback_id).values_list("kind", flat=True).first()
    if kind == Kind.C2B_CONFIRMATION:
        return process_c2b_confirmation(callback_id)
    if kind == Kind.STK_CALLBACK:
        return stk.process_stk_callback(callback_id)
    if kind == Kind.STATUS_RESULT:
        return reconciliation.apply_status_result(callback_id)
    if kind in REFUND_KINDS:
        return refunds.apply_refund_result(callback_id)
    return InboundCallback.objects.filter(pk=callback_id).first()


# Kinds the worker processes as soon as they are stored: C2B confirmations in batches, the others
# one by one through `process_callback`.
DRAINED_KINDS = (Kind.C2B_CONFIRMATION, Kind.STK_CALLBACK, Kind.STATUS_RESULT, *REFUND_KINDS)
DRAIN_BATCH = 500


def drain_callbacks(*, limit: int = DRAIN_BATCH) -> int:
    """Process stored callbacks still waiting ("received"), oldest first; returns how many were taken.

    Run by every `wavu worker` in a loop (`core.tasks.Drainer`) and by `run_queued_tasks` in tests.
    C2B confirmations go in batches of up to `limit` (`process_confirmations`: a fixed number of
    statements per batch, which is what lets one worker keep up with hundreds of payments a second);
    other kinds one by one, each at most once per drain. Several workers can drain side by side: a
    batch claims its rows with SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite serialises
    writers), and every step re-checks the status under the lock.
    """
    if not InboundCallback.objects.filter(status=Status.RECEIVED, kind__in=DRAINED_KINDS).exists():
        return 0  # a read, not a write transaction: on SQLite an idle drain must not take the write lock
    taken = process_confirmations(limit=limit)
    others = list(
        InboundCallback.objects.filter(status=Status.RECEIVED, attempts=0, kind__in=DRAINED_KINDS)
        .exclude(kind=Kind.C2B_CONFIRMATION)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    for callback_id in others:
        process_callback(callback_id)
    return taken + len(others)


def process_c2b_confirmation(callback_id: int) -> InboundCallback | None:
    """Turn one stored C2B confirmation into a payment, exactly once (`process_confirmations` for
    this callback only). Returns the callback as it ended, or as it was when it was not "received"
    or "failed" (already settled), or None when there is no such callback."""
    process_confirmations(ids=[callback_id])
    return InboundCallback.objects.filter(pk=callback_id).first()


def process_confirmations(*, limit: int = DRAIN_BATCH, ids: list[int] | None = None) -> int:
    """Turn stored C2B confirmations into payments, exactly once each; returns how many were taken.

    Takes the given `ids`, or up to `limit` waiting ("received") confirmations, oldest first, locked
    (FOR UPDATE SKIP LOCKED): only a confirmation still "received" or "failed" is processed. In one
    transaction: parse each body, match every BillRefNumber (`selectors.match_account_references`;
    the MSISDN is never used), record the receipts with `payments.bulk.record_payments` (method
    "mpesa", source = channel shortcode, reference = TransID; customer None → suspense; allocation
    and the ledger entries come with it), mark each callback, and enqueue the after-payment job
    (reconnection, prepaid renewal) for the customers who have something it could change.

    Outcomes: processed (a new payment), duplicate (the receipt was already recorded: linked to that
    payment, nothing applied again), mismatch (same TransID, another amount: flagged, nothing
    applied), rejected (a body that can never be processed). Each run counts in `attempts`. When a
    batch fails as a whole it is rolled back and its callbacks are taken one by one, so one bad
    callback ends "failed" (with `last_error`, retried by `retry_callbacks`) and the rest go through.
    """
    claimed: list[int] = []
    try:
        with transaction.atomic():
            callbacks = _claim_confirmations(limit=limit, ids=ids)
            claimed = [callback.pk for callback in callbacks]
            if callbacks:
                _apply_confirmations(callbacks)
        return len(claimed)
    except Exception as exc:  # noqa: BLE001 - recorded on the callback(s) and retried
        if len(claimed) > 1:
            logger.warning("a batch of %d C2B confirmations failed (%s); taking them one by one", len(claimed), exc)
            for callback_id in claimed:
                process_confirmations(ids=[callback_id])
            return len(claimed)
        target = claimed or ids or []
        if not target:
            raise
        logger.exception("C2B confirmation %s could not be processed", target[0])
        mark_failed(target[0], exc)
        return 1


def _claim_confirmations(*, limit: int, ids: list[int] | None) -> list[InboundCallback]:
    waiting = InboundCallback.objects.filter(kind=Kind.C2B_CONFIRMATION)
    if ids is not None:
        waiting = waiting.filter(pk__in=ids, status__in=(Status.RECEIVED, Status.FAILED))
    else:
        waiting = waiting.filter(status=Status.RECEIVED)
    return list(
        waiting.select_related("channel")
        .select_for_update(skip_locked=ids is None, of=("self",))
        .order_by("pk")[: limit if ids is None else len(ids)]
    )


def _apply_confirmations(callbacks: list[InboundCallback]) -> None:
    from wavu.billing.selectors import customers_with_payment_followup
    from wavu.billing.tasks import after_payment
    from wavu.payments.bulk import Receipt, record_payments

    now = clock.now()
    finished: dict[int, tuple[str, str, int | None]] = {}  # callback pk → (status, outcome, payment id)
    parsed: list[tuple[InboundCallback, C2BNotice, list[str]]] = []
    for callback in callbacks:
        callback.attempts += 1
        try:
            notice = parse_c2b(callback.body)
        except BadCallback as exc:
            finished[callback.pk] = (Status.REJECTED, exc.message, None)
            continue
        parsed.append((callback, notice, _confirmation_notes(callback, notice)))
    matches = selectors.match_account_references(notice.bill_ref for _, notice, _ in parsed)
    receipts = []
    for callback, notice, notes in parsed:
        received_at = notice.trans_time
        if received_at > now + FUTURE_TOLERANCE:
            notes.append(f"TransTime {received_at:%Y-%m-%d %H:%M} is in the future; recorded at the time of receipt")
            received_at = callback.received_at
        receipts.append(
            Receipt(
                method="mpesa",
                source=callback.channel.shortcode,
                reference=notice.trans_id,
                amount=notice.amount,
                customer_id=getattr(matches[notice.bill_ref].customer, "pk", None),
                received_at=received_at,
                payer_name=notice.payer_name,
                payer_phone=notice.msisdn,
                account_reference=notice.bill_ref[:60],
            )
        )
    credited: set[int] = set()
    for (callback, notice, notes), receipt, result in zip(parsed, receipts, record_payments(receipts), strict=True):
        suffix = "".join(f"; {note}" for note in notes)
        match = matches[notice.bill_ref]
        if result.outcome == "rejected":
            finished[callback.pk] = (Status.REJECTED, result.message, None)
        elif result.outcome == "mismatch":
            finished[callback.pk] = (Status.MISMATCH, result.message, None)
        elif result.outcome == "duplicate":
            outcome = f"already processed: receipt {notice.trans_id} is payment {result.payment_id}{suffix}"
            finished[callback.pk] = (Status.DUPLICATE, outcome, result.payment_id)
        elif match.customer is None:
            outcome = f"in suspense: {match.detail} ({notice.bill_ref or 'blank'})"
            finished[callback.pk] = (Status.PROCESSED, outcome + suffix, result.payment_id)
        else:
            outcome = f"credited to {match.customer.account_number}, matched by {match.detail}"
            finished[callback.pk] = (Status.PROCESSED, outcome + suffix, result.payment_id)
            credited.add(receipt.customer_id)
    update_rows(
        InboundCallback,
        ["status", "outcome", "payment_id", "processed_at", "attempts"],
        [(*finished[c.pk][:2], finished[c.pk][2], now, c.attempts, c.pk) for c in callbacks],
    )
    if credited:
        for customer_id in sorted(customers_with_payment_followup(credited)):
            enqueue_on_commit(after_payment, customer_id)


def _confirmation_notes(callback: InboundCallback, notice: C2BNotice) -> list[str]:
    """What staff should know about a confirmation that is applied anyway."""
    notes = []
    if not callback.source_allowed:
        notes.append("source address not on the allowlist (logged only)")
    channel = callback.channel
    if notice.shortcode and notice.shortcode not in (channel.shortcode, channel.till_number):
        notes.append(f"BusinessShortCode {notice.shortcode} is not this channel's")
    return notes


def process_again(callback_ids) -> list[InboundCallback]:
    """Process the given stored callbacks again now, whatever their attempts, when they are "failed"
    and not marked dealt with (e.g. after a fix, for those whose retries ran out); others are skipped.
    Each goes through `process_callback` (row locks and the receipt's unique payment: a receipt pays
    once). Returns the callbacks processed, as they ended."""
    ids = InboundCallback.objects.filter(
        pk__in=list(callback_ids), status=Status.FAILED, kind__in=DRAINED_KINDS, resolved_at__isnull=True
    ).order_by("pk")
    done = []
    for callback_id in ids.values_list("pk", flat=True):
        callback = process_callback(callback_id)
        if callback is not None:
            done.append(callback)
    return done


def resolve_callbacks(callback_ids, *, note: str) -> list[InboundCallback]:
    """Mark stored callbacks that need action (`selectors.callbacks_needing_action`) as dealt with, with
    `note` (what staff did: "recorded by hand as payment 812", "not ours: a test from the vendor"),
    so they leave the list and the /healthz count. Only the record of the callback changes
    (`resolved_at`, `resolution` = who and the note); the stored request, its status and outcome stay
    as evidence, and a resolved callback is never retried. Callbacks not needing action are skipped.
    Audited ("mpesa callback resolved"); locks the callback rows, in id order. Returns those marked.
    Raises ValidationError({"note": …}) without a note (1–250 characters)."""
    text = (note or "").strip()
    if not text or len(text) > 250:
        raise ValidationError({"note": ["Say what was done about it (at most 250 characters)."]})
    resolved = []
    with transaction.atomic():
        callbacks = (
            selectors.callbacks_needing_action().filter(pk__in=list(callback_ids)).select_for_update().order_by("pk")
        )
        for callback in callbacks:
            before = audit.snapshot(callback)
            callback.resolved_at = clock.now()
            callback.resolution = storable(f"{audit.current_actor().label[:45]}: {text}")[:300]
            callback.save(update_fields=["resolved_at", "resolution"])
            audit.record(callback, AuditEvent.Action.UPDATE, before=before, verb="mpesa callback resolved", reason=text)
            resolved.append(callback)
    return resolved


@dataclass
class RetrySummary:
    """What one `retry_callbacks` run did: callback ids by the status they ended in."""

    picked: int = 0
    by_status: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"picked": self.picked, **{status: len(ids) for status, ids in self.by_status.items()}}


def retry_callbacks(now: dt.datetime | None = None, *, limit: int = 200) -> RetrySummary:
    """Process again the stored callbacks (every kind in DRAINED_KINDS: C2B confirmations, STK,
    Transaction Status and refund results) that failed, with back-off, or that are still "received"
    a minute after they arrived (`selectors.callbacks_to_retry`), each through `process_callback`.
    Idempotent: running it twice, or alongside the workers' drains, applies each result once (row
    locks and status checks, and the unique receipt or request it settles)."""
    summary = RetrySummary()
    for callback_id in selectors.callbacks_to_retry(now, kinds=DRAINED_KINDS, limit=limit):
        summary.picked += 1
        callback = process_callback(callback_id)
        status = callback.status if callback is not None else "missing"
        summary.by_status.setdefault(status, []).append(callback_id)
    if summary.picked:
        logger.info("retried %d stored callbacks: %s", summary.picked, summary.as_dict())
    return summary

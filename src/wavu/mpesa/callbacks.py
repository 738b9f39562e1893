"""How the processing of a stored callback ends: the one home of the status moves every processor
shares (C2B confirmations in `services`, STK callbacks in `stk`, Transaction Status results in
`reconciliation`, B2C and Reversal results in `refunds`). Nothing here reads a payload."""

from __future__ import annotations

from django.db import transaction

from wavu.core import clock

from .models import InboundCallback
from .payloads import storable

Kind = InboundCallback.Kind
Status = InboundCallback.Status

# B2C and Reversal results and timeouts: processed by `refunds.apply_refund_result`.
REFUND_KINDS = (Kind.B2C_RESULT, Kind.B2C_TIMEOUT, Kind.REVERSAL_RESULT, Kind.REVERSAL_TIMEOUT)


def finish(callback: InboundCallback, status: str, outcome: str, payment=None) -> InboundCallback:
    """Record how processing ended on a callback the caller holds locked (its `attempts` already
    counted): the final status, the outcome (made storable, at most 300 characters), the payment it
    led to, and when."""
    callback.status = status
    callback.outcome = storable(outcome)[:300]
    callback.payment = payment
    callback.processed_at = clock.now()
    callback.save(update_fields=["status", "outcome", "payment", "processed_at", "attempts"])
    return callback


def mark_failed(callback_id: int, exc: BaseException) -> InboundCallback | None:
    """Count a failed processing of a callback still "received" or "failed", in its own transaction:
    status "failed", the error kept for staff, retried later by `services.retry_callbacks`. A
    callback that ended meanwhile (or does not exist) is left as it is and returned."""
    with transaction.atomic():
        callback = InboundCallback.objects.select_for_update().filter(pk=callback_id).first()
        if callback is None or callback.status not in (Status.RECEIVED, Status.FAILED):
            return callback
        callback.status = Status.FAILED
        callback.attempts += 1
        callback.last_error = storable(f"{type(exc).__name__}: {exc}")[:2000]
        callback.outcome = f"processing failed (attempt {callback.attempts}); will be retried"
        callback.save(update_fields=["status", "attempts", "last_error", "outcome"])
    return callback

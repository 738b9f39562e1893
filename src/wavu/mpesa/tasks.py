"""M-Pesa background jobs: thin wrappers over `wavu.mpesa.services` (periodic ones: `wavu/schedule.py`).

All are idempotent: a callback is processed under its row lock and only while it is still
"received" or "failed", and a receipt is one payment whatever happens (unique on the payment).
"""

from __future__ import annotations

from wavu.core.tasks import task

from . import services, stk


@task(name="process-callback", max_attempts=3)
def process_callback(callback_id: int) -> str:
    """Process one stored hook request. Hooks no longer enqueue this (the worker's drain takes stored
    callbacks, see `services.drain_callbacks`); it stays so jobs queued by an older version still run,
    and for scripts that want one callback processed now. A processing failure is recorded on the callback
    ("failed") and picked up by `retry_callbacks`; the job retries only when even that could not be
    written (e.g. the database was away)."""
    callback = services.process_callback(callback_id)
    return callback.status if callback is not None else "missing"


@task(name="retry-callbacks", max_attempts=1)
def retry_callbacks() -> dict:
    """Every minute: process again stored callbacks (C2B, STK, Transaction Status, refund results)
    that failed (with back-off) or that no worker has drained a minute after they arrived."""
    return services.retry_callbacks().as_dict()


@task(name="stk-janitor", max_attempts=1)
def stk_janitor() -> dict:
    """Every 30 s: query STK requests still open a minute after the push (with backoff) until each
    is settled or expires, and process STK callbacks stored but not processed (`stk.settle_pending_stk`)."""
    return stk.settle_pending_stk().as_dict()

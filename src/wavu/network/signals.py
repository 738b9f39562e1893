"""RADIUS follows the lifecycle-event stream: every `LifecycleEvent` written (activation, renewal,
expiry, suspension, plan or credential change …) leaves a `RadiusSyncRequest` for its service in the
same transaction, and the workers' drain re-projects the waiting services in batches. Subscriptions
know nothing of RADIUS; this receiver is connected in `apps.NetworkConfig.ready`.
"""

from __future__ import annotations

from wavu.core import clock
from wavu.core.db import insert_new_rows

from .models import RadiusSyncRequest


def request_sync(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    """post_save of LifecycleEvent: ask for the service's RADIUS rows to be re-projected (one INSERT,
    nothing when a request is already waiting)."""
    if created and not raw:
        request_syncs([instance.subscription_id])


def request_syncs(subscription_ids) -> None:
    """Queue a RADIUS sync of these services in the caller's transaction (idempotent)."""
    now = clock.now()
    rows = [(pk, now) for pk in sorted(set(subscription_ids))]
    insert_new_rows(RadiusSyncRequest, ["subscription_id", "requested_at"], rows, key=["subscription_id"])

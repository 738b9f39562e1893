"""Fair-usage policy: what happens when a service's usage crosses its data or time quota.

The quota of a service in its period is its plan's (`data_quota_mb`, `time_quota_minutes`) plus the
data bundles in force (`selectors.service_snapshots`: recurring bundles every period, one-off ones in
the period they were bought); usage is what the ingester counted for the period (`PeriodUsage`),
every device of the account together.

`check_crossings` runs after each ingestion batch, in its transaction:
- a `QuotaEvent` at 80 % and at 100 % (of the data or the time quota, whichever is further), once per
  service, period and threshold (a unique constraint; a second crossing in the same period, after a
  top-up, records nothing new). Notifications (SMS) are sent from these rows;
- when usage crosses 100 % in this batch and the plan throttles or blocks at its quota, a RADIUS sync
  of the service (`signals.request_syncs`): the projection then gives the fair-usage rate, or the
  walled garden / reject, and the writer's hook sends the live session a CoA or a Disconnect
  (`network.coa`). Plans that do nothing at their quota only get the events. A top-up bundle is a
  lifecycle change of its own, so its sync restores the full rate the same way.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Q

from wavu.catalog.models import AddOn
from wavu.core import clock
from wavu.core.db import insert_new_rows
from wavu.subscriptions.models import Subscription, SubscriptionAddOn

from .models import QuotaEvent
from .projection import QUOTA_NONE
from .selectors import MIB, service_snapshots
from .signals import request_syncs

THRESHOLDS = (QuotaEvent.Threshold.WARNING, QuotaEvent.Threshold.REACHED)


def share(used: int, quota: int | None) -> float:
    """Used as a share of the quota (0 when there is no quota; a zero quota is used up)."""
    if quota is None:
        return 0.0
    return float("inf") if quota <= 0 else used / quota


def check_crossings(crossings: dict, *, now: dt.datetime | None = None) -> list[int]:
    """`crossings`: {subscription id: (period start, bytes before, bytes after, seconds before,
    seconds after)} from one ingestion batch. Records the threshold events reached and asks RADIUS
    syncs for the services whose quota was used up in this batch on plans that act on it; returns
    the ids of those services. A fixed number of queries for any number of services."""
    if not crossings:
        return []
    now = now or clock.now()
    snapshots = service_snapshots(_near_a_quota(crossings, now), now)
    events, syncs = [], []
    for sub, (period_start, bytes_before, bytes_after, seconds_before, seconds_after) in sorted(crossings.items()):
        snap = snapshots.get(sub)
        if snap is None or (snap.data_quota_bytes is None and snap.time_quota_seconds is None):
            continue
        before = max(share(bytes_before, snap.data_quota_bytes), share(seconds_before, snap.time_quota_seconds))
        after = max(share(bytes_after, snap.data_quota_bytes), share(seconds_after, snap.time_quota_seconds))
        for threshold in THRESHOLDS:
            if after * 100 >= threshold:
                events.append(
                    (
                        sub,
                        period_start,
                        int(threshold),
                        snap.quota_action,
                        bytes_after,
                        snap.data_quota_bytes,
                        seconds_after,
                        snap.time_quota_seconds,
                        now,
                    )  # fmt: skip
                )
        if before < 1 <= after and snap.quota_action != QUOTA_NONE:
            syncs.append(sub)
    insert_new_rows(
        QuotaEvent,
        [
            "subscription_id",
            "period_start",
            "threshold",
            "action",
            "used_bytes",
            "quota_bytes",
            "used_seconds",
            "quota_seconds",
            "created_at",
        ],  # fmt: skip
        events,
        key=["subscription_id", "period_start", "threshold"],
    )
    if syncs:
        request_syncs(syncs)
    return syncs


def _near_a_quota(crossings: dict, now: dt.datetime) -> list[int]:
    """The services that may be at 80 % of a quota after this batch (two queries), so that only they
    are looked at in full: data bundles only add quota, so a service below 80 % of its plan's quota
    is below 80 % of its quota; a plan without a data quota has one only through a bundle."""
    plans = Subscription.objects.filter(pk__in=list(crossings)).values_list(
        "pk", "plan__data_quota_mb", "plan__time_quota_minutes"
    )
    near, unlimited = [], []
    for pk, quota_mb, quota_minutes in plans:
        _start, _bytes_before, bytes_after, _seconds_before, seconds_after = crossings[pk]
        if quota_minutes is not None and share(seconds_after, quota_minutes * 60) * 100 >= THRESHOLDS[0]:
            near.append(pk)
        elif quota_mb is None:
            unlimited.append(pk)
        elif share(bytes_after, quota_mb * MIB) * 100 >= THRESHOLDS[0]:
            near.append(pk)
    if unlimited:
        with_bundles = (
            SubscriptionAddOn.objects.filter(
                subscription_id__in=unlimited,
                addon__category=AddOn.Category.DATA_BUNDLE,
                addon__data_quota_mb__isnull=False,
                started_at__lte=now,
            )
            .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=now))
            .values_list("subscription_id", flat=True)
            .distinct()
        )
        near.extend(with_bundles)
    return near

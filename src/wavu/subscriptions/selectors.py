"""Subscription reads shared by several callers (customers, payments, billing, network)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db.models import QuerySet
from django.db.models.functions import Lower

from wavu.catalog.models import Plan
from wavu.core import clock

from .models import TRANSITIONS, LifecycleEvent, Status, Subscription

MAX_EVENT_BATCH = 1000


def live_subscriptions(customer) -> QuerySet[Subscription]:
    """The customer's services that are not cancelled (pending, active, suspended, paused, expired)."""
    return Subscription.objects.filter(customer=customer).exclude(status=Status.CANCELLED)


def find_by_username(username: str) -> Subscription | None:
    """The service with this PPPoE/hotspot username (case-insensitive, spaces trimmed), or None."""
    text = (username or "").strip()
    if not text:
        return None
    return with_username(text).select_related("customer", "plan").first()


def with_username(username: str) -> QuerySet[Subscription]:
    """Services whose username equals `username` in any case (uses the LOWER(username) unique index)."""
    return Subscription.objects.alias(lower_username=Lower("username")).filter(lower_username=username.lower())


def due_to_expire(at: dt.datetime | None = None) -> QuerySet[Subscription]:
    """Active prepaid and hotspot services whose period ended by `at` (default now)."""
    return Subscription.objects.filter(
        status=Status.ACTIVE,
        current_period_end__lte=at or clock.now(),
        plan__kind__in=(Plan.Kind.PREPAID, Plan.Kind.HOTSPOT),
    ).order_by("current_period_end", "pk")


def allowed_next_statuses(subscription: Subscription) -> list[str]:
    """The statuses this service may move to next (from `TRANSITIONS`), for buttons and the API."""
    return sorted(TRANSITIONS[subscription.status])


def events_after(
    cursor_id: int = 0,
    *,
    kinds: Iterable[str] | None = None,
    subscription: Subscription | int | None = None,
    customer=None,
    since: dt.datetime | None = None,
    limit: int = 500,
) -> QuerySet[LifecycleEvent]:
    """The lifecycle event stream: events with an id above `cursor_id`, in id order, at most
    `limit` (at most MAX_EVENT_BATCH), with their subscription loaded. Optionally only some
    `kinds`, one `subscription` or `customer` (object or id), or events at or after `since`.

    Consumers (the RADIUS projection, SMS notifications) keep the last id they processed and ask
    again from it. Ids grow in insertion order, but a transaction that commits late may show an
    event with an id below one already read: a consumer that must see every event re-reads a
    small window below its cursor and skips ids it has handled."""
    qs = LifecycleEvent.objects.filter(id__gt=max(int(cursor_id or 0), 0))
    if kinds is not None:
        qs = qs.filter(kind__in=list(kinds))
    if subscription is not None:
        qs = qs.filter(subscription_id=getattr(subscription, "pk", subscription))
    if customer is not None:
        qs = qs.filter(subscription__customer_id=getattr(customer, "pk", customer))
    if since is not None:
        qs = qs.filter(at__gte=since)
    return qs.select_related("subscription").order_by("id")[: max(1, min(int(limit), MAX_EVENT_BATCH))]


def paused_due(at: dt.datetime | None = None) -> QuerySet[Subscription]:
    """Paused services whose planned pause has ended by `at` (default now), the earliest first."""
    return Subscription.objects.filter(status=Status.PAUSED, pause_until__lte=at or clock.now()).order_by(
        "pause_until", "pk"
    )

"""Subscription reads shared by several callers (customers, payments, billing, network)."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet
from django.db.models.functions import Lower

from wavu.catalog.models import Plan
from wavu.core import clock

from .models import TRANSITIONS, Status, Subscription


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

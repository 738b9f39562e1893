"""Reads of invoices shared by several callers."""

from __future__ import annotations

from django.db.models import F, QuerySet

from .models import Invoice

OPEN_STATUSES = (Invoice.Status.ISSUED, Invoice.Status.PARTIALLY_PAID)


def open_invoices(customer_id: int) -> QuerySet[Invoice]:
    """The customer's issued invoices with something outstanding, oldest first (the allocation order)."""
    return (
        Invoice.objects.filter(customer_id=customer_id, status__in=OPEN_STATUSES)
        .filter(total__gt=F("amount_paid") + F("amount_credited"))
        .order_by("issue_date", "issued_at", "id")
    )

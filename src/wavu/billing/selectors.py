"""Reads of invoices shared by several callers, and the overdue reads dunning works from."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q, QuerySet

from wavu.catalog.models import Plan
from wavu.subscriptions.models import Status as SubscriptionStatus
from wavu.subscriptions.models import Subscription, SuspensionCause

from .models import DunningNotice, Invoice, PaymentPromise

OPEN_STATUSES = (Invoice.Status.ISSUED, Invoice.Status.PARTIALLY_PAID)
# Services that no longer answer for the account's service-less invoices.
NOT_LIVE = (SubscriptionStatus.PENDING, SubscriptionStatus.CANCELLED)


def open_invoices(customer_id: int) -> QuerySet[Invoice]:
    """The customer's issued invoices with something outstanding, oldest first (the allocation order)."""
    return (
        Invoice.objects.filter(customer_id=customer_id, status__in=OPEN_STATUSES)
        .filter(total__gt=F("amount_paid") + F("amount_credited"))
        .order_by("issue_date", "issued_at", "id")
    )


@dataclass(frozen=True)
class TaxRow:
    """One row of an invoice's tax table: the lines of one eTIMS band at one pair of rates."""

    band: str
    vat_rate: Decimal
    excise_rate: Decimal
    net: Decimal
    excise: Decimal
    vat: Decimal
    gross: Decimal

    @property
    def vat_taxable(self) -> Decimal:
        """VAT is charged on the excise-inclusive value."""
        return self.net + self.excise


def tax_summary(lines) -> list[TaxRow]:
    """Group invoice or credit-note lines by band and rates (what an invoice must show per rate).

    `lines` are InvoiceLine rows, or (CreditNoteLine, InvoiceLine) pairs for a credit note.
    """
    groups: dict[tuple, list[Decimal]] = {}
    for item in lines:
        amounts, rated = (item[0], item[1]) if isinstance(item, tuple) else (item, item)
        key = (rated.tax_band, rated.vat_rate, rated.excise_rate)
        acc = groups.setdefault(key, [Decimal(0)] * 4)
        acc[0] += amounts.net
        acc[1] += amounts.excise
        acc[2] += amounts.vat
        acc[3] += amounts.gross
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1], -kv[0][2]))  # band, higher rates first
    return [TaxRow(band, vat_rate, excise_rate, *sums) for (band, vat_rate, excise_rate), sums in ordered]


# --- overdue debt (dunning) -------------------------------------------------------------------
#
# An invoice is *overdue* when it is open (issued or partially paid), has money outstanding and its
# due date is before the day asked about. A service's overdue debt is its own overdue invoices plus
# the customer's overdue invoices that name no service (one-off charges bill the whole account).
# "Past grace" moves the cut-off back by WAVU["DUNNING_GRACE_DAYS"]: with a due date of 8 Dec and
# 5 days' grace, the invoice is past grace from 14 Dec.


def _outstanding_open() -> QuerySet[Invoice]:
    return Invoice.objects.filter(status__in=OPEN_STATUSES, due_date__isnull=False).filter(
        total__gt=F("amount_paid") + F("amount_credited")
    )


def grace_days() -> int:
    return int(settings.WAVU["DUNNING_GRACE_DAYS"])


def reminder_offsets() -> list[int]:
    return sorted(set(int(o) for o in settings.WAVU["DUNNING_REMINDER_DAYS"]))


def overdue_invoices(today: dt.date, *, grace: int = 0) -> QuerySet[Invoice]:
    """Open invoices with money outstanding whose due date is more than `grace` days before `today`."""
    return _outstanding_open().filter(due_date__lt=today - dt.timedelta(days=grace))


def _covering_promises(today: dt.date) -> QuerySet[PaymentPromise]:
    return PaymentPromise.objects.filter(until__gte=today)


def service_overdue_invoices(subscription: Subscription, today: dt.date, *, grace: int = 0) -> QuerySet[Invoice]:
    """The overdue invoices a service answers for (its own and the customer's service-less ones), oldest first."""
    return (
        overdue_invoices(today, grace=grace)
        .filter(Q(subscription_id=subscription.pk) | Q(subscription__isnull=True, customer_id=subscription.customer_id))
        .order_by("due_date", "pk")
    )


def has_promise_covering(subscription: Subscription, today: dt.date) -> bool:
    """Whether a promise to pay on this service holds suspension off on `today` (until is inclusive)."""
    return _covering_promises(today).filter(subscription_id=subscription.pk).exists()


def blocking_overdue_invoices(subscription: Subscription, today: dt.date) -> QuerySet[Invoice]:
    """The service's invoices past due date + grace and not covered by a promise to pay: while any
    exists, dunning keeps (or puts) the service suspended."""
    if has_promise_covering(subscription, today):
        return Invoice.objects.none()
    return service_overdue_invoices(subscription, today, grace=grace_days())


def reminder_candidates(today: dt.date, offsets: list[int]) -> QuerySet[Invoice]:
    """Open invoices with money outstanding for which some reminder step has come (due date + offset
    ≤ today) and has no DunningNotice yet. One query (an anti-join per offset on the notices' unique
    index), ordered by pk; an invoice whose steps are all recorded is not returned."""
    if not offsets:
        return Invoice.objects.none()
    step_missing = Q()
    for offset in offsets:
        recorded = DunningNotice.objects.filter(
            invoice_id=OuterRef("pk"), stage=DunningNotice.Stage.REMINDER, offset_days=offset
        )
        step_missing |= Q(due_date__lte=today - dt.timedelta(days=offset)) & ~Exists(recorded)
    return _outstanding_open().filter(due_date__lte=today - dt.timedelta(days=min(offsets))).filter(step_missing)


def services_past_grace(today: dt.date, *, grace: int | None = None) -> QuerySet[Subscription]:
    """Every service that answers for an invoice past due date + grace: the invoice's own service
    (any status), and for a service-less invoice each live service of the customer (not pending or
    cancelled). One query, whatever the number of invoices."""
    past_grace = overdue_invoices(today, grace=grace_days() if grace is None else grace)
    own = past_grace.filter(subscription_id=OuterRef("pk"))
    shared = past_grace.filter(subscription__isnull=True, customer_id=OuterRef("customer_id"))
    return Subscription.objects.filter(Q(Exists(own)) | (Q(Exists(shared)) & ~Q(status__in=NOT_LIVE)))


def services_to_suspend(today: dt.date) -> QuerySet[Subscription]:
    """The active services of `services_past_grace` that no promise to pay covers today, by pk. One query."""
    return (
        services_past_grace(today)
        .filter(status=SubscriptionStatus.ACTIVE)
        .exclude(Exists(_covering_promises(today).filter(subscription_id=OuterRef("pk"))))
        .order_by("pk")
    )


def services_held_by_promise(today: dt.date) -> QuerySet[Subscription]:
    """Active services with debt past grace that a promise to pay covers today (not suspended)."""
    return (
        services_past_grace(today)
        .filter(status=SubscriptionStatus.ACTIVE)
        .filter(Exists(_covering_promises(today).filter(subscription_id=OuterRef("pk"))))
    )


def overdue_suspended_services_cleared(today: dt.date) -> QuerySet[Subscription]:
    """Services suspended for overdue debt that no longer have any: no invoice past due date + grace
    (own, or the customer's service-less ones), or a promise to pay covering today. One query."""
    past_grace = overdue_invoices(today, grace=grace_days())
    own = past_grace.filter(subscription_id=OuterRef("pk"))
    shared = past_grace.filter(subscription__isnull=True, customer_id=OuterRef("customer_id"))
    promised = _covering_promises(today).filter(subscription_id=OuterRef("pk"))
    return (
        Subscription.objects.filter(status=SubscriptionStatus.SUSPENDED, suspension_cause=SuspensionCause.OVERDUE)
        .filter(Exists(promised) | (~Exists(own) & ~Exists(shared)))
        .order_by("pk")
    )


def invoice_by_number(number: str) -> Invoice | None:
    """The issued invoice with this printed number (e.g. INV-000123), with its customer; or None."""
    return Invoice.objects.filter(number=number).select_related("customer").first()


def customers_with_payment_followup(customer_ids) -> set[int]:
    """Of `customer_ids`, those for whom money coming in may change a service (what the after-payment
    job does): a service suspended for overdue debt (reconnection), or a prepaid/hotspot service that
    is expired or active with auto-renew (extension from credit). Others need no job. One query."""
    return set(
        Subscription.objects.filter(customer_id__in=list(customer_ids))
        .filter(
            Q(status=SubscriptionStatus.SUSPENDED, suspension_cause=SuspensionCause.OVERDUE)
            | Q(plan__kind__in=(Plan.Kind.PREPAID, Plan.Kind.HOTSPOT), status=SubscriptionStatus.EXPIRED)
            | Q(
                plan__kind__in=(Plan.Kind.PREPAID, Plan.Kind.HOTSPOT),
                status=SubscriptionStatus.ACTIVE,
                auto_renew=True,
                current_period_end__isnull=False,
            )
        )
        .values_list("customer_id", flat=True)
        .distinct()
    )

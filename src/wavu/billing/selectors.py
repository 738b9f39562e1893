"""Reads of invoices shared by several callers."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

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

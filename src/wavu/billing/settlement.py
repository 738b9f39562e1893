"""An issued invoice's settlement: how much of it is paid and credited, and the status that gives.

Below both payments (allocations move `amount_paid`) and billing's issuing services (credit notes move
`amount_credited`), so that payments need from billing only the invoice, which invoices are open
(`billing.selectors`) and this module: imports point one way, billing.services → payments → here.
"""

from __future__ import annotations

from decimal import Decimal

from wavu.core.errors import DomainError

from .models import Invoice


def settled_status(invoice: Invoice, paid: Decimal, credited: Decimal) -> str:
    """The status an issued invoice takes with these settlement columns (rules in `settle`); raises
    DomainError when the move is not one of `Invoice.TRANSITIONS`. Pure: used by `settle` and by the
    set-based payment writer (`payments.bulk`)."""
    if credited == invoice.total and invoice.total > 0:
        status = Invoice.Status.VOID
    elif paid + credited == invoice.total:
        status = Invoice.Status.PAID
    elif paid + credited > 0:
        status = Invoice.Status.PARTIALLY_PAID
    else:
        status = Invoice.Status.ISSUED
    if status != invoice.status and status not in Invoice.TRANSITIONS[invoice.status]:  # pragma: no cover
        raise DomainError(f"invoice {invoice}: {invoice.status} → {status} is not allowed", code="invalid_transition")
    return status


def settle(invoice: Invoice, *, paid_delta: Decimal = Decimal(0), credited_delta: Decimal = Decimal(0)) -> Invoice:
    """Move an issued invoice's settlement columns and derive its status from them.

    Callers (allocations, credit notes) must hold the invoice row lock (`select_for_update`) in the
    transaction that writes the matching journal entry. Guarantees: paid and credited never go below
    zero or above the total (a check constraint backs this up); status is PAID when nothing is
    outstanding, VOID when the whole total has been credited, PARTIALLY_PAID when something was
    paid or credited, else ISSUED; the move is one of `Invoice.TRANSITIONS` (or no move).
    """
    if invoice.status in (Invoice.Status.DRAFT, Invoice.Status.VOID):
        raise DomainError(f"invoice {invoice} is {invoice.status}: it cannot be settled", code="invoice_not_open")
    paid = invoice.amount_paid + Decimal(paid_delta)
    credited = invoice.amount_credited + Decimal(credited_delta)
    if paid < 0 or credited < 0 or paid + credited > invoice.total:
        raise DomainError(
            f"invoice {invoice}: paid {paid} + credited {credited} would not fit its total {invoice.total}",
            code="settlement_out_of_range",
        )
    status = settled_status(invoice, paid, credited)
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid=paid, amount_credited=credited, status=status)
    invoice.amount_paid, invoice.amount_credited, invoice.status = paid, credited, status
    return invoice

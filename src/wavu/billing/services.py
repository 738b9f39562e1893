"""Billing services: drafting, issuing and crediting invoices.

Every write to invoices and credit notes goes through this module.
"""

from __future__ import annotations

from decimal import Decimal

from wavu.core.errors import DomainError

from .models import Invoice


def settle(invoice: Invoice, *, paid_delta: Decimal = Decimal(0), credited_delta: Decimal = Decimal(0)) -> Invoice:
    """Move an issued invoice's settlement columns and derive its status from them.

    Callers (allocations, credit notes) must hold the invoice row lock (`select_for_update`) in the
    transaction that writes the matching journal entry. Guarantees: paid and credited never go below
    zero or above the total (a check constraint backs this up); status is PAID when nothing is
    outstanding, VOID when the whole total has been credited, PARTIALLY_PAID when something was
    paid or credited, else ISSUED.
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
    if credited == invoice.total and invoice.total > 0:
        status = Invoice.Status.VOID
    elif paid + credited == invoice.total:
        status = Invoice.Status.PAID
    elif paid + credited > 0:
        status = Invoice.Status.PARTIALLY_PAID
    else:
        status = Invoice.Status.ISSUED
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid=paid, amount_credited=credited, status=status)
    invoice.amount_paid, invoice.amount_credited, invoice.status = paid, credited, status
    return invoice

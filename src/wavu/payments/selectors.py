"""Reads of payments shared by the API, the staff pages, the portal and other apps."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import F, QuerySet

from wavu.ledger import accounts
from wavu.ledger.models import JournalEntry, Posting

from .models import Payment

CENT = Decimal("0.01")


def payments_for_customer(customer_id: int) -> QuerySet[Payment]:
    """The customer's payments, newest first, reversed ones included."""
    return Payment.objects.filter(customer_id=customer_id).order_by("-received_at", "-pk")


def suspense_queue() -> QuerySet[Payment]:
    """Payments nobody could be matched to, oldest first: the staff's to-do list."""
    return Payment.objects.filter(status=Payment.Status.UNMATCHED).order_by("received_at", "pk")


def payments_with_credit(customer_id: int) -> QuerySet[Payment]:
    """The customer's received payments with money not yet applied or refunded, oldest first."""
    return (
        Payment.objects.filter(customer_id=customer_id, status=Payment.Status.RECEIVED)
        .filter(amount__gt=F("amount_allocated") + F("amount_refunded"))
        .order_by("received_at", "pk")
    )


@dataclass(frozen=True)
class StatementLine:
    entry_id: int
    posted_at: object
    kind: str
    memo: str
    debit: Decimal  # the customer owes more (an invoice, a refund paid out, a reversed payment)
    credit: Decimal  # the customer owes less (a payment, a credit note)
    balance: Decimal  # running balance after this line: positive = owes, negative = in credit


def customer_statement(customer_id: int) -> list[StatementLine]:
    """The customer's account as they would read it: one line per journal entry that moved their balance.

    Summed from the ledger (receivables + customer credit), so allocations, which only move money
    between the two, do not appear. One query.
    """
    rows = (
        Posting.objects.filter(
            customer_id=customer_id,
            account__code__in=(accounts.ACCOUNTS_RECEIVABLE, accounts.CUSTOMER_CREDIT),
        )
        .values("entry_id", "entry__posted_at", "entry__kind", "entry__memo", "amount")
        .order_by("entry__posted_at", "entry_id")
    )
    per_entry: dict[int, dict] = {}
    for row in rows:
        line = per_entry.setdefault(
            row["entry_id"],
            {"posted_at": row["entry__posted_at"], "kind": row["entry__kind"], "memo": row["entry__memo"], "net": 0},
        )
        line["net"] += row["amount"]
    lines = []
    balance = Decimal("0.00")
    for entry_id, line in per_entry.items():
        net = Decimal(line["net"]).quantize(CENT)
        if net == 0:
            continue
        balance += net
        lines.append(
            StatementLine(
                entry_id=entry_id,
                posted_at=line["posted_at"],
                kind=JournalEntry.Kind(line["kind"]).label,
                memo=line["memo"],
                debit=net if net > 0 else Decimal("0.00"),
                credit=-net if net < 0 else Decimal("0.00"),
                balance=balance,
            )
        )
    return lines

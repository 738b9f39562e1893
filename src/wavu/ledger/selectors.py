"""Reading the ledger: customer balances and the trial balance, always summed from postings."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum

from . import accounts
from .models import Account, Posting

CUSTOMER_ACCOUNTS = (accounts.ACCOUNTS_RECEIVABLE, accounts.CUSTOMER_CREDIT)


def customer_balance(customer_id: int) -> Decimal:
    """What the customer owes (positive) or has in credit (negative): receivables + customer credit."""
    total = Posting.objects.filter(customer_id=customer_id, account__code__in=CUSTOMER_ACCOUNTS).aggregate(
        s=Sum("amount")
    )["s"]
    return (total or Decimal(0)).quantize(Decimal("0.01"))


def customer_credit(customer_id: int) -> Decimal:
    """Unapplied money the customer has with the ISP (positive number)."""
    total = Posting.objects.filter(customer_id=customer_id, account__code=accounts.CUSTOMER_CREDIT).aggregate(
        s=Sum("amount")
    )["s"]
    return (-(total or Decimal(0))).quantize(Decimal("0.01"))


def account_balances() -> list[tuple[Account, Decimal]]:
    """Every account with the sum of its postings (debit positive)."""
    sums = dict(Posting.objects.values("account_id").annotate(s=Sum("amount")).values_list("account_id", "s"))
    return [(acc, (sums.get(acc.id) or Decimal(0)).quantize(Decimal("0.01"))) for acc in Account.objects.all()]


def trial_balance() -> dict:
    """Debits and credits per account and in total; `balanced` is True when they are equal."""
    rows = []
    total_debit = total_credit = Decimal("0.00")
    for acc, bal in account_balances():
        dr = bal if bal > 0 else Decimal("0.00")
        cr = -bal if bal < 0 else Decimal("0.00")
        total_debit += dr
        total_credit += cr
        rows.append({"code": acc.code, "name": acc.name, "type": acc.type, "debit": dr, "credit": cr})
    return {
        "rows": rows,
        "debit": total_debit,
        "credit": total_credit,
        "balanced": total_debit == total_credit,
    }

"""Writing to the journal. The only way money moves in Wavu's books.

`post_entry` guarantees: the postings sum to exactly zero (else `UnbalancedEntry` and nothing is
written); it runs in the caller's transaction, so the entry commits or rolls back together with
the invoice, payment or credit note it books; a second entry of the same kind for the same
source record is refused by a unique constraint (IntegrityError).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from wavu.core import audit, clock
from wavu.core.errors import DomainError

from . import accounts
from .models import Account, JournalEntry, Posting


class UnbalancedEntry(DomainError):
    code = "unbalanced_entry"


@dataclass(frozen=True)
class Line:
    """One posting to be written: account code, signed amount (debit +, credit −), optional customer."""

    account: str
    amount: Decimal
    customer_id: int | None = None


def debit(account: str, amount: Decimal, customer_id: int | None = None) -> Line:
    return Line(account, Decimal(amount), customer_id)


def credit(account: str, amount: Decimal, customer_id: int | None = None) -> Line:
    return Line(account, -Decimal(amount), customer_id)


def install_chart_of_accounts() -> None:
    """Create the accounts of `accounts.CHART` that are missing. Idempotent (used by the migration)."""
    existing = set(Account.objects.values_list("code", flat=True))
    Account.objects.bulk_create(
        [
            Account(code=code, name=name, type=type_, is_customer_subledger=sub)
            for code, name, type_, sub in accounts.CHART
            if code not in existing
        ],
        ignore_conflicts=True,
    )


def account_ids(codes: set[str]) -> dict[str, int]:
    """{account code: id} for `codes` (the chart is installed when accounts are missing)."""
    ids = dict(Account.objects.filter(code__in=codes).values_list("code", "id"))
    if len(ids) < len(codes):
        install_chart_of_accounts()
        ids = dict(Account.objects.filter(code__in=codes).values_list("code", "id"))
    missing = codes - ids.keys()
    if missing:
        raise UnbalancedEntry(f"unknown ledger accounts: {sorted(missing)}")
    return ids


def post_entry(
    *,
    kind: str,
    source,
    lines: list[Line],
    memo: str,
    currency: str = "KES",
    reverses: JournalEntry | None = None,
) -> JournalEntry:
    """Write one balanced journal entry booking `source` (a model instance). Zero lines are dropped."""
    lines = [ln for ln in lines if ln.amount != 0]
    if not lines:
        raise UnbalancedEntry("a journal entry needs at least one non-zero posting")
    total = sum((ln.amount for ln in lines), Decimal(0))
    if total != 0:
        raise UnbalancedEntry(f"journal entry does not balance: postings sum to {total}")
    with transaction.atomic():
        ids = account_ids({ln.account for ln in lines})
        entry = JournalEntry.objects.create(
            kind=kind,
            posted_at=clock.now(),
            memo=memo[:200],
            currency=currency,
            source_type=source._meta.label_lower,
            source_id=str(source.pk),
            reverses=reverses,
            actor_label=audit.current_actor().label[:120],
        )
        Posting.objects.bulk_create(
            [
                Posting(entry=entry, account_id=ids[ln.account], customer_id=ln.customer_id, amount=ln.amount)
                for ln in lines
            ]
        )
    return entry


def reverse_entry(entry: JournalEntry, *, source, memo: str) -> JournalEntry:
    """Write the mirror image of `entry` (every posting negated). An entry can be reversed once."""
    lines = [Line(p.account.code, -p.amount, p.customer_id) for p in entry.postings.select_related("account")]
    return post_entry(
        kind=JournalEntry.Kind.REVERSAL,
        source=source,
        lines=lines,
        memo=memo,
        currency=entry.currency,
        reverses=entry,
    )


__all__ = ["accounts", "account_ids", "post_entry", "reverse_entry", "debit", "credit", "Line", "UnbalancedEntry"]

"""Recording many receipts at once: the set-based twin of `services.record_payment`.

For channels whose receipts arrive in bulk (M-Pesa C2B confirmations drained from the callback
store). `record_payments(receipts)` writes, in the caller's transaction, what calling
`record_payment` for each receipt in turn would write — the payments, their journal entries and
postings, their audit events, the allocations to each customer's oldest open invoices with their
entries, and the invoices' settlement — with a fixed number of statements per batch instead of about
twenty per receipt. `tests/test_bulk.py` checks that both write the same rows.

Guarantees, as `record_payment`:
- a receipt is unique on (method, source, reference). A copy recorded before, earlier in the same
  batch, or by a concurrent transaction (PostgreSQL waits for it to commit, then skips the row: ON
  CONFLICT DO NOTHING) is a "duplicate" and credits nothing; a copy with another amount, currency or
  customer is a "mismatch" and changes nothing; bad input is "rejected" with the reasons;
- locks: the customers' money lock (pk order) before any write, then their open invoices (pk order);
- every entry balances; the invariants listed in `services` hold after the batch.
The after-payment job is the caller's choice (`billing.selectors.customers_with_payment_followup`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from wavu.billing.models import Invoice
from wavu.billing.selectors import OPEN_STATUSES
from wavu.billing.settlement import settled_status
from wavu.core import audit, clock
from wavu.core.db import insert_new_rows, insert_rows, update_rows
from wavu.core.models import AuditEvent
from wavu.customers.services import lock_accounts
from wavu.ledger import accounts
from wavu.ledger.models import JournalEntry, Posting
from wavu.ledger.services import account_ids

from .models import Allocation, Payment
from .services import (
    METHOD_ACCOUNT,
    DuplicateReferenceMismatch,
    _check_same_receipt,
    _clean_payment_input,
    payment_memo,
)

_PAYMENT_FIELDS = [
    "method", "currency", "reference", "source", "payer_name", "payer_phone", "account_reference", "notes",
    "amount", "received_at", "customer_id", "status", "recorded_at", "recorded_by", "amount_allocated",
    "amount_refunded", "reversal_reason",
]  # fmt: skip
_ENTRY_FIELDS = ["kind", "posted_at", "memo", "currency", "source_type", "source_id", "reverses_id", "actor_label"]
_POSTING_FIELDS = ["entry_id", "account_id", "customer_id", "amount"]
_AUDIT_FIELDS = [
    "at", "actor_id", "actor_label", "source_ip", "action", "verb", "object_type", "object_id", "object_repr",
    "before", "after", "reason",
]  # fmt: skip
ZERO = Decimal("0.00")
_ALLOCATION_FIELDS = ["payment_id", "invoice_id", "amount", "created_at", "reverses_id"]


@dataclass(frozen=True)
class Receipt:
    """One receipt to record; the arguments of `record_payment`, with the customer as an id (None:
    nobody matched, the payment goes to suspense)."""

    method: str
    reference: str
    amount: Decimal
    source: str = ""
    customer_id: int | None = None
    received_at: dt.datetime | None = None
    payer_name: str = ""
    payer_phone: str = ""
    account_reference: str = ""
    currency: str = "KES"


@dataclass(frozen=True)
class Recorded:
    """What became of one receipt: "created", "duplicate" (the payment it repeats), "mismatch" or
    "rejected" (`message` says why; nothing was written for it)."""

    outcome: str
    payment_id: int | None = None
    message: str = ""


def record_payments(receipts: list[Receipt]) -> list[Recorded]:
    """Record `receipts` in order, as `record_payment` would one by one; one result per receipt."""
    results: list[Recorded | None] = [None] * len(receipts)
    cleaned: list[tuple[int, dict, int | None]] = []
    for i, r in enumerate(receipts):
        try:
            data = _clean_payment_input(
                method=r.method, reference=r.reference, amount=r.amount, currency=r.currency, source=r.source,
                received_at=r.received_at, payer_name=r.payer_name, payer_phone=r.payer_phone,
                account_reference=r.account_reference, notes="",
            )  # fmt: skip
        except ValidationError as exc:
            results[i] = Recorded("rejected", None, "; ".join(exc.messages))
            continue
        cleaned.append((i, data, r.customer_id))
    if not cleaned:
        return results
    with transaction.atomic():
        lock_accounts(*(customer_id for _, _, customer_id in cleaned))
        created = _insert_payments(cleaned, results)
        if created:
            _book_payments(created)
            _allocate(created)
    return results


def _key(data: dict) -> tuple[str, str, str]:
    return data["method"], data["source"], data["reference"]


def _insert_payments(cleaned, results) -> list[Payment]:
    """Insert the first copy of each receipt (skipping those already recorded), settle every other
    copy as duplicate or mismatch; returns the new payments (in memory, pk set) in receipt order."""
    now, actor = clock.now(), audit.current_actor().label[:120]
    first: dict[tuple, tuple[int, dict, int | None]] = {}
    for item in cleaned:
        first.setdefault(_key(item[1]), item)
    rows = []
    for _, data, customer_id in first.values():
        status = Payment.Status.RECEIVED if customer_id else Payment.Status.UNMATCHED
        rows.append((
            data["method"], data["currency"], data["reference"], data["source"], data["payer_name"],
            data["payer_phone"], data["account_reference"], data["notes"], data["amount"], data["received_at"],
            customer_id, status, now, actor, ZERO, ZERO, "",
        ))  # fmt: skip
    new_ids = insert_new_rows(Payment, _PAYMENT_FIELDS, rows, key=["method", "source", "reference"])
    known: dict[tuple, Payment] = {}
    missing = [key for key in first if key not in new_ids]
    if missing:
        for payment in Payment.objects.filter(
            method__in={k[0] for k in missing},
            source__in={k[1] for k in missing},
            reference__in={k[2] for k in missing},
        ):
            known[(payment.method, payment.source, payment.reference)] = payment
    created = []
    for i, data, customer_id in cleaned:
        key = _key(data)
        if key in new_ids and first[key][0] == i:
            payment = Payment(
                pk=new_ids[key], **data, customer_id=customer_id,
                status=Payment.Status.RECEIVED if customer_id else Payment.Status.UNMATCHED,
                recorded_at=now, recorded_by=actor,
            )  # fmt: skip
            known[key] = payment
            created.append(payment)
            results[i] = Recorded("created", payment.pk)
            continue
        existing = known.get(key)
        if existing is None:  # pragma: no cover - refused by a constraint other than the receipt's
            raise ValidationError({"reference": [f"receipt {data['reference']} could not be recorded"]})
        try:
            _check_same_receipt(existing, data, customer_id)
        except DuplicateReferenceMismatch as exc:
            results[i] = Recorded("mismatch", existing.pk, exc.message)
        else:
            results[i] = Recorded("duplicate", existing.pk)
    return created


def _book_payments(payments: list[Payment]) -> None:
    """Each new payment's journal entry (Dr the method's account / Cr 2200 or 2300) and audit event."""
    now = clock.now()
    actor = audit.current_actor()
    user_id = getattr(actor.user, "pk", None)
    ids = account_ids({METHOD_ACCOUNT[p.method] for p in payments} | {accounts.CUSTOMER_CREDIT, accounts.SUSPENSE})
    entry_ids = insert_rows(
        JournalEntry,
        _ENTRY_FIELDS,
        [
            (
                JournalEntry.Kind.PAYMENT,
                now,
                payment_memo(p)[:200],
                p.currency,
                "payments.payment",
                str(p.pk),
                None,
                actor.label[:120],
            )
            for p in payments
        ],  # fmt: skip
        returning=True,
    )
    postings = []
    for entry_id, p in zip(entry_ids, payments, strict=True):
        postings.append((entry_id, ids[METHOD_ACCOUNT[p.method]], None, p.amount))
        if p.customer_id:
            postings.append((entry_id, ids[accounts.CUSTOMER_CREDIT], p.customer_id, -p.amount))
        else:
            postings.append((entry_id, ids[accounts.SUSPENSE], None, -p.amount))
    insert_rows(Posting, _POSTING_FIELDS, postings)
    insert_rows(
        AuditEvent,
        _AUDIT_FIELDS,
        [
            (
                now,
                user_id,
                actor.label[:120],
                actor.source_ip,
                AuditEvent.Action.CREATE,
                "record_payment",
                "payments.payment",
                str(p.pk),
                str(p)[:200],
                None,
                audit.snapshot(p),
                "",
            )
            for p in payments
        ],  # fmt: skip
    )


def _allocate(payments: list[Payment]) -> None:
    """Apply each new matched payment to its customer's oldest open invoices in the same currency, in
    receipt order (a second payment of one customer gets what the first left open)."""
    customer_ids = {p.customer_id for p in payments if p.customer_id}
    if not customer_ids:
        return
    invoices = list(
        Invoice.objects.select_for_update()
        .filter(customer_id__in=customer_ids, status__in=OPEN_STATUSES)
        .order_by("pk")
        .only(
            "pk",
            "customer_id",
            "currency",
            "number",
            "status",
            "total",
            "amount_paid",
            "amount_credited",
            "issue_date",
            "issued_at",
        )  # fmt: skip
    )
    by_customer: dict[int, list[Invoice]] = defaultdict(list)
    for invoice in sorted(invoices, key=lambda inv: (inv.issue_date, inv.issued_at, inv.pk)):
        by_customer[invoice.customer_id].append(invoice)
    now = clock.now()
    shares: list[tuple[Payment, Invoice, Decimal]] = []
    touched: dict[int, Invoice] = {}
    for payment in payments:
        available = payment.amount
        if payment.customer_id is None:
            continue
        for invoice in by_customer.get(payment.customer_id, ()):
            if available <= 0:
                break
            if invoice.currency != payment.currency or invoice.status not in OPEN_STATUSES:
                continue
            share = min(available, invoice.outstanding)
            if share <= 0:
                continue
            shares.append((payment, invoice, share))
            invoice.amount_paid += share
            invoice.status = settled_status(invoice, invoice.amount_paid, invoice.amount_credited)
            touched[invoice.pk] = invoice
            payment.amount_allocated += share
            available -= share
    if not shares:
        return
    allocation_ids = insert_rows(
        Allocation, _ALLOCATION_FIELDS, [(p.pk, inv.pk, share, now, None) for p, inv, share in shares], returning=True
    )
    actor = audit.current_actor().label[:120]
    entry_ids = insert_rows(
        JournalEntry,
        _ENTRY_FIELDS,
        [
            (
                JournalEntry.Kind.ALLOCATION,
                now,
                f"Payment {p.reference} applied to invoice {inv.number}"[:200],
                p.currency,
                "payments.allocation",
                str(allocation_id),
                None,
                actor,
            )
            for allocation_id, (p, inv, _) in zip(allocation_ids, shares, strict=True)
        ],  # fmt: skip
        returning=True,
    )
    ids = account_ids({accounts.CUSTOMER_CREDIT, accounts.ACCOUNTS_RECEIVABLE})
    postings = []
    for entry_id, (_, inv, share) in zip(entry_ids, shares, strict=True):
        postings.append((entry_id, ids[accounts.CUSTOMER_CREDIT], inv.customer_id, share))
        postings.append((entry_id, ids[accounts.ACCOUNTS_RECEIVABLE], inv.customer_id, -share))
    insert_rows(Posting, _POSTING_FIELDS, postings)
    update_rows(Invoice, ["amount_paid", "status"], [(inv.amount_paid, inv.status, pk) for pk, inv in touched.items()])
    update_rows(Payment, ["amount_allocated"], [(p.amount_allocated, p.pk) for p in payments if p.amount_allocated])

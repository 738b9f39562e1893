"""Payment services: recording money received, applying it to invoices, and undoing it.

Every channel (cash desk, bank, cheque, and later M-Pesa and Airtel callbacks) records money through
`record_payment`; channels deliver the same receipt more than once, so idempotency is the database's
job: a payment is unique on (method, source, reference) and a second copy of a receipt returns the
first payment instead of crediting again. Never check-then-insert.

Books (see the ledger's chart in `wavu.ledger.accounts`), one journal entry per record:
- payment: Dr the method's account (cash/bank/M-Pesa/Airtel/card clearing) / Cr 2200 customer credit
  (with the customer), or Cr 2300 suspense when nobody could be matched;
- matching a suspense payment: Dr 2300 / Cr 2200 (customer);
- allocation (money applied to an invoice): Dr 2200 / Cr 1100 receivables, both with the customer;
  a negative allocation (undo) is the mirror image;
- refund: Dr 2200 (customer) / Cr the refund method's account;
- cancelled refund (money that never left, e.g. an M-Pesa B2C payment that failed): the mirror of
  the refund entry (`cancel_refund`);
- reversal of a mistaken payment: the mirror of its payment entry (and of its matching entry).

Locks, always in this order and always short: the customer row (one money lock per account, so
payments, allocations, credit-note releases and refunds of one customer never interleave), then
payment rows ordered by pk, then invoice rows ordered by pk.

Invariants kept by every function here: invoice.amount_paid == sum of its allocations;
payment.amount_allocated == sum of its allocations; payment.amount_refunded == sum of its refunds
that were not cancelled;
a customer's 2200 balance == -(sum over their received payments of amount - allocated - refunded).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from wavu.billing import selectors as billing_selectors
from wavu.billing import settlement
from wavu.billing.models import Invoice
from wavu.core import audit, clock
from wavu.core.errors import DomainError, NotAllowed
from wavu.core.models import AuditEvent
from wavu.core.money import MINOR_UNITS, InvalidAmount, quantum, to_decimal
from wavu.customers.models import Customer
from wavu.customers.services import lock_accounts
from wavu.ledger import accounts
from wavu.ledger import services as ledger
from wavu.ledger.models import JournalEntry

from . import selectors
from .models import MANUAL_METHODS, Allocation, Method, Payment, Refund
from .signals import money_in

SUPPORTED_CURRENCIES = ("KES",)
MAX_AMOUNT = Decimal("100000000.00")  # KES 100 million: larger is a typing mistake, not a payment
FUTURE_TOLERANCE = dt.timedelta(minutes=10)  # clock skew between a channel and us

METHOD_ACCOUNT = {
    Method.CASH: accounts.CASH,
    Method.BANK_TRANSFER: accounts.BANK,
    Method.CHEQUE: accounts.BANK,
    Method.MPESA: accounts.MPESA_CLEARING,
    Method.AIRTEL: accounts.AIRTEL_CLEARING,
    Method.CARD: accounts.CARD_CLEARING,
}

ZERO = Decimal("0.00")


class DuplicateReferenceMismatch(NotAllowed):
    """The receipt reference was already recorded with a different amount, currency or customer."""

    code = "duplicate_reference_mismatch"


# --------------------------------------------------------------------------------------------
# Input validation (shared by every channel and the API)
# --------------------------------------------------------------------------------------------


def clean_amount(value: object, currency: str = "KES", *, field: str = "amount") -> Decimal:
    """A positive Decimal with at most the currency's minor digits, at most MAX_AMOUNT. Never a float.

    Raises `ValidationError({field: [...]})` with a message a cashier understands.
    """
    try:
        amount = to_decimal(value)
    except InvalidAmount as exc:
        raise ValidationError({field: [f"{exc}; write the amount like 2500 or 2500.50"]}) from exc
    places = MINOR_UNITS.get(currency, 2)
    if amount <= 0:
        raise ValidationError({field: [f"the amount must be more than zero, got {amount}"]})
    if amount > MAX_AMOUNT:  # before rounding: 1e30 cannot be rounded to cents in 28 digits
        raise ValidationError({field: [f"the amount {amount} is more than the largest accepted ({MAX_AMOUNT})"]})
    if amount != amount.quantize(quantum(currency)):
        raise ValidationError({field: [f"{currency} amounts have at most {places} decimal places, got {amount}"]})
    return amount.quantize(quantum(currency))


def _clean_text(errors: dict, field: str, value, max_length: int, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors[field] = [f"{field.replace('_', ' ')} must be text"]
        return ""
    value = value.strip()
    if required and not value:
        errors[field] = [f"{field.replace('_', ' ')} is required"]
    elif len(value) > max_length:
        errors[field] = [f"{field.replace('_', ' ')} is longer than {max_length} characters"]
    return value


def _customer_id(customer) -> int | None:
    if customer is None:
        return None
    if isinstance(customer, Customer):
        if customer.pk is None:
            raise ValidationError({"customer": ["the customer is not saved yet"]})
        return customer.pk
    if isinstance(customer, int) and not isinstance(customer, bool):
        if not Customer.objects.filter(pk=customer).exists():
            raise ValidationError({"customer": [f"there is no customer with id {customer}"]})
        return customer
    raise ValidationError({"customer": ["customer must be a Customer or its id"]})


def _clean_payment_input(*, method, reference, amount, currency, source, received_at, **texts) -> dict:
    errors: dict = {}
    if method not in Method.values:
        errors["method"] = [f"unknown payment method {method!r}; use one of {', '.join(Method.values)}"]
    if currency not in SUPPORTED_CURRENCIES:
        errors["currency"] = [f"payments in {currency!r} are not supported; use {', '.join(SUPPORTED_CURRENCIES)}"]
    cleaned = {
        "method": method,
        "currency": currency,
        "reference": _clean_text(errors, "reference", reference, 60, required=True),
        "source": _clean_text(errors, "source", source, 40),
        "payer_name": _clean_text(errors, "payer_name", texts["payer_name"], 160),
        "payer_phone": _clean_text(errors, "payer_phone", texts["payer_phone"], 80),
        "account_reference": _clean_text(errors, "account_reference", texts["account_reference"], 60),
        "notes": _clean_text(errors, "notes", texts["notes"], 300),
    }
    try:
        cleaned["amount"] = clean_amount(amount, currency if currency in MINOR_UNITS else "KES")
    except ValidationError as exc:
        errors.update(exc.message_dict)
    now = clock.now()
    if received_at is None:
        received_at = now
    elif not isinstance(received_at, dt.datetime):
        errors["received_at"] = ["received_at must be a date and time"]
    elif timezone.is_naive(received_at):
        errors["received_at"] = ["received_at needs a time zone"]
    elif received_at > now + FUTURE_TOLERANCE:
        errors["received_at"] = ["a payment cannot be received in the future"]
    cleaned["received_at"] = received_at
    if errors:
        raise ValidationError(errors)
    return cleaned


def _clean_reason(reason) -> str:
    errors: dict = {}
    value = _clean_text(errors, "reason", reason, 300, required=True)
    if errors:
        raise ValidationError(errors)
    return value


# --------------------------------------------------------------------------------------------
# Locks: customer → payments (by pk) → invoices (by pk)
# --------------------------------------------------------------------------------------------


def _lock_customer(customer_id: int | None) -> None:
    lock_accounts(customer_id)


def _lock_payment(payment_id: int) -> Payment:
    return Payment.objects.select_for_update().get(pk=payment_id)


def _lock_payment_with_customer(payment_id: int) -> Payment:
    """Lock a payment's customer, then the payment (re-checking that the customer did not change meanwhile)."""
    for _ in range(3):
        customer_id = Payment.objects.filter(pk=payment_id).values_list("customer_id", flat=True).get()
        _lock_customer(customer_id)
        payment = _lock_payment(payment_id)
        if payment.customer_id == customer_id:
            return payment
    raise NotAllowed("the payment is being changed by someone else; try again", code="payment_busy")


def _lock_invoices(invoice_ids) -> dict[int, Invoice]:
    return {inv.pk: inv for inv in Invoice.objects.select_for_update().filter(pk__in=list(invoice_ids)).order_by("pk")}


# --------------------------------------------------------------------------------------------
# Allocation primitives (caller holds the customer lock and the payment row lock)
# --------------------------------------------------------------------------------------------


def _write_allocation(payment: Payment, invoice: Invoice, amount: Decimal, *, reverses=None, memo="") -> Allocation:
    """One allocation row (positive: apply, negative: undo), its journal entry, and both settlement columns."""
    allocation = Allocation.objects.create(
        payment=payment, invoice=invoice, amount=amount, created_at=clock.now(), reverses=reverses
    )
    customer_id = invoice.customer_id
    ledger.post_entry(
        kind=JournalEntry.Kind.ALLOCATION,
        source=allocation,
        lines=[
            ledger.debit(accounts.CUSTOMER_CREDIT, amount, customer_id),
            ledger.credit(accounts.ACCOUNTS_RECEIVABLE, amount, customer_id),
        ],
        memo=memo
        or (
            f"Payment {payment.reference} applied to invoice {invoice.number}"
            if amount > 0
            else f"Payment {payment.reference} taken back from invoice {invoice.number}"
        ),
        currency=payment.currency,
    )
    settlement.settle(invoice, paid_delta=amount)
    payment.amount_allocated += amount
    Payment.objects.filter(pk=payment.pk).update(amount_allocated=payment.amount_allocated)
    return allocation


def _allocate(payment: Payment) -> list[Allocation]:
    """Apply the payment's unapplied money to the customer's open invoices, oldest first."""
    available = payment.unallocated
    if payment.status != Payment.Status.RECEIVED or payment.customer_id is None or available <= 0:
        return []
    open_ids = list(
        billing_selectors.open_invoices(payment.customer_id)
        .filter(currency=payment.currency)
        .values_list("pk", flat=True)
    )
    if not open_ids:
        return []
    locked = _lock_invoices(open_ids)
    made = []
    for invoice_id in open_ids:  # allocation order: oldest first
        invoice = locked.get(invoice_id)
        if invoice is None or invoice.status not in billing_selectors.OPEN_STATUSES:
            continue
        share = min(available, invoice.outstanding)
        if share <= 0:
            continue
        made.append(_write_allocation(payment, invoice, share))
        available -= share
        if available <= 0:
            break
    return made


def _net_allocations(**filters) -> dict:
    rows = Allocation.objects.filter(**filters).values("payment_id", "invoice_id").annotate(net=Sum("amount"))
    return {(r["payment_id"], r["invoice_id"]): (r["net"] or ZERO).quantize(Decimal("0.01")) for r in rows}


def _undo_target(payment_id: int, invoice_id: int) -> Allocation | None:
    """The newest positive allocation of this payment to this invoice that no negative row points at yet."""
    undone = Allocation.objects.filter(reverses__isnull=False).values("reverses_id")
    return (
        Allocation.objects.filter(payment_id=payment_id, invoice_id=invoice_id, amount__gt=0)
        .exclude(pk__in=undone)
        .order_by("-created_at", "-pk")
        .first()
    )


# --------------------------------------------------------------------------------------------
# Recording money
# --------------------------------------------------------------------------------------------


def record_payment(
    *,
    method: str,
    reference: str,
    amount,
    currency: str = "KES",
    source: str = "",
    customer=None,
    received_at: dt.datetime | None = None,
    payer_name: str = "",
    payer_phone: str = "",
    account_reference: str = "",
    notes: str = "",
) -> tuple[Payment, bool]:
    """Record money received on any channel; returns (payment, created).

    Idempotent by the database: (method, source, reference) is unique. The insert runs in a savepoint;
    if the receipt is already there (a retried callback, a double click, a concurrent copy) the
    existing payment is returned with created=False and nothing else happens ("already processed").
    A copy whose amount or currency differs, or that names another customer, raises
    `DuplicateReferenceMismatch` (code duplicate_reference_mismatch) and changes nothing.

    A new payment is booked in the same transaction: Dr the method's account / Cr 2200 customer
    credit, or Cr 2300 suspense (status unmatched) when `customer` is None; then it is applied to the
    customer's oldest open invoices (locks: customer, then invoices by pk); what is left stays as
    unapplied credit. Audited. Bad input raises ValidationError with per-field messages and writes
    nothing.
    """
    cleaned = _clean_payment_input(
        method=method,
        reference=reference,
        amount=amount,
        currency=currency,
        source=source,
        received_at=received_at,
        payer_name=payer_name,
        payer_phone=payer_phone,
        account_reference=account_reference,
        notes=notes,
    )
    customer_id = _customer_id(customer)
    with transaction.atomic():
        _lock_customer(customer_id)
        try:
            with transaction.atomic():
                payment = Payment.objects.create(
                    **cleaned,
                    customer_id=customer_id,
                    status=Payment.Status.RECEIVED if customer_id else Payment.Status.UNMATCHED,
                    recorded_at=clock.now(),
                    recorded_by=audit.current_actor().label[:120],
                )
        except IntegrityError:
            existing = Payment.objects.filter(
                method=cleaned["method"], source=cleaned["source"], reference=cleaned["reference"]
            ).first()
            if existing is None:
                raise
            _check_same_receipt(existing, cleaned, customer_id)
            return existing, False

        credit_line = (
            ledger.credit(accounts.CUSTOMER_CREDIT, payment.amount, customer_id)
            if customer_id
            else ledger.credit(accounts.SUSPENSE, payment.amount)
        )
        ledger.post_entry(
            kind=JournalEntry.Kind.PAYMENT,
            source=payment,
            lines=[ledger.debit(METHOD_ACCOUNT[payment.method], payment.amount), credit_line],
            memo=payment_memo(payment),
            currency=payment.currency,
        )
        audit.record(payment, AuditEvent.Action.CREATE, verb="record_payment")
        _allocate(payment)
        _after_money_in(customer_id)
    return payment, True


def payment_memo(payment: Payment) -> str:
    """The memo of a payment's journal entry."""
    suffix = "" if payment.customer_id else " (unmatched, in suspense)"
    return f"{payment.get_method_display()} payment {payment.reference}{suffix}"


def _after_money_in(customer_id: int | None) -> None:
    """Announce money in for the customer (`signals.money_in`): billing's receiver enqueues its
    after-payment job (reconnect what the payment cleared, extend prepaid services) for when the
    payment commits; never for a payment that rolls back."""
    if customer_id is None:
        return
    money_in.send(sender=Payment, customer_id=customer_id)


def _check_same_receipt(existing: Payment, cleaned: dict, customer_id: int | None) -> None:
    problems = []
    if existing.amount != cleaned["amount"]:
        problems.append(f"amount {existing.amount} was recorded, this copy says {cleaned['amount']}")
    if existing.currency != cleaned["currency"]:
        problems.append(f"currency {existing.currency} was recorded, this copy says {cleaned['currency']}")
    if customer_id is not None and existing.customer_id is not None and existing.customer_id != customer_id:
        problems.append("it was recorded for another customer")
    if problems:
        raise DuplicateReferenceMismatch(
            f"{existing.get_method_display()} reference {existing.reference} is already recorded and does not "
            f"match: {'; '.join(problems)}. Nothing was changed.",
            fields={"reference": ["already recorded with different details"]},
        )


def record_manual_payment(
    *,
    method: str,
    reference: str,
    amount,
    customer=None,
    currency: str = "KES",
    received_at: dt.datetime | None = None,
    payer_name: str = "",
    payer_phone: str = "",
    account_reference: str = "",
    notes: str = "",
) -> tuple[Payment, bool]:
    """Record cash, a bank transfer or a cheque entered by staff; returns (payment, created).

    The reference (receipt, transfer or cheque number) is unique per method, so entering the same
    slip twice credits it once. Same guarantees as `record_payment`.
    """
    if method not in MANUAL_METHODS:
        raise ValidationError(
            {
                "method": [
                    f"manual entry is for {', '.join(MANUAL_METHODS)}; {method!r} payments come from their channel"
                ]
            }
        )
    return record_payment(
        method=method,
        reference=reference,
        amount=amount,
        currency=currency,
        source="",
        customer=customer,
        received_at=received_at,
        payer_name=payer_name,
        payer_phone=payer_phone,
        account_reference=account_reference,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Applying and releasing money
# --------------------------------------------------------------------------------------------


def apply_customer_credit(customer_id: int) -> list[Allocation]:
    """Apply the customer's unapplied payment money (oldest payment first) to open invoices (oldest first).

    Idempotent and safe to call at any time (billing calls it after issuing an invoice): with no
    unapplied money or no open invoice it writes nothing. Locks the customer, then the payments with
    money left (by pk), then the invoices (by pk). Returns the allocations written.
    """
    customer_id = _customer_id(customer_id)
    made: list[Allocation] = []
    with transaction.atomic():
        _lock_customer(customer_id)
        candidates = list(selectors.payments_with_credit(customer_id).values_list("pk", flat=True))
        if not candidates or not billing_selectors.open_invoices(customer_id).exists():
            return []
        locked = {p.pk: p for p in Payment.objects.select_for_update().filter(pk__in=candidates).order_by("pk")}
        for payment_id in candidates:  # oldest payment first; _allocate re-checks what is left in Decimal
            made.extend(_allocate(locked[payment_id]))
    return made


def release_allocations(invoice: Invoice, amount) -> list[Allocation]:
    """Take `amount` of paid money back off `invoice`, newest allocation first, as unapplied credit again.

    Billing calls this (holding the invoice lock) when a credit note credits more than was
    outstanding. For each payment, newest first, writes a negative allocation with its mirror
    journal entry (Dr 1100 / Cr 2200) and lowers the invoice's amount_paid and the payment's
    amount_allocated. The released money is NOT re-applied here (the invoice still looks open until
    the credit note settles it); call `apply_customer_credit` afterwards. Refuses (changing nothing)
    an amount that is not positive or exceeds what was paid on the invoice.
    """
    amount = clean_amount(amount, invoice.currency)
    made: list[Allocation] = []
    with transaction.atomic():
        _lock_customer(invoice.customer_id)
        locked_invoice = _lock_invoices([invoice.pk])[invoice.pk]
        if amount > locked_invoice.amount_paid:
            raise DomainError(
                f"cannot release {amount} from invoice {locked_invoice}: only {locked_invoice.amount_paid} was paid",
                code="release_exceeds_paid",
            )
        nets = _net_allocations(invoice_id=invoice.pk)
        newest_first = (
            Allocation.objects.filter(invoice_id=invoice.pk, amount__gt=0)
            .order_by("-created_at", "-pk")
            .values_list("payment_id", flat=True)
        )
        order: list[int] = []
        for payment_id in newest_first:
            if payment_id not in order and nets.get((payment_id, invoice.pk), ZERO) > 0:
                order.append(payment_id)
        payments = {p.pk: p for p in Payment.objects.select_for_update().filter(pk__in=order).order_by("pk")}
        remaining = amount
        for payment_id in order:
            share = min(remaining, nets[(payment_id, invoice.pk)])
            payment = payments[payment_id]
            made.append(
                _write_allocation(
                    payment,
                    locked_invoice,
                    -share,
                    reverses=_undo_target(payment_id, invoice.pk),
                    memo=f"Payment {payment.reference} released from credited invoice {locked_invoice.number}",
                )
            )
            remaining -= share
            if remaining <= 0:
                break
        invoice.amount_paid, invoice.status = locked_invoice.amount_paid, locked_invoice.status
    return made


# --------------------------------------------------------------------------------------------
# Staff corrections: matching, reversing, refunding
# --------------------------------------------------------------------------------------------


def match_payment(payment: Payment, customer, *, reason: str) -> Payment:
    """Move an unmatched (suspense) payment to a customer, then apply it to their open invoices.

    Books Dr 2300 suspense / Cr 2200 customer credit (kind adjustment). Locks the customer, then the
    payment row; a payment that is no longer unmatched is refused with code payment_not_unmatched
    (matching the same customer again is a no-op). Audited with the reason.
    """
    reason = _clean_reason(reason)
    customer_id = _customer_id(customer)
    if customer_id is None:
        raise ValidationError({"customer": ["choose the customer this payment belongs to"]})
    with transaction.atomic():
        _lock_customer(customer_id)
        payment = _lock_payment(payment.pk)
        if payment.status != Payment.Status.UNMATCHED:
            if payment.status == Payment.Status.RECEIVED and payment.customer_id == customer_id:
                return payment
            raise NotAllowed(
                f"payment {payment.reference} is {payment.get_status_display().lower()}, not waiting in suspense",
                code="payment_not_unmatched",
            )
        before = audit.snapshot(payment)
        ledger.post_entry(
            kind=JournalEntry.Kind.ADJUSTMENT,
            source=payment,
            lines=[
                ledger.debit(accounts.SUSPENSE, payment.amount),
                ledger.credit(accounts.CUSTOMER_CREDIT, payment.amount, customer_id),
            ],
            memo=f"Payment {payment.reference} matched from suspense: {reason}",
            currency=payment.currency,
        )
        Payment.objects.filter(pk=payment.pk).update(customer_id=customer_id, status=Payment.Status.RECEIVED)
        payment.customer_id, payment.status = customer_id, Payment.Status.RECEIVED
        audit.record(payment, AuditEvent.Action.UPDATE, before=before, verb="match_payment", reason=reason)
        _allocate(payment)
        _after_money_in(customer_id)
    return payment


def reverse_payment(payment: Payment, *, reason: str) -> Payment:
    """Undo a mistaken payment: take it off its invoices (they re-open), then reverse its books.

    Exactly once: the payment row is locked and a reversed payment is refused (code
    payment_already_reversed). Refused too when part of it was refunded (code payment_refunded).
    Writes a negative allocation (+ mirror entry) per invoice it paid, then the mirror of its payment
    entry (and of its matching entry, if it came out of suspense), and marks it reversed. Audited.
    """
    reason = _clean_reason(reason)
    with transaction.atomic():
        payment = _lock_payment_with_customer(payment.pk)
        if payment.status == Payment.Status.REVERSED:
            raise NotAllowed(f"payment {payment.reference} is already reversed", code="payment_already_reversed")
        if payment.amount_refunded > 0:
            raise NotAllowed(
                f"payment {payment.reference} was partly refunded ({payment.amount_refunded}); it cannot be reversed",
                code="payment_refunded",
            )
        before = audit.snapshot(payment)
        nets = {inv: net for (_, inv), net in _net_allocations(payment_id=payment.pk).items() if net > 0}
        invoices = _lock_invoices(nets)
        for invoice_id in sorted(nets):
            _write_allocation(
                payment,
                invoices[invoice_id],
                -nets[invoice_id],
                reverses=_undo_target(payment.pk, invoice_id),
                memo=f"Payment {payment.reference} reversed: taken back from invoice {invoices[invoice_id].number}",
            )
        entries = JournalEntry.objects.filter(
            source_type=payment._meta.label_lower,
            source_id=str(payment.pk),
            kind__in=(JournalEntry.Kind.PAYMENT, JournalEntry.Kind.ADJUSTMENT),
        ).order_by("pk")
        for entry in entries:
            # The payment entry's reversal is sourced by the payment; the matching entry's by the
            # entry itself (a source is booked once per kind).
            ledger.reverse_entry(
                entry,
                source=payment if entry.kind == JournalEntry.Kind.PAYMENT else entry,
                memo=f"Reversal of {entry.memo}: {reason}"[:200],
            )
        now = clock.now()
        Payment.objects.filter(pk=payment.pk).update(
            status=Payment.Status.REVERSED, reversed_at=now, reversal_reason=reason
        )
        payment.status, payment.reversed_at, payment.reversal_reason = Payment.Status.REVERSED, now, reason
        audit.record(payment, AuditEvent.Action.UPDATE, before=before, verb="reverse_payment", reason=reason)
    return payment


def refund_payment(payment: Payment, *, amount, method: str, reference: str, reason: str) -> Refund:
    """Pay unapplied money of a payment back to its customer; returns the Refund.

    Only money not applied to invoices can be refunded (take it off invoices with a credit note
    first). Books Dr 2200 customer credit / Cr the refund method's account. The refund reference is
    unique per method: the same refund entered twice returns the first one; a different refund with
    a used reference is refused. Locks the customer, then the payment row. Audited.
    """
    errors: dict = {}
    reference = _clean_text(errors, "reference", reference, 60, required=True)
    reason = _clean_text(errors, "reason", reason, 300, required=True)
    if method not in Method.values:
        errors["method"] = [f"unknown refund method {method!r}; use one of {', '.join(Method.values)}"]
    try:
        amount = clean_amount(amount, payment.currency)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        payment = _lock_payment_with_customer(payment.pk)
        existing = Refund.objects.filter(method=method, reference=reference).first()
        if existing is not None:
            return _same_refund(existing, payment, amount)
        if payment.status != Payment.Status.RECEIVED:
            raise NotAllowed(
                f"payment {payment.reference} is {payment.get_status_display().lower()}: only money credited to a "
                "customer can be refunded",
                code="payment_not_refundable",
            )
        if amount > payment.unallocated:
            raise NotAllowed(
                f"only {payment.unallocated} of payment {payment.reference} is unapplied credit; "
                f"{amount} cannot be refunded",
                code="refund_exceeds_credit",
                fields={"amount": [f"at most {payment.unallocated}"]},
            )
        try:
            with transaction.atomic():
                refund = Refund.objects.create(
                    payment=payment,
                    customer_id=payment.customer_id,
                    amount=amount,
                    currency=payment.currency,
                    method=method,
                    reference=reference,
                    refunded_at=clock.now(),
                    reason=reason,
                    recorded_by=audit.current_actor().label[:120],
                )
        except IntegrityError:
            existing = Refund.objects.filter(method=method, reference=reference).first()
            if existing is None:
                raise
            return _same_refund(existing, payment, amount)
        ledger.post_entry(
            kind=JournalEntry.Kind.REFUND,
            source=refund,
            lines=[
                ledger.debit(accounts.CUSTOMER_CREDIT, amount, payment.customer_id),
                ledger.credit(METHOD_ACCOUNT[method], amount),
            ],
            memo=f"Refund {reference} of payment {payment.reference}: {reason}",
            currency=payment.currency,
        )
        before = audit.snapshot(payment)
        payment.amount_refunded += amount
        Payment.objects.filter(pk=payment.pk).update(amount_refunded=payment.amount_refunded)
        audit.record(refund, AuditEvent.Action.CREATE, verb="refund_payment", reason=reason)
        audit.record(payment, AuditEvent.Action.UPDATE, before=before, verb="refund_payment", reason=reason)
    return refund


def _same_refund(existing: Refund, payment: Payment, amount: Decimal) -> Refund:
    if existing.payment_id != payment.pk or existing.amount != amount:
        raise NotAllowed(
            f"refund reference {existing.reference} is already used for another refund; nothing was changed",
            code="duplicate_refund_reference",
            fields={"reference": ["already used"]},
        )
    return existing


def cancel_refund(refund: Refund, *, reason: str) -> JournalEntry:
    """Give a refund's money back to the customer's credit because it never left (an M-Pesa B2C
    payment that failed); returns the mirror entry.

    Exactly once: writes the mirror of the refund's entry (kind reversal, sourced by the refund, so the
    database refuses a second one) and lowers the payment's amount_refunded; a refund already
    cancelled returns its mirror entry and changes nothing. The money is then applied to the
    customer's open invoices like any credit. The Refund row itself is immutable and stays: the
    mirror entry is what marks it cancelled. Locks the customer, then the payment row. Audited.
    """
    reason = _clean_reason(reason)
    with transaction.atomic():
        payment = _lock_payment_with_customer(refund.payment_id)
        entry = JournalEntry.objects.get(
            source_type=refund._meta.label_lower, source_id=str(refund.pk), kind=JournalEntry.Kind.REFUND
        )
        mirror = JournalEntry.objects.filter(reverses=entry).first()
        if mirror is not None:
            return mirror
        mirror = ledger.reverse_entry(
            entry, source=refund, memo=f"Refund {refund.reference} cancelled, credit given back: {reason}"[:200]
        )
        before = audit.snapshot(payment)
        payment.amount_refunded -= refund.amount
        Payment.objects.filter(pk=payment.pk).update(amount_refunded=payment.amount_refunded)
        audit.record(refund, AuditEvent.Action.UPDATE, verb="cancel_refund", reason=reason)
        audit.record(payment, AuditEvent.Action.UPDATE, before=before, verb="cancel_refund", reason=reason)
        _allocate(payment)
        _after_money_in(payment.customer_id)
    return mirror

"""Billing services: drafting, issuing and crediting invoices.

Every write to invoices and credit notes goes through this module.

The life of an invoice: `create_draft_invoice` → lines (`add_subscription_period_line`,
`add_addon_line`, `add_one_off_line`, or the generic `add_line`) → `issue_invoice`, which
allocates the gap-free number, freezes totals and the buyer's details, books one journal entry
and lets existing customer credit pay it. After that only payments (`settlement.settle`) and credit notes
(`issue_credit_note`, `void_invoice`) move it; the database refuses any other change.

Conventions:
- Prices are tax-inclusive. A line's gross is `unit_price × quantity`, rounded once; the tax
  engine splits the gross backwards into net, excise and VAT, so the parts always add up.
- Periods: a datetime is an instant and the end is exclusive (1 Dec 00:00 → 1 Jan 00:00); a bare
  date is a whole local day and an end date is inclusive (1 Dec → 31 Dec means the same period).
- Locks, in the order the payments services use: the customer row, then the invoice row, then
  the number sequence row; `payments.services` called from here locks the customer's payments
  and invoices after that. Drafting only locks the draft invoice.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum
from django.utils import timezone

from wavu.catalog.selectors import addon_price, plan_price
from wavu.core import audit, clock
from wavu.core.db import copy_field_values
from wavu.core.errors import DomainError, ImmutableRecordError, NotAllowed
from wavu.core.models import AuditEvent
from wavu.core.money import InvalidAmount, Money, quantum, round_money, to_decimal
from wavu.core.sequences import next_value
from wavu.core.tax import Rates, TaxClass, TaxRateMissing, split_gross, split_price
from wavu.customers.models import Customer
from wavu.customers.services import lock_accounts
from wavu.ledger import accounts
from wavu.ledger.models import JournalEntry
from wavu.ledger.services import Line, credit, debit, post_entry
from wavu.payments.services import apply_customer_credit, release_allocations
from wavu.subscriptions.models import Subscription, SubscriptionAddOn

from .models import CreditNote, CreditNoteLine, Invoice, InvoiceLine
from .settlement import settle

INVOICE_SERIES = "INV"
CREDIT_NOTE_SERIES = "CN"
NUMBER_DIGITS = 6
_SERIES_RE = re.compile(r"^[A-Z]{1,6}$")
_QUANTITY_PLACES = Decimal("0.001")


# --- errors (stable codes for the API) --------------------------------------------------------


class InvoiceNotDraft(ImmutableRecordError):
    code = "invoice_not_draft"


class EmptyInvoice(DomainError):
    code = "invoice_empty"


class AlreadyInvoiced(NotAllowed):
    """The subscription already has an invoice for this period (the database refused a second one)."""

    code = "already_invoiced"

    def __init__(self, message: str, *, existing_invoice_id: int | None = None):
        super().__init__(message, fields={"period_start": [message]})
        self.existing_invoice_id = existing_invoice_id


class AddOnAlreadyBilled(NotAllowed):
    code = "addon_already_billed"


class CreditNotAllowed(NotAllowed):
    code = "credit_not_allowed"


class CreditWindowClosed(NotAllowed):
    code = "credit_window_closed"


class CreditExceedsInvoice(DomainError):
    code = "credit_exceeds_invoice"


class TaxNotConfigured(DomainError):
    code = "tax_rate_missing"


# --- small helpers ----------------------------------------------------------------------------


def format_number(series: str, value: int) -> str:
    """The printed document number, e.g. INV-000123."""
    return f"{series}-{value:0{NUMBER_DIGITS}d}"


def _instant(value, *, end: bool = False) -> dt.datetime | None:
    """A period bound as an aware datetime (see the module docstring for dates vs datetimes)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if timezone.is_naive(value):
            raise ValidationError({"period_end" if end else "period_start": ["give a time zone with the time"]})
        return value
    if isinstance(value, dt.date):
        return clock.start_of_day(value + dt.timedelta(days=1) if end else value)
    raise ValidationError({"period_end" if end else "period_start": [f"{value!r} is not a date"]})


def _period(start, end) -> tuple[dt.datetime | None, dt.datetime | None]:
    start, end = _instant(start), _instant(end, end=True)
    if (start is None) != (end is None):
        raise ValidationError({"period_end": ["give both the start and the end of the period, or neither"]})
    if start is not None and end <= start:
        raise ValidationError({"period_end": ["the period must end after it starts"]})
    return start, end


def _short_date(day: dt.date) -> str:
    return f"{day.day} {day:%b %Y}"


def period_label(start: dt.datetime, end: dt.datetime) -> str:
    """'1 Dec 2026 – 31 Dec 2026' for the period [1 Dec 00:00, 1 Jan 00:00) in local time."""
    first = clock.local(start).date()
    last = clock.local(end - dt.timedelta(microseconds=1)).date()
    return f"{_short_date(first)} – {_short_date(last)}"


def _amount(value, field: str, currency: str, *, allow_zero: bool = True) -> Decimal:
    """A money amount given by a caller: a decimal with at most the currency's places, not negative."""
    if isinstance(value, Money):
        if value.currency != currency:
            raise ValidationError({field: [f"the amount is in {value.currency}, the invoice in {currency}"]})
        value = value.amount
    try:
        amount = to_decimal(value)
    except InvalidAmount as exc:
        raise ValidationError({field: [str(exc)]}) from exc
    if amount != amount.quantize(quantum(currency)):
        raise ValidationError(
            {field: [f"{currency} amounts have at most {-quantum(currency).as_tuple().exponent} decimals"]}
        )
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValidationError({field: ["the amount must be positive" if not allow_zero else "the amount is negative"]})
    if abs(amount) >= Decimal("1e12"):
        raise ValidationError({field: ["the amount is too large"]})
    return amount


def _lock_invoice(invoice: Invoice | int) -> Invoice:
    pk = invoice.pk if isinstance(invoice, Invoice) else invoice
    return Invoice.objects.select_for_update().get(pk=pk)


def _lock_customer_then_invoice(invoice: Invoice | int) -> Invoice:
    """The lock order shared with payments: the customer row, then the invoice row."""
    pk = invoice.pk if isinstance(invoice, Invoice) else invoice
    customer_id = Invoice.objects.filter(pk=pk).values_list("customer_id", flat=True).get()
    lock_accounts(customer_id)
    return _lock_invoice(pk)


def buyer_address(address: str, town: str, county: str) -> str:
    """The buyer's address as printed on an invoice: the parts given, comma-separated, at most 300 characters."""
    return ", ".join(p.strip() for p in (address, town, county) if p and p.strip())[:300]


# --- drafts and lines -------------------------------------------------------------------------


def create_draft_invoice(
    customer: Customer,
    *,
    subscription: Subscription | None = None,
    period_start=None,
    period_end=None,
    notes: str = "",
    series: str = INVOICE_SERIES,
) -> Invoice:
    """Start a draft invoice for `customer` (optionally for one subscription's billing period).

    Guarantees: a subscription is billed once per period — the database's unique constraint on
    (subscription, period start) refuses a second invoice, reported as `AlreadyInvoiced` (409)
    with nothing written. A draft has no number yet and can still be changed or discarded.
    """
    start, end = _period(period_start, period_end)
    errors: dict[str, list[str]] = {}
    if subscription is not None and subscription.customer_id != customer.pk:
        errors["subscription"] = ["the subscription belongs to another customer"]
    if not _SERIES_RE.match(series or ""):
        errors["series"] = ["a series is 1–6 capital letters, e.g. INV"]
    if len(notes or "") > 300:
        errors["notes"] = ["at most 300 characters"]
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            invoice = Invoice.objects.create(
                customer=customer,
                subscription=subscription,
                series=series,
                currency=settings.WAVU["CURRENCY"],
                period_start=start,
                period_end=end,
                notes=notes or "",
                created_at=clock.now(),
            )
            audit.record(invoice, AuditEvent.Action.CREATE, verb="create_draft_invoice")
    except IntegrityError:
        existing = (
            Invoice.objects.filter(subscription=subscription, period_start=start).values_list("pk", flat=True).first()
            if subscription is not None and start is not None
            else None
        )
        if existing is None:
            raise
        raise AlreadyInvoiced(
            f"subscription {subscription.username} already has an invoice for the period starting "
            f"{_short_date(clock.local(start).date())}",
            existing_invoice_id=existing,
        ) from None
    return invoice


def add_line(
    invoice: Invoice,
    *,
    kind: str,
    description: str,
    unit_price,
    quantity=1,
    tax_class: str,
    period_start=None,
    period_end=None,
    subscription: Subscription | None = None,
    plan=None,
    addon=None,
    tax_date: dt.date | None = None,
) -> InvoiceLine:
    """Append one itemised line to a draft invoice.

    `unit_price` is tax-inclusive; gross = unit_price × quantity rounded once (half-up), split
    into net, excise and VAT with the rates in force on `tax_date` (default: the local day the
    line's period starts, else today); the rates and eTIMS band are stored on the line, so later
    rate changes never alter it. Locks the invoice row; refuses anything but a draft
    (`InvoiceNotDraft`) and invalid input (`ValidationError`), writing nothing in either case.
    Lines are charges (gross ≥ 0): reductions are credit notes.
    """
    if kind not in InvoiceLine.Kind.values:
        raise ValidationError({"kind": [f"unknown line kind {kind!r}"]})
    description = (description or "").strip()
    errors: dict[str, list[str]] = {}
    if not description:
        errors["description"] = ["describe the charge"]
    elif len(description) > 200:
        errors["description"] = ["at most 200 characters"]
    if tax_class not in TaxClass.values:
        errors["tax_class"] = [f"unknown tax class {tax_class!r}; one of {', '.join(TaxClass.values)}"]
    try:
        qty = to_decimal(quantity)
        if qty <= 0 or qty != qty.quantize(_QUANTITY_PLACES) or qty >= Decimal("1e7"):
            errors["quantity"] = ["a positive quantity with at most 3 decimals"]
    except InvalidAmount as exc:
        errors["quantity"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    start, end = _period(period_start, period_end)
    with transaction.atomic():
        locked = _lock_invoice(invoice)
        if locked.status != Invoice.Status.DRAFT:
            raise InvoiceNotDraft(f"invoice {locked} is issued: lines cannot be added; issue a new invoice")
        if subscription is not None and subscription.customer_id != locked.customer_id:
            raise ValidationError({"subscription": ["the subscription belongs to another customer"]})
        unit = _amount(unit_price, "unit_price", locked.currency)
        gross = round_money(unit * qty, locked.currency)
        on = tax_date or (clock.local(start).date() if start else clock.today())
        try:
            split = split_price(Money(gross, locked.currency), tax_class, on)
        except TaxRateMissing as exc:
            raise TaxNotConfigured(str(exc), fields={"tax_class": [str(exc)]}) from exc
        position = (locked.lines.aggregate(m=Max("position"))["m"] or 0) + 1
        line = InvoiceLine.objects.create(
            invoice=locked,
            position=position,
            kind=kind,
            description=description,
            period_start=start,
            period_end=end,
            quantity=qty,
            unit_price=unit,
            gross=split.gross.amount,
            net=split.net.amount,
            excise=split.excise.amount,
            vat=split.vat.amount,
            tax_class=tax_class,
            tax_band=split.rates.band,
            vat_rate=split.rates.vat,
            excise_rate=split.rates.excise,
            subscription=subscription,
            plan=plan,
            addon=addon,
        )
    return line


def add_subscription_period_line(invoice: Invoice, subscription: Subscription, period_start, period_end) -> InvoiceLine:
    """Bill one period of `subscription`'s plan at the plan price in force when the period starts.

    The description reads "Home Fibre 20 Mbps, 1 Dec 2026 – 31 Dec 2026". Same guarantees as `add_line`.
    """
    start, end = _period(period_start, period_end)
    if start is None:
        raise ValidationError({"period_start": ["a service period needs a start and an end"]})
    plan = subscription.plan
    return add_line(
        invoice,
        kind=InvoiceLine.Kind.SUBSCRIPTION,
        description=f"{plan.name}, {period_label(start, end)}",
        unit_price=plan_price(plan, start),
        quantity=1,
        tax_class=plan.tax_class,
        period_start=start,
        period_end=end,
        subscription=subscription,
        plan=plan,
    )


def add_addon_line(
    invoice: Invoice, subscription_addon: SubscriptionAddOn, period_start=None, period_end=None
) -> InvoiceLine:
    """Bill an add-on: a recurring one for the period given, a one-off one exactly once.

    Recurring: priced when the period starts, refused (`ValidationError`) if the add-on was not
    attached during the period. One-off (installation, a router sold): priced when it was
    ordered, no period; the line is claimed on `SubscriptionAddOn.billed_on_line` with a
    conditional update in the same transaction, so two invoices can never both bill it — the
    second gets `AddOnAlreadyBilled` and keeps no line.
    """
    sub_addon = SubscriptionAddOn.objects.select_related("addon", "subscription").get(pk=subscription_addon.pk)
    addon = sub_addon.addon
    if addon.billing == addon.Billing.ONE_OFF:
        if sub_addon.billed_on_line_id is not None:
            raise AddOnAlreadyBilled(f"{addon.name} was already billed (invoice line {sub_addon.billed_on_line_id})")
        with transaction.atomic():
            line = add_line(
                invoice,
                kind=InvoiceLine.Kind.ADDON,
                description=addon.name,
                unit_price=addon_price(addon, sub_addon.started_at),
                quantity=sub_addon.quantity,
                tax_class=addon.tax_class,
                subscription=sub_addon.subscription,
                addon=addon,
            )
            claimed = SubscriptionAddOn.objects.filter(pk=sub_addon.pk, billed_on_line__isnull=True).update(
                billed_on_line=line
            )
            if not claimed:
                raise AddOnAlreadyBilled(f"{addon.name} was billed by another invoice meanwhile")
        subscription_addon.billed_on_line = line
        return line
    start, end = _period(period_start, period_end)
    if start is None:
        raise ValidationError({"period_start": ["a recurring add-on is billed for a period: give start and end"]})
    if sub_addon.started_at >= end or (sub_addon.ended_at is not None and sub_addon.ended_at <= start):
        raise ValidationError({"period_start": [f"{addon.name} was not attached during {period_label(start, end)}"]})
    return add_line(
        invoice,
        kind=InvoiceLine.Kind.ADDON,
        description=f"{addon.name}, {period_label(start, end)}",
        unit_price=addon_price(addon, start),
        quantity=sub_addon.quantity,
        tax_class=addon.tax_class,
        period_start=start,
        period_end=end,
        subscription=sub_addon.subscription,
        addon=addon,
    )


def add_one_off_line(
    invoice: Invoice, *, description: str, unit_price, quantity=1, tax_class: str, kind: str = InvoiceLine.Kind.ONE_OFF
) -> InvoiceLine:
    """A one-off charge typed by staff (installation, a cable, a call-out). Same guarantees as `add_line`."""
    return add_line(
        invoice, kind=kind, description=description, unit_price=unit_price, quantity=quantity, tax_class=tax_class
    )


def discard_draft_invoice(invoice: Invoice) -> None:
    """Delete a draft and its lines; one-off add-ons it billed become billable again.

    Refuses an issued invoice (`InvoiceNotDraft`): issued invoices are corrected by credit notes.
    """
    with transaction.atomic():
        locked = _lock_invoice(invoice)
        if locked.status != Invoice.Status.DRAFT:
            raise InvoiceNotDraft(f"invoice {locked} is issued: it cannot be deleted; issue a credit note")
        SubscriptionAddOn.objects.filter(billed_on_line__invoice=locked).update(billed_on_line=None)
        audit.record(locked, AuditEvent.Action.DELETE, before=audit.snapshot(locked), verb="discard_draft_invoice")
        locked.lines.all().delete()
        locked.delete()


# --- issuing ----------------------------------------------------------------------------------


def _invoice_postings(invoice: Invoice, lines: Iterable[InvoiceLine]) -> list[Line]:
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        revenue[line.tax_class] += line.net
    postings = [debit(accounts.ACCOUNTS_RECEIVABLE, invoice.total, invoice.customer_id)]
    postings += [credit(accounts.REVENUE_BY_TAX_CLASS[cls], amount) for cls, amount in sorted(revenue.items())]
    postings += [credit(accounts.EXCISE_PAYABLE, invoice.excise_total), credit(accounts.VAT_PAYABLE, invoice.vat_total)]
    return postings


def issue_invoice(invoice: Invoice, *, issue_date: dt.date | None = None) -> Invoice:
    """Issue a draft: number it, freeze it, book it, and let the customer's credit pay it.

    In one transaction, holding the invoice row lock: allocates the next number of the series
    (gap-free: a rollback gives it back), sets totals to the sums of the lines, snapshots the
    buyer (name, KRA PIN when known, address, account number), sets the due date (issue date +
    WAVU["INVOICE_DUE_DAYS"]), writes exactly one balanced journal entry (Dr receivables / Cr
    revenue by tax class, excise, VAT), then calls `payments.services.apply_customer_credit`.
    Refuses a non-draft (`InvoiceNotDraft`), an invoice without lines or with a zero total
    (`EmptyInvoice`) and an issue date in the future, writing nothing. Returns the issued invoice
    (and refreshes the instance passed in).
    """
    today = clock.today()
    issue_date = issue_date or today
    if issue_date > today:
        raise ValidationError({"issue_date": ["an invoice cannot be dated in the future"]})
    with transaction.atomic():
        locked = _lock_customer_then_invoice(invoice)
        if locked.status != Invoice.Status.DRAFT:
            raise InvoiceNotDraft(f"invoice {locked} is already issued")
        lines = list(locked.lines.all())
        if not lines:
            raise EmptyInvoice("an invoice needs at least one line before it is issued")
        locked.net_total = sum((ln.net for ln in lines), Decimal(0))
        locked.excise_total = sum((ln.excise for ln in lines), Decimal(0))
        locked.vat_total = sum((ln.vat for ln in lines), Decimal(0))
        locked.total = sum((ln.gross for ln in lines), Decimal(0))
        if locked.total <= 0:
            raise EmptyInvoice("the invoice total is zero: there is nothing to bill")
        customer = Customer.objects.get(pk=locked.customer_id)
        locked.number = format_number(locked.series, next_value(f"invoice:{locked.series}"))
        locked.status = Invoice.Status.ISSUED
        locked.issue_date = issue_date
        locked.issued_at = clock.now()
        locked.due_date = issue_date + dt.timedelta(days=settings.WAVU["INVOICE_DUE_DAYS"])
        locked.buyer_name = customer.name[:160]
        locked.buyer_pin = customer.kra_pin or ""
        locked.buyer_address = buyer_address(customer.address, customer.town, customer.county)
        locked.buyer_account_number = customer.account_number
        locked.save()
        post_entry(
            kind=JournalEntry.Kind.INVOICE,
            source=locked,
            lines=_invoice_postings(locked, lines),
            memo=f"Invoice {locked.number} to {customer.account_number} {customer.name}",
            currency=locked.currency,
        )
        audit.record(locked, AuditEvent.Action.ACTION, verb="issue_invoice")
        apply_customer_credit(locked.customer_id)
        locked.refresh_from_db()
    copy_field_values(invoice, locked)
    return locked


def invoice_subscription_period(
    subscription: Subscription, period_start, period_end, *, issue_date: dt.date | None = None
) -> Invoice:
    """Draft, fill and issue the invoice of one billing period of a subscription, all or nothing.

    Lines: the plan for the period, each recurring add-on attached during the period, and every
    one-off add-on not billed yet (ordered before the period ends). Not idempotent by design but
    safe: a second call for the same period raises `AlreadyInvoiced` (the database's unique
    constraint decides, even between concurrent callers) and writes nothing.
    """
    start, end = _period(period_start, period_end)
    if start is None:
        raise ValidationError({"period_start": ["a billing period needs a start and an end"]})
    subscription = Subscription.objects.select_related("customer", "plan").get(pk=subscription.pk)
    with transaction.atomic():
        invoice = create_draft_invoice(
            subscription.customer, subscription=subscription, period_start=start, period_end=end
        )
        add_subscription_period_line(invoice, subscription, start, end)
        attached = (
            SubscriptionAddOn.objects.filter(subscription=subscription, started_at__lt=end)
            .select_related("addon")
            .order_by("pk")
        )
        for sub_addon in attached:
            if sub_addon.addon.billing == sub_addon.addon.Billing.ONE_OFF:
                if sub_addon.billed_on_line_id is None:
                    add_addon_line(invoice, sub_addon)
            elif sub_addon.ended_at is None or sub_addon.ended_at > start:
                add_addon_line(invoice, sub_addon, start, end)
        return issue_invoice(invoice, issue_date=issue_date)


# --- credit notes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _LineLeft:
    """What is still creditable on one invoice line (gross and its parts)."""

    line: InvoiceLine
    gross: Decimal
    net: Decimal
    excise: Decimal
    vat: Decimal


def _lines_left(invoice: Invoice) -> list[_LineLeft]:
    credited = {
        row["invoice_line"]: row
        for row in CreditNoteLine.objects.filter(invoice_line__invoice=invoice)
        .values("invoice_line")
        .annotate(gross=Sum("gross"), net=Sum("net"), excise=Sum("excise"), vat=Sum("vat"))
    }
    out = []
    for line in invoice.lines.order_by("position"):
        done = credited.get(line.pk, {})
        out.append(
            _LineLeft(
                line,
                line.gross - (done.get("gross") or 0),
                line.net - (done.get("net") or 0),
                line.excise - (done.get("excise") or 0),
                line.vat - (done.get("vat") or 0),
            )
        )
    return out


def _spread(amount: Decimal, lefts: list[_LineLeft], currency: str) -> dict[int, Decimal]:
    """Share `amount` over lines in proportion to what is left on each (largest remainder, to the cent)."""
    lefts = [left for left in lefts if left.gross > 0]
    pool = sum((left.gross for left in lefts), Decimal(0))
    if amount == pool:
        return {left.line.pk: left.gross for left in lefts}
    cent = quantum(currency)
    exact = {left.line.pk: amount * left.gross / pool for left in lefts}
    shares = {pk: value.quantize(cent, rounding=ROUND_DOWN) for pk, value in exact.items()}
    missing = int((amount - sum(shares.values(), Decimal(0))) / cent)
    by_remainder = sorted(exact, key=lambda pk: (exact[pk] - shares[pk], -pk), reverse=True)
    for pk in by_remainder[:missing]:
        shares[pk] += cent
    return {pk: share for pk, share in shares.items() if share > 0}


def _credit_piece(left: _LineLeft, gross: Decimal, currency: str) -> tuple[Decimal, Decimal, Decimal]:
    """Net, excise and VAT of crediting `gross` more of a line, at the rates stored on the line.

    Cumulative, so rounding never drifts: the line's credited total after this piece is split with
    the line's rates, and the piece is that split minus the parts credited before. The pieces of a
    line therefore always sum to the split of its credited total, each piece is non-negative (the
    split is monotone in the gross), and crediting a line in full, in one note or several, reverses
    exactly the net, excise and VAT it charged.
    """
    line = left.line
    after = line.gross - left.gross + gross
    if after == line.gross:
        target = (line.net, line.excise, line.vat)
    else:
        rates = Rates(tax_class=line.tax_class, vat=line.vat_rate, excise=line.excise_rate, band=line.tax_band)
        split = split_gross(Money(after, currency), rates)
        target = (split.net.amount, split.excise.amount, split.vat.amount)
    done = (line.net - left.net, line.excise - left.excise, line.vat - left.vat)
    net, excise, vat = (t - d for t, d in zip(target, done, strict=True))
    return net, excise, vat


def _requested_per_line(invoice: Invoice, lefts: list[_LineLeft], lines) -> dict[int, Decimal]:
    """Validate explicit per-line credits: {line or line id: amount, or None for the rest of the line}."""
    if isinstance(lines, Mapping):
        items = list(lines.items())
    else:
        try:
            items = [(item["line"], item.get("amount")) for item in lines]
        except (TypeError, KeyError) as exc:
            raise ValidationError(
                {"lines": ["give lines as {line id: amount} or [{'line': id, 'amount': ...}]"]}
            ) from exc
    by_pk = {left.line.pk: left for left in lefts}
    wanted: dict[int, Decimal] = {}
    errors: list[str] = []
    for key, value in items:
        pk = key.pk if isinstance(key, InvoiceLine) else key
        left = by_pk.get(pk) if isinstance(pk, int) else None
        if left is None:
            errors.append(f"line {key!r} is not a line of invoice {invoice}")
            continue
        if pk in wanted:
            errors.append(f"line {pk} is listed twice")
            continue
        gross = left.gross if value is None else _amount(value, "lines", invoice.currency, allow_zero=False)
        if gross <= 0:
            errors.append(f"line {left.line.position} has nothing left to credit")
        elif gross > left.gross:
            errors.append(f"line {left.line.position}: {gross} is more than the {left.gross} left to credit")
        else:
            wanted[pk] = gross
    if errors or not wanted:
        raise ValidationError({"lines": errors or ["name at least one line to credit"]})
    return wanted


def _credit_note_postings(note: CreditNote, pieces: list[tuple[_LineLeft, Decimal, Decimal, Decimal, Decimal]]):
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for left, _gross, net, _excise, _vat in pieces:
        revenue[left.line.tax_class] += net
    postings = [debit(accounts.REVENUE_BY_TAX_CLASS[cls], amount) for cls, amount in sorted(revenue.items())]
    postings += [debit(accounts.EXCISE_PAYABLE, note.excise_total), debit(accounts.VAT_PAYABLE, note.vat_total)]
    postings.append(credit(accounts.ACCOUNTS_RECEIVABLE, note.total, note.customer_id))
    return postings


def issue_credit_note(invoice: Invoice, *, reason: str, amount=None, lines=None) -> CreditNote:
    """Credit an issued invoice: in full (no amount, no lines), by an amount, or line by line.

    Guarantees, in one transaction holding the invoice row lock:
    - only an issued, partially paid or paid invoice dated at most WAVU["CREDIT_NOTE_WINDOW_DAYS"]
      (365) days ago can be credited (`CreditWindowClosed`, `CreditNotAllowed`);
    - never more than what is left (total − already credited) in total or per line
      (`CreditExceedsInvoice` / `ValidationError`), and nothing is written when refused;
    - an amount is spread over the lines in proportion to what is left on each; each piece is
      split with the rates stored on its invoice line (never today's), cumulatively so that
      rounding never drifts: net + excise + VAT == gross per line, and crediting all that is left
      (at once or over several notes) reverses exactly the tax charged;
    - a gap-free number in the "CN" series, one balanced journal entry (Dr revenue, excise, VAT /
      Cr receivables), and `settle(credited_delta=…)`; the part of the credit above what was
      still outstanding is handed to `payments.services.release_allocations`, so money already
      paid becomes customer credit (then `apply_customer_credit` lets it pay other open invoices);
      a credit of the whole total makes the invoice VOID.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": ["say why the invoice is credited"]})
    if len(reason) > 300:
        raise ValidationError({"reason": ["at most 300 characters"]})
    if amount is not None and lines is not None:
        raise ValidationError({"amount": ["give an amount or lines, not both"]})
    today = clock.today()
    with transaction.atomic():
        locked = _lock_customer_then_invoice(invoice)
        if locked.status in (Invoice.Status.DRAFT, Invoice.Status.VOID):
            raise CreditNotAllowed(f"invoice {locked} is {locked.get_status_display().lower()}: nothing to credit")
        window = settings.WAVU["CREDIT_NOTE_WINDOW_DAYS"]
        if (today - locked.issue_date).days > window:
            raise CreditWindowClosed(
                f"invoice {locked} was issued on {locked.issue_date}: a credit note may reference an invoice "
                f"at most {window} days old"
            )
        left = locked.total - locked.amount_credited
        lefts = _lines_left(locked)
        if lines is not None:
            wanted = _requested_per_line(locked, lefts, lines)
        else:
            requested = left if amount is None else _amount(amount, "amount", locked.currency, allow_zero=False)
            if requested > left:
                raise CreditExceedsInvoice(
                    f"invoice {locked} has {left} left to credit; {requested} is more than that",
                    fields={"amount": [f"at most {left}"]},
                )
            wanted = _spread(requested, lefts, locked.currency)
        by_pk = {left_.line.pk: left_ for left_ in lefts}
        pieces = []
        for pk, gross in sorted(wanted.items(), key=lambda kv: by_pk[kv[0]].line.position):
            net, excise, vat = _credit_piece(by_pk[pk], gross, locked.currency)
            pieces.append((by_pk[pk], gross, net, excise, vat))
        total = sum((p[1] for p in pieces), Decimal(0))
        if total <= 0:
            raise CreditNotAllowed(f"invoice {locked} has nothing left to credit")
        now = clock.now()
        note = CreditNote.objects.create(
            invoice=locked,
            customer_id=locked.customer_id,
            series=CREDIT_NOTE_SERIES,
            number=format_number(CREDIT_NOTE_SERIES, next_value(f"credit_note:{CREDIT_NOTE_SERIES}")),
            currency=locked.currency,
            issue_date=today,
            issued_at=now,
            reason=reason,
            net_total=sum((p[2] for p in pieces), Decimal(0)),
            excise_total=sum((p[3] for p in pieces), Decimal(0)),
            vat_total=sum((p[4] for p in pieces), Decimal(0)),
            total=total,
        )
        CreditNoteLine.objects.bulk_create(
            [
                CreditNoteLine(
                    credit_note=note,
                    invoice_line=left_.line,
                    description=left_.line.description,
                    gross=gross,
                    net=net,
                    excise=excise,
                    vat=vat,
                )
                for left_, gross, net, excise, vat in pieces
            ]
        )
        post_entry(
            kind=JournalEntry.Kind.CREDIT_NOTE,
            source=note,
            lines=_credit_note_postings(note, pieces),
            memo=f"Credit note {note.number} on invoice {locked.number}",
            currency=note.currency,
        )
        excess = total - locked.outstanding
        if excess > 0:
            release_allocations(locked, excess)
            locked.refresh_from_db(fields=["amount_paid", "amount_credited", "status"])
        settle(locked, credited_delta=total)
        if excess > 0:
            apply_customer_credit(locked.customer_id)  # released money pays the customer's other open invoices
        audit.record(note, AuditEvent.Action.CREATE, verb="issue_credit_note", reason=reason)
    copy_field_values(invoice, locked)
    return note


def void_invoice(invoice: Invoice, reason: str) -> CreditNote:
    """Void an issued invoice by crediting everything left on it (see `issue_credit_note`)."""
    return issue_credit_note(invoice, reason=reason)


__all__ = [
    "AddOnAlreadyBilled",
    "AlreadyInvoiced",
    "CreditExceedsInvoice",
    "CreditNotAllowed",
    "CreditWindowClosed",
    "EmptyInvoice",
    "InvoiceNotDraft",
    "add_addon_line",
    "add_line",
    "add_one_off_line",
    "add_subscription_period_line",
    "create_draft_invoice",
    "discard_draft_invoice",
    "invoice_subscription_period",
    "issue_credit_note",
    "issue_invoice",
    "period_label",
    "void_invoice",
]

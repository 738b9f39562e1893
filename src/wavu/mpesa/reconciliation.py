"""M-Pesa reconciliation: the organisation portal statement against what Wavu recorded, and Transaction
Status queries for receipts Wavu never heard of.

`import_statement(channel, data, dry_run=False)` reads the CSV statement the M-Pesa organisation portal
exports for one shortcode (mpesa-daraja.md §1.15) and, for every completed money-in row, records the
receipt through `payments.services.record_payment(method="mpesa", source=<channel shortcode>,
reference=<Receipt No.>)` — the very call a C2B confirmation makes — so a receipt the hook already
delivered is "already known" and never credited twice, and a receipt the hook missed is recorded
("found by reconciliation"), matched by its A/C No. like a confirmation (or to suspense). Importing the
same statement again changes nothing. A receipt known with another amount is flagged, not applied.
Every row the parser cannot read is reported with its line number; nothing is dropped silently.
The report also lists Wavu's M-Pesa payments on the channel inside the statement's period that the
statement does not contain (money Wavu believes it received but the portal does not show).

`query_unknown_receipts(channel, receipts)` asks Daraja's Transaction Status about receipts staff
type in (each query audited on the channel with its ConversationID); the answers arrive at the
status-result hook (stored as InboundCallback rows) and `apply_status_result(callback_id)` turns a
completed answer into a payment (to suspense: a status result carries no account reference). A result
whose processing failed or never happened is processed again by `services.retry_callbacks` (every minute).
A query Safaricom timed out on arrives at the status-timeout hook; `timed_out_status_queries` lists the
receipts whose query timed out and that nobody has answered since, for staff to ask again (the
statement report and the admin show them).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.urls import reverse

from wavu.core import audit, clock
from wavu.core.errors import DomainError
from wavu.core.models import AuditEvent
from wavu.payments.models import Method, Payment
from wavu.payments.services import DuplicateReferenceMismatch, record_payment

from . import selectors
from .callbacks import mark_failed
from .models import InboundCallback, PaymentChannel
from .payloads import (
    MPESA_TIME_ZONE,
    BadCallback,
    daraja_amount,
    daraja_time,
    load_json_object,
    plausible_time,
    require_storable,
)

logger = logging.getLogger("wavu.mpesa")

MPESA = Method.MPESA
FOUND_NOTE = "found by reconciliation (portal statement)"
FOUND_BY_STATUS_NOTE = "found by reconciliation (Transaction Status)"

# Normalised header → field name. Header variants (with or without the full stop, any case, extra
# spaces) are normalised by `_header_key` before the lookup.
COLUMNS = {
    "receipt no": "receipt",
    "receipt number": "receipt",
    "completion time": "completed",
    "initiation time": "initiated",
    "details": "details",
    "transaction status": "status",
    "paid in": "paid_in",
    "withdrawn": "withdrawn",
    "balance": "balance",
    "balance confirmed": "balance_confirmed",
    "reason type": "reason_type",
    "other party info": "other_party",
    "linked transaction id": "linked",
    "a/c no": "account",
    "account no": "account",
}
REQUIRED = ("receipt", "completed", "status", "paid_in")
REQUIRED_LABELS = {"receipt": "Receipt No.", "completed": "Completion Time", "status": "Transaction Status",
                   "paid_in": "Paid In"}  # fmt: skip
DATE_FORMATS = ("%d-%m-%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%Y-%m-%d %H:%M",
                "%d/%m/%Y %H:%M")  # fmt: skip
# Money in that is not a customer's payment (transfers between the organisation's own accounts,
# reversals, settlements): reported as skipped, never recorded as a payment.
NOT_CUSTOMER_MONEY = re.compile(r"transfer|reversal|settlement|charge|commission|salary|b2c|business to", re.I)
RECEIPT_RE = re.compile(r"^[A-Z0-9]{6,20}$")
ACCOUNT_IN_DETAILS_RE = re.compile(r"\bAcc(?:ount)?\.?(?:\s*No\.?)?\s*[:\-]?\s*(\S+)\s*$", re.I)
MAX_STATEMENT_BYTES = 20 * 1024 * 1024
STATUS_QUERY_VERB = "transaction_status_query"  # audit verb of a Transaction Status query Daraja accepted


class StatementFormatError(DomainError):
    """The file is not a readable statement (no header row with the required columns, too large …)."""

    code = "statement_format"


# --- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatementRow:
    """One transaction of the statement; `line` is its line number in the file (1-based)."""

    line: int
    receipt: str
    completed_at: dt.datetime
    status: str
    paid_in: Decimal
    withdrawn: Decimal
    details: str = ""
    reason_type: str = ""
    other_party: str = ""
    account: str = ""


@dataclass(frozen=True)
class RowProblem:
    line: int
    receipt: str
    message: str


@dataclass
class ParsedStatement:
    rows: list[StatementRow] = field(default_factory=list)
    errors: list[RowProblem] = field(default_factory=list)
    header_line: int = 0


def _header_key(cell: str) -> str:
    return re.sub(r"\s+", " ", cell.replace("\ufeff", "").strip().lower()).rstrip(".").strip()


def parse_amount(text: str, *, column: str) -> Decimal:
    """'1,500.00', '1500', '-1,000.00', 'KES 20.00', '' → Decimal (blank → 0; the sign is dropped: the
    column says which way the money went). ValueError for anything else, other scripts' digits and
    exponents included."""
    cleaned = (text or "").strip().replace(",", "").replace(" ", "")
    cleaned = re.sub(r"^(KES|KSH|KSHS)", "", cleaned, flags=re.I)
    if cleaned in ("", "-"):
        return Decimal("0")
    if not re.fullmatch(
        r"-?[0-9]+(?:\.[0-9]+)?", cleaned
    ):  # Decimal() reads "１００" and "1E+3": the portal writes neither
        raise ValueError(f"{column} {text!r} is not an amount")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"{column} {text!r} is not an amount") from None
    if not value.is_finite() or value.as_tuple().exponent < -2:
        raise ValueError(f"{column} {text!r} is not an amount with at most 2 decimals")
    return abs(value)


def parse_time(text: str, *, column: str) -> dt.datetime:
    """A statement time ('24-11-2026 14:03:11' or '2026-11-24 14:03:11', Kenyan time, ASCII digits) as
    an aware datetime, plausible like every Daraja time (`payloads.plausible_time`: from 2007 to a day
    after now). ValueError otherwise."""
    value = (text or "").strip()
    if value.isascii():
        for fmt in DATE_FORMATS:
            try:
                moment = dt.datetime.strptime(value, fmt).replace(tzinfo=MPESA_TIME_ZONE)
            except ValueError:
                continue
            return plausible_time(moment, field=column)
    raise ValueError(f"{column} {text!r} is not a date like 24-11-2026 14:03:11")


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data.lstrip("\ufeff")
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementFormatError(f"the statement is larger than {MAX_STATEMENT_BYTES // (1024 * 1024)} MB")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _find_header(text: str) -> tuple[str, int, dict[str, int]] | None:
    """(delimiter, header line number, {field: column index}) of the first line that names the
    required columns, trying comma, semicolon and tab."""
    for delimiter in (",", ";", "\t"):
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        try:
            for cells in reader:
                index = {}
                for position, cell in enumerate(cells):
                    name = COLUMNS.get(_header_key(cell))
                    if name and name not in index:
                        index[name] = position
                if all(name in index for name in REQUIRED):
                    return delimiter, reader.line_num, index
                if reader.line_num > 50:
                    break
        except csv.Error:
            continue
    return None


def parse_statement(data: bytes | str) -> ParsedStatement:
    """Read an organisation portal statement (CSV).

    Accepted: a UTF-8 BOM (or Windows-1252), preamble lines before the header row (organisation name,
    period …), comma, semicolon or tab separators, quoted fields, header variants ("Receipt No." or
    "Receipt No", any case), dates DD-MM-YYYY or YYYY-MM-DD with time, amounts with thousands
    separators. Blank lines are ignored. Every other row that cannot be read (a NUL character in any
    cell included) is returned in `errors` with its line number. Raises StatementFormatError when no
    header row names Receipt No., Completion Time, Transaction Status and Paid In.
    """
    text = _decode(data)
    found = _find_header(text)
    if found is None:
        raise StatementFormatError(
            "no header row with the columns " + ", ".join(REQUIRED_LABELS.values()) + " was found; is this an "
            "M-Pesa organisation portal statement exported as CSV?"
        )
    delimiter, header_line, index = found
    parsed = ParsedStatement(header_line=header_line)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    width = max(index.values()) + 1
    try:
        for cells in reader:
            line = reader.line_num
            if line <= header_line or not any(cell.strip() for cell in cells):
                continue

            def cell(name: str, cells=cells) -> str:
                position = index.get(name)
                return cells[position].strip() if position is not None and position < len(cells) else ""

            receipt = cell("receipt").upper()
            if len(cells) < width:
                parsed.errors.append(RowProblem(line, receipt, f"{len(cells)} columns, the header has {width}+"))
                continue
            problems = []
            if any("\x00" in cell for cell in cells):  # PostgreSQL cannot store it; the portal never writes it
                problems.append("the row holds a NUL character")
            if not RECEIPT_RE.match(receipt):
                problems.append(f"Receipt No. {receipt!r} is not an M-Pesa receipt")
            values = {}
            for name, parser, column in (
                ("completed", parse_time, "Completion Time"),
                ("paid_in", parse_amount, "Paid In"),
                ("withdrawn", parse_amount, "Withdrawn"),
            ):
                try:
                    values[name] = parser(cell(name), column=column)
                except ValueError as exc:
                    problems.append(str(exc))
            if problems:
                parsed.errors.append(RowProblem(line, receipt, "; ".join(problems)))
                continue
            parsed.rows.append(
                StatementRow(
                    line=line,
                    receipt=receipt,
                    completed_at=values["completed"],
                    status=cell("status"),
                    paid_in=values["paid_in"],
                    withdrawn=values["withdrawn"],
                    details=cell("details"),
                    reason_type=cell("reason_type"),
                    other_party=cell("other_party"),
                    account=cell("account"),
                )
            )
    except csv.Error as exc:
        parsed.errors.append(
            RowProblem(reader.line_num, "", f"unreadable CSV: {exc}; the rest of the file was not read")
        )
    return parsed


def account_reference(row: StatementRow) -> str:
    """What the payer typed as the account: the A/C No. column, else 'Acc. XYZ' at the end of Details."""
    if row.account:
        return row.account
    found = ACCOUNT_IN_DETAILS_RE.search(row.details or "")
    return found.group(1) if found else ""


def split_other_party(text: str) -> tuple[str, str]:
    """'254799000111 - JANE DOE' → ('254799000111', 'JANE DOE'); the number stays opaque (it may be
    masked or hashed) and is never used to find the customer."""
    number, sep, name = (text or "").partition(" - ")
    if not sep:
        return "", (text or "").strip()
    return number.strip(), name.strip()


# --- import --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportItem:
    line: int
    receipt: str
    amount: Decimal
    detail: str


@dataclass
class ReconciliationReport:
    """What an import found. Amounts are Decimal; `missing_from_statement` lists Wavu payments."""

    channel: str
    dry_run: bool
    rows_read: int = 0
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None
    already_known: list[ReportItem] = field(default_factory=list)
    recorded_matched: list[ReportItem] = field(default_factory=list)
    recorded_suspense: list[ReportItem] = field(default_factory=list)
    mismatches: list[ReportItem] = field(default_factory=list)
    skipped: list[ReportItem] = field(default_factory=list)
    errors: list[RowProblem] = field(default_factory=list)
    missing_from_statement: list[ReportItem] = field(default_factory=list)
    status_timeouts: list[TimedOutQuery] = field(default_factory=list)

    @property
    def newly_recorded(self) -> int:
        return len(self.recorded_matched) + len(self.recorded_suspense)

    def lines(self) -> list[str]:
        """The report as text for staff (the management command prints it)."""
        verb = "would be recorded" if self.dry_run else "newly recorded"
        period = (
            f"{clock.local(self.period_start):%Y-%m-%d %H:%M} – {clock.local(self.period_end):%Y-%m-%d %H:%M}"
            if self.period_start
            else "no dated rows"
        )

        def total(items) -> str:
            return f"{sum((i.amount for i in items), Decimal('0')):,.2f} KES"

        out = [
            f"M-Pesa statement reconciliation, channel {self.channel}"
            + (" (dry run: nothing written)" if self.dry_run else ""),
            f"  period                {period}",
            f"  rows read             {self.rows_read:>6}",
            f"  already known         {len(self.already_known):>6}   {total(self.already_known)}",
            f"  {verb:<21} {self.newly_recorded:>6}   {total(self.recorded_matched + self.recorded_suspense)}",
            f"    matched             {len(self.recorded_matched):>6}",
            f"    to suspense         {len(self.recorded_suspense):>6}",
            f"  amount mismatches     {len(self.mismatches):>6}   (flagged, not applied)",
            f"  skipped               {len(self.skipped):>6}   (withdrawals, not completed, not customer payments)",
            f"  bad rows              {len(self.errors):>6}",
            f"  in Wavu, not in the statement {len(self.missing_from_statement):>4}   (check these)",
            f"  status queries timed out {len(self.status_timeouts):>9}   (ask again with --query RECEIPT)",
        ]
        sections = (
            (
                "Newly recorded" if not self.dry_run else "Would be recorded",
                self.recorded_matched + self.recorded_suspense,
            ),
            ("Amount mismatches", self.mismatches),
            ("In Wavu but not in the statement", self.missing_from_statement),
        )
        for title, items in sections:
            if items:
                out.append(f"{title}:")
                out.extend(f"  line {i.line:<5} {i.receipt:<12} {i.amount:>12,.2f}  {i.detail}" if i.line else
                           f"  {i.receipt:<12} {i.amount:>12,.2f}  {i.detail}" for i in items)  # fmt: skip
        if self.errors:
            out.append("Bad rows (not imported):")
            out.extend(f"  line {e.line:<5} {e.receipt or '-':<12} {e.message}" for e in self.errors)
        if self.status_timeouts:
            out.append("Transaction Status queries that timed out, unanswered since (ask again):")
            for query in self.status_timeouts:
                at = clock.local(query.timed_out_at)
                out.append(f"  {query.receipt or '?':<12} timed out {at:%Y-%m-%d %H:%M}  {query.detail}".rstrip())
        return out


def _skip_reason(row: StatementRow) -> str:
    if row.status.strip().lower() != "completed":
        return f"transaction status {row.status or 'blank'!r}, not Completed"
    if row.paid_in <= 0:
        return "money out (withdrawn)" if row.withdrawn > 0 else "no money in"
    kind = f"{row.reason_type} {row.details}"
    if NOT_CUSTOMER_MONEY.search(kind):
        return f"not a customer payment ({row.reason_type or row.details})"
    return ""


def import_statement(channel: PaymentChannel, data: bytes | str, *, dry_run: bool = False) -> ReconciliationReport:
    """Reconcile an organisation portal statement of `channel` with Wavu's M-Pesa payments.

    Idempotent: each completed money-in row goes through `record_payment` (unique on method "mpesa",
    source = channel shortcode, reference = Receipt No.), each in its own transaction, so importing
    the same statement twice — or racing with the hook delivering the same receipt — records it once.
    A receipt already recorded with the same amount is "already known"; with another amount it is a
    mismatch: reported, nothing applied. New receipts are matched by A/C No. (else "Acc. …" in
    Details) with `selectors.match_account_reference`, like a C2B confirmation; unmatched ones go to
    suspense. `dry_run` reads only and writes nothing. Raises StatementFormatError when the file is
    not a statement; bad rows are in `report.errors` and do not stop the import.
    """
    parsed = parse_statement(data)
    report = ReconciliationReport(channel=channel.shortcode, dry_run=dry_run, errors=list(parsed.errors))
    report.rows_read = len(parsed.rows) + len(parsed.errors)
    if parsed.rows:
        report.period_start = min(r.completed_at for r in parsed.rows)
        report.period_end = max(r.completed_at for r in parsed.rows)
    known = {
        p.reference: p
        for p in Payment.objects.filter(
            method=MPESA, source=channel.shortcode, reference__in={r.receipt for r in parsed.rows}
        )
    }
    seen: dict[str, StatementRow] = {}
    via_stk: set[int] = set()  # payments STK pushes recorded under their CheckoutRequestID
    for row in parsed.rows:
        reason = _skip_reason(row)
        if reason:
            report.skipped.append(ReportItem(row.line, row.receipt, row.paid_in or row.withdrawn, reason))
            continue
        if row.receipt in seen:
            first = seen[row.receipt]
            if first.paid_in != row.paid_in:
                detail = f"line {first.line} has the same receipt for {first.paid_in}"
                report.mismatches.append(ReportItem(row.line, row.receipt, row.paid_in, detail))
            else:
                report.skipped.append(ReportItem(row.line, row.receipt, row.paid_in, f"repeats line {first.line}"))
            continue
        seen[row.receipt] = row
        existing = known.get(row.receipt)
        if existing is None:
            existing, doubt = stk_payment_for(channel, row, dry_run=dry_run)
            if doubt:
                report.mismatches.append(ReportItem(row.line, row.receipt, row.paid_in, doubt))
                continue
            if existing is not None:
                via_stk.add(existing.pk)
        if existing is not None:
            _report_known(report, row, existing)
            continue
        reference = account_reference(row)
        match = selectors.match_account_reference(reference)
        target = report.recorded_matched if match.customer else report.recorded_suspense
        detail = (
            f"{match.customer.account_number} ({match.detail})"
            if match.customer
            else f"suspense: {match.detail} ({reference or 'blank'})"
        )
        if dry_run:
            target.append(ReportItem(row.line, row.receipt, row.paid_in, detail))
            continue
        phone, name = split_other_party(row.other_party)
        try:
            payment, created = record_payment(
                method=MPESA,
                source=channel.shortcode,
                reference=row.receipt,
                amount=row.paid_in,
                customer=match.customer,
                received_at=row.completed_at,
                payer_name=name[:160],
                payer_phone=phone[:80],
                account_reference=reference[:60],
                notes=FOUND_NOTE,
            )
        except DuplicateReferenceMismatch as exc:
            report.mismatches.append(ReportItem(row.line, row.receipt, row.paid_in, exc.message))
            continue
        except ValidationError as exc:
            report.errors.append(RowProblem(row.line, row.receipt, "; ".join(exc.messages)))
            continue
        if created:
            target.append(ReportItem(row.line, row.receipt, row.paid_in, detail))
        else:  # the hook delivered it meanwhile
            _report_known(report, row, payment)
    if report.period_start is not None:
        in_statement = {r.receipt for r in parsed.rows}
        others = (
            Payment.objects.filter(
                method=MPESA,
                source=channel.shortcode,
                received_at__gte=report.period_start,
                received_at__lte=report.period_end,
            )
            .exclude(reference__in=in_statement)
            .exclude(pk__in=via_stk)
            .select_related("customer")
            .order_by("received_at", "pk")
        )
        for payment in others:
            who = payment.customer.account_number if payment.customer else "suspense"
            report.missing_from_statement.append(
                ReportItem(
                    0,
                    payment.reference,
                    payment.amount,
                    f"received {clock.local(payment.received_at):%Y-%m-%d %H:%M}, {who}, {payment.status}",
                )  # fmt: skip
            )
    report.errors.sort(key=lambda e: e.line)
    report.status_timeouts = timed_out_status_queries(channel)
    return report


STK_QUERY_WINDOW = dt.timedelta(minutes=20)  # a push is paid within its prompt's life; the janitor gives up at 15


def stk_payment_for(channel: PaymentChannel, row: StatementRow, *, dry_run: bool = False) -> tuple[Payment | None, str]:
    """The payment an STK push recorded for this statement row under another reference, or (None, "").

    An STK push paid by the janitor's query is recorded with its CheckoutRequestID as the reference
    (the query does not return the receipt). Its receipt is the push whose late callback added the
    receipt to the request, else the one push on this channel paid by query, still without a receipt,
    for the same amount, started at most STK_QUERY_WINDOW before the row's completion time: that
    push's request takes the receipt (audited; not in a dry run), and the row is "already known"
    rather than credited a second time. Two or more such pushes: (None, why), for a person to decide.
    """
    from .models import StkRequest

    paid = StkRequest.objects.filter(channel=channel, status=StkRequest.Status.PAID, payment__isnull=False)
    by_receipt = paid.filter(receipt=row.receipt).select_related("payment").first()
    if by_receipt is not None:
        return by_receipt.payment, ""
    candidates = list(
        paid.filter(
            receipt="",
            payment__amount=row.paid_in,
            payment__reference=F("checkout_request_id"),
            created_at__gte=row.completed_at - STK_QUERY_WINDOW,
            created_at__lte=row.completed_at,
        ).select_related("payment")[:2]
    )
    if len(candidates) > 1:
        return None, "more than one STK push paid by query could be this receipt: match it by hand"
    if not candidates:
        return None, ""
    request = candidates[0]
    if not dry_run:
        with transaction.atomic():
            locked = StkRequest.objects.select_for_update().get(pk=request.pk)
            if not locked.receipt:
                before = audit.snapshot(locked)
                locked.receipt = row.receipt
                locked.save(update_fields=["receipt"])
                audit.record(locked, AuditEvent.Action.UPDATE, before=before, verb="stk receipt from statement")
    return request.payment, ""


def _report_known(report: ReconciliationReport, row: StatementRow, payment: Payment) -> None:
    if payment.amount != row.paid_in:
        report.mismatches.append(ReportItem(row.line, row.receipt, row.paid_in,
                                            f"Wavu recorded {payment.amount} (payment {payment.pk})"))  # fmt: skip
    else:
        report.already_known.append(ReportItem(row.line, row.receipt, row.paid_in, f"payment {payment.pk}"))


# --- Transaction Status --------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusQuery:
    """What happened to one receipt: "known" (already a payment, not asked), "asked" (Daraja accepted
    the query; `conversation_id` identifies the answer to come), "invalid" or "error" (`detail`)."""

    receipt: str
    outcome: str
    detail: str = ""
    conversation_id: str = ""


def status_urls(channel: PaymentChannel) -> tuple[str, str]:
    """The absolute result and timeout URLs of the channel's Transaction Status hooks."""
    base = settings.WAVU_PUBLIC_URL
    return (
        base + reverse("mpesa-hooks:status-result", args=[channel.hook_token]),
        base + reverse("mpesa-hooks:status-timeout", args=[channel.hook_token]),
    )


def query_unknown_receipts(channel: PaymentChannel, receipts, *, client=None) -> list[StatusQuery]:
    """Ask Daraja's Transaction Status about each receipt Wavu has no payment for.

    Receipts are cleaned (spaces, case); a receipt already recorded on the channel is "known" and not
    asked; an invalid one is "invalid". Each query Daraja accepts is audited on the channel (verb
    `transaction_status_query`, with the receipt and ConversationIDs, so a timeout that names only its
    ConversationID can be traced to its receipt); nothing else is written here: the answers arrive at
    the status hook, are stored as InboundCallback rows and turned into payments by `apply_status_result`.
    Safe to repeat (the query is read-only at Safaricom). `client`: a DarajaClient (tests); by default
    one is opened for the channel and closed afterwards.
    """
    from .daraja import DarajaClient, DarajaError

    cleaned = []
    for raw in receipts:
        receipt = re.sub(r"\s+", "", str(raw or "")).upper()
        if receipt and receipt not in cleaned:
            cleaned.append(receipt)
    known = set(
        Payment.objects.filter(method=MPESA, source=channel.shortcode, reference__in=cleaned).values_list(
            "reference", flat=True
        )
    )
    result_url, timeout_url = status_urls(channel)
    own = client is None
    client = client or DarajaClient(channel)
    answers = []
    try:
        for receipt in cleaned:
            if receipt in known:
                answers.append(StatusQuery(receipt, "known", "already recorded in Wavu"))
                continue
            if not RECEIPT_RE.match(receipt):
                answers.append(StatusQuery(receipt, "invalid", "not an M-Pesa receipt number"))
                continue
            try:
                accepted = client.transaction_status(receipt, result_url, timeout_url, remarks="Reconciliation")
            except (DarajaError, ValidationError) as exc:
                answers.append(StatusQuery(receipt, "error", getattr(exc, "message", None) or str(exc)))
                continue
            asked = {
                "receipt": receipt,
                "conversation_id": accepted.conversation_id,
                "originator_conversation_id": accepted.originator_conversation_id,
            }
            audit.record(channel, AuditEvent.Action.ACTION, after=asked, verb=STATUS_QUERY_VERB)
            answers.append(
                StatusQuery(receipt, "asked", "answer will arrive at the status hook", accepted.conversation_id)
            )
    finally:
        if own:
            client.close()
    return answers


@dataclass(frozen=True)
class StatusResult:
    result_code: str
    result_desc: str
    receipt: str
    amount: Decimal | None
    status: str
    finalised_at: dt.datetime | None
    debit_party: str
    parameters: dict


def _items(value) -> list:
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def parse_status_result(body: bytes | str) -> StatusResult:
    """A Transaction Status result (mpesa-daraja.md §1.8): ResultParameter as an object or an array,
    keys with spaces, items without a Value. Raises BadCallback when there is no Result object, when
    Amount is given but is no amount as Daraja writes one (`payloads.daraja_amount`), when
    FinalisedTime is given but is no plausible date (`payloads.daraja_time`), or when the body holds
    text PostgreSQL cannot store (NUL)."""
    data = load_json_object(body)
    require_storable(data)
    result = data.get("Result")
    if not isinstance(result, dict):
        raise BadCallback("no_result", "the body has no Result object")
    params = {}
    for item in _items((result.get("ResultParameters") or {}).get("ResultParameter")):
        if "Key" in item:
            params[str(item["Key"])] = item.get("Value")
    amount = None
    if params.get("Amount") not in (None, ""):
        try:
            amount = daraja_amount(params["Amount"], field="Amount")
        except ValidationError as exc:
            raise BadCallback("bad_amount", "; ".join(exc.messages), exc.message_dict) from None
    finalised = None
    if params.get("FinalisedTime") not in (None, ""):
        try:
            finalised = daraja_time(params["FinalisedTime"], field="FinalisedTime")
        except ValueError as exc:
            raise BadCallback("bad_time", str(exc), {"FinalisedTime": [str(exc)]}) from None
    return StatusResult(
        result_code=str(result.get("ResultCode", "")),
        result_desc=str(result.get("ResultDesc", "")),
        receipt=str(params.get("ReceiptNo") or result.get("TransactionID") or "").strip().upper(),
        amount=amount,
        status=str(params.get("TransactionStatus") or ""),
        finalised_at=finalised,
        debit_party=str(params.get("DebitPartyName") or ""),
        parameters=params,
    )


def apply_status_result(callback_id: int) -> InboundCallback | None:
    """Turn a stored Transaction Status result into a payment, at most once (to suspense: the result
    carries no account reference; staff match it like any suspense payment).

    Locks the callback row; only a "received"/"failed" status_result is handled. Completed receipt →
    `record_payment` (a receipt already known → "duplicate"; another amount → "mismatch"); an
    unsuccessful query or a transaction not completed → "processed" with the reason, nothing recorded.
    Any other error rolls the attempt back and leaves the callback "failed" with `last_error`, for
    `services.retry_callbacks`. Called by `services.process_callback` for every stored status result.
    """
    try:
        with transaction.atomic():
            callback = InboundCallback.objects.select_for_update().filter(pk=callback_id).first()
            if (
                callback is None
                or callback.kind != InboundCallback.Kind.STATUS_RESULT
                or callback.status not in (InboundCallback.Status.RECEIVED, InboundCallback.Status.FAILED)
            ):
                return callback
            return _apply_status_result(callback)
    except Exception as exc:  # noqa: BLE001 - the failure is recorded on the callback and retried
        logger.exception("Transaction Status result %s could not be processed", callback_id)
        return mark_failed(callback_id, exc)


def _apply_status_result(callback: InboundCallback) -> InboundCallback:
    callback.attempts += 1
    status, payment = InboundCallback.Status.PROCESSED, None
    try:
        result = parse_status_result(callback.body)
    except BadCallback as exc:
        status, outcome = InboundCallback.Status.REJECTED, exc.message
    else:
        if result.result_code != "0":
            outcome = f"query failed: {result.result_code} {result.result_desc}"
        elif result.status.lower() != "completed" or not result.receipt or not result.amount:
            outcome = f"receipt {result.receipt or '?'} is {result.status or 'of unknown status'}; nothing recorded"
        else:
            phone, name = split_other_party(result.debit_party)
            at = result.finalised_at or callback.received_at
            try:
                payment, created = record_payment(
                    method=MPESA,
                    source=callback.channel.shortcode,
                    reference=result.receipt,
                    amount=result.amount,
                    received_at=min(at, clock.now()),
                    payer_name=name[:160],
                    payer_phone=phone[:80],
                    notes=FOUND_BY_STATUS_NOTE,
                )
            except DuplicateReferenceMismatch as exc:
                status, outcome = InboundCallback.Status.MISMATCH, exc.message
            except ValidationError as exc:
                status, outcome = InboundCallback.Status.REJECTED, "; ".join(exc.messages)
            else:
                if created:
                    outcome = f"receipt {result.receipt} recorded to suspense ({FOUND_BY_STATUS_NOTE})"
                else:
                    status = InboundCallback.Status.DUPLICATE
                    outcome = f"already recorded: receipt {result.receipt} is payment {payment.pk}"
    callback.status, callback.outcome, callback.payment = status, outcome[:300], payment
    callback.reference = callback.reference or (payment.reference if payment else "")
    callback.processed_at = clock.now()
    callback.save(update_fields=["status", "outcome", "payment", "processed_at", "attempts", "reference"])
    return callback


# --- Transaction Status timeouts -----------------------------------------------------------------------


@dataclass(frozen=True)
class TimedOutQuery:
    """A Transaction Status query Safaricom timed out on (its QueueTimeOutURL was called) and that no
    result has answered since: staff should ask again. `receipt` is "" when neither the timeout nor
    Wavu's record of the query names it; `callback_id` is the stored timeout."""

    channel: str
    receipt: str
    conversation_id: str
    timed_out_at: dt.datetime
    callback_id: int
    detail: str = ""


def _status_body_ids(body: str) -> tuple[str, set[str]]:
    """(receipt, {ConversationID, OriginatorConversationID}) that a status result or timeout body names.
    The fields are read inside `Result`, or at the top level when there is no Result object (the
    timeout's shape is not documented); the receipt is ReceiptNo, else TransactionID."""
    try:
        data = load_json_object(body)
    except BadCallback:
        return "", set()
    result = data["Result"] if isinstance(data.get("Result"), dict) else data
    params = {}
    for item in _items((result.get("ResultParameters") or {}).get("ResultParameter")):
        if "Key" in item:
            params[str(item["Key"])] = item.get("Value")
    receipt = params.get("ReceiptNo") or result.get("TransactionID") or ""
    ids = {
        value.strip()
        for value in (result.get("ConversationID"), result.get("OriginatorConversationID"))
        if isinstance(value, str) and value.strip()
    }
    return (receipt.strip().upper() if isinstance(receipt, str) else ""), ids


def _asked_receipts(channel_ids) -> dict[tuple[int, str], str]:
    """{(channel id, ConversationID or OriginatorConversationID): receipt} of the audited queries."""
    asked = {}
    events = AuditEvent.objects.filter(
        verb=STATUS_QUERY_VERB,
        object_type=PaymentChannel._meta.label_lower,
        object_id__in={str(pk) for pk in channel_ids},
    ).values_list("object_id", "after")
    for object_id, after in events:
        for key in ("conversation_id", "originator_conversation_id"):
            if (after or {}).get(key):
                asked[(int(object_id), after[key])] = after.get("receipt") or ""
    return asked


def timed_out_status_queries(channel: PaymentChannel | None = None) -> list[TimedOutQuery]:
    """The Transaction Status queries to ask again (of `channel`, or of every channel), oldest first.

    A stored status timeout (not rejected) counts until a later status result (not rejected) answers
    the same receipt, or the receipt has become a payment on the channel; a receipt that timed out
    twice is listed once, with its latest timeout. A timeout that names only ConversationIDs is traced
    to its receipt through the audited query (`query_unknown_receipts`); one that cannot be traced is
    listed with receipt "". Reads only."""
    Kind, Status = InboundCallback.Kind, InboundCallback.Status
    timeouts = InboundCallback.objects.filter(kind=Kind.STATUS_TIMEOUT).exclude(status=Status.REJECTED)
    if channel is not None:
        timeouts = timeouts.filter(channel=channel)
    timeouts = list(timeouts.select_related("channel").order_by("received_at", "pk"))
    if not timeouts:
        return []
    asked = _asked_receipts({timeout.channel_id for timeout in timeouts})
    latest: dict[tuple[int, str], tuple[int, TimedOutQuery]] = {}  # (channel, receipt) → (channel, query)
    for timeout in timeouts:
        receipt, ids = _status_body_ids(timeout.body)
        traced = [asked[(timeout.channel_id, i)] for i in sorted(ids) if (timeout.channel_id, i) in asked]
        receipt = receipt or next(iter(traced), "")
        conversation = min(ids, default="")
        detail = "" if receipt else f"the timeout names no receipt (ConversationID {conversation or '?'})"
        query = TimedOutQuery(timeout.channel.shortcode, receipt, conversation, timeout.received_at, timeout.pk, detail)
        latest[(timeout.channel_id, receipt or f"callback {timeout.pk}")] = (timeout.channel_id, query)

    receipts = {query.receipt for _, query in latest.values() if query.receipt}
    paid = set(Payment.objects.filter(method=MPESA, reference__in=receipts).values_list("source", "reference"))
    answered: dict[tuple[int, str], dt.datetime] = {}  # (channel, receipt) → when the latest result arrived
    results = InboundCallback.objects.filter(
        kind=Kind.STATUS_RESULT,
        channel_id__in={channel_id for channel_id, _ in latest.values()},
        received_at__gte=min(query.timed_out_at for _, query in latest.values()),
    ).exclude(status=Status.REJECTED)
    for channel_id, received_at, body in results.values_list("channel_id", "received_at", "body"):
        receipt, ids = _status_body_ids(body)
        for named in {receipt, *(asked.get((channel_id, i), "") for i in ids)} - {""}:
            answered[(channel_id, named)] = max(received_at, answered.get((channel_id, named), received_at))

    def settled(channel_id: int, query: TimedOutQuery) -> bool:
        if not query.receipt:
            return False
        later = answered.get((channel_id, query.receipt))
        return (query.channel, query.receipt) in paid or (later is not None and later > query.timed_out_at)

    pending = [query for channel_id, query in latest.values() if not settled(channel_id, query)]
    return sorted(pending, key=lambda query: (query.timed_out_at, query.callback_id))

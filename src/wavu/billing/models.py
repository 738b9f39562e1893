"""Invoices and credit notes.

An invoice is built as a draft, then issued: issuing allocates a gap-free number in its series,
freezes the buyer's details and totals, and books one journal entry. From then on the number,
lines and amounts cannot change (database triggers refuse it); only the settlement columns
(`amount_paid`, `amount_credited`) and the status derived from them move. It becomes void only
through a full credit note.
"""

from django.db import models
from django.db.models.functions import Round

from wavu.catalog.models import AddOn, Plan
from wavu.core.db import RowProtection
from wavu.core.tax import TaxClass
from wavu.customers.models import Customer
from wavu.subscriptions.models import Subscription

AMOUNT = {"max_digits": 14, "decimal_places": 2}


def _cents(expression):
    """Sums in check constraints are rounded to the cent: SQLite keeps decimals as binary floats,
    where 2154.45 + 430.89 + 413.66 is not 2999.00. On PostgreSQL (exact numeric) it changes nothing."""
    return Round(expression, 2)


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ISSUED = "issued", "Issued"
        PARTIALLY_PAID = "partially_paid", "Partially paid"
        PAID = "paid", "Paid"
        VOID = "void", "Void"

    # status → statuses it may move to (settlement moves between issued/partially_paid/paid both ways,
    # because a reversed payment re-opens an invoice).
    TRANSITIONS = {
        Status.DRAFT: {Status.ISSUED},
        Status.ISSUED: {Status.PARTIALLY_PAID, Status.PAID, Status.VOID},
        Status.PARTIALLY_PAID: {Status.ISSUED, Status.PAID, Status.VOID},
        Status.PAID: {Status.ISSUED, Status.PARTIALLY_PAID, Status.VOID},
        Status.VOID: set(),
    }

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.PROTECT, related_name="invoices"
    )
    series = models.CharField(max_length=10, default="INV")
    number = models.CharField(max_length=30, null=True, blank=True, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    currency = models.CharField(max_length=3, default="KES")
    issue_date = models.DateField(null=True, blank=True, db_index=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    buyer_name = models.CharField(max_length=160, blank=True)
    buyer_pin = models.CharField(max_length=11, blank=True)
    buyer_address = models.CharField(max_length=300, blank=True)
    buyer_account_number = models.CharField(max_length=12, blank=True)
    net_total = models.DecimalField(**AMOUNT, default=0)
    excise_total = models.DecimalField(**AMOUNT, default=0)
    vat_total = models.DecimalField(**AMOUNT, default=0)
    total = models.DecimalField(**AMOUNT, default=0)
    amount_paid = models.DecimalField(**AMOUNT, default=0)
    amount_credited = models.DecimalField(**AMOUNT, default=0)
    notes = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-issue_date", "-id"]
        indexes = [
            models.Index(fields=["customer", "status", "issue_date"]),
            models.Index(fields=["status", "due_date"], name="invoice_open_by_due_date"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period_start"],
                condition=models.Q(subscription__isnull=False, period_start__isnull=False),
                name="invoice_one_per_subscription_period",
            ),
            models.CheckConstraint(
                condition=models.Q(status="draft") | models.Q(number__isnull=False),
                name="invoice_issued_has_number",
            ),
            models.CheckConstraint(
                condition=models.Q(amount_paid__gte=0, amount_credited__gte=0),
                name="invoice_settlement_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(total__gte=_cents(models.F("amount_paid") + models.F("amount_credited"))),
                name="invoice_not_overpaid",
            ),
        ]

    def __str__(self):
        return self.number or f"draft #{self.pk}"

    @property
    def outstanding(self):
        return self.total - self.amount_paid - self.amount_credited

    @property
    def is_issued(self) -> bool:
        return self.status != self.Status.DRAFT


class InvoiceLine(models.Model):
    """One itemised line. `unit_price` and `gross` are tax-inclusive; net + excise + vat == gross."""

    class Kind(models.TextChoices):
        SUBSCRIPTION = "subscription", "Service period"
        ADDON = "addon", "Add-on"
        ONE_OFF = "one_off", "One-off charge"
        PRORATION = "proration", "Proration"
        ADJUSTMENT = "adjustment", "Adjustment"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=12, choices=Kind.choices)
    description = models.CharField(max_length=200)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    quantity = models.DecimalField(max_digits=10, decimal_places=3, default=1)
    unit_price = models.DecimalField(**AMOUNT)
    gross = models.DecimalField(**AMOUNT)
    net = models.DecimalField(**AMOUNT)
    excise = models.DecimalField(**AMOUNT)
    vat = models.DecimalField(**AMOUNT)
    tax_class = models.CharField(max_length=20, choices=TaxClass.choices)
    tax_band = models.CharField(max_length=1)
    vat_rate = models.DecimalField(max_digits=6, decimal_places=4)
    excise_rate = models.DecimalField(max_digits=6, decimal_places=4)
    subscription = models.ForeignKey(Subscription, null=True, blank=True, on_delete=models.PROTECT)
    plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.PROTECT)
    addon = models.ForeignKey(AddOn, null=True, blank=True, on_delete=models.PROTECT)

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "position"], name="invoiceline_unique_position"),
            models.CheckConstraint(
                condition=models.Q(gross=_cents(models.F("net") + models.F("excise") + models.F("vat"))),
                name="invoiceline_parts_add_up",
            ),
        ]

    def __str__(self):
        return self.description


class CreditNote(models.Model):
    """A credit against one issued invoice (at most 12 months old, never more than what is left)."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="credit_notes")
    series = models.CharField(max_length=10, default="CN")
    number = models.CharField(max_length=30, unique=True)
    currency = models.CharField(max_length=3, default="KES")
    issue_date = models.DateField(db_index=True)
    issued_at = models.DateTimeField()
    reason = models.CharField(max_length=300)
    net_total = models.DecimalField(**AMOUNT)
    excise_total = models.DecimalField(**AMOUNT)
    vat_total = models.DecimalField(**AMOUNT)
    total = models.DecimalField(**AMOUNT)

    class Meta:
        ordering = ["-issue_date", "-id"]
        constraints = [models.CheckConstraint(condition=models.Q(total__gt=0), name="creditnote_positive")]

    def __str__(self):
        return self.number


class CreditNoteLine(models.Model):
    credit_note = models.ForeignKey(CreditNote, on_delete=models.PROTECT, related_name="lines")
    invoice_line = models.ForeignKey(InvoiceLine, on_delete=models.PROTECT, related_name="credit_lines")
    description = models.CharField(max_length=200)
    gross = models.DecimalField(**AMOUNT)
    net = models.DecimalField(**AMOUNT)
    excise = models.DecimalField(**AMOUNT)
    vat = models.DecimalField(**AMOUNT)

    class Meta:
        ordering = ["credit_note", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(gross__gt=0), name="creditline_positive"),
            models.CheckConstraint(
                condition=models.Q(gross=_cents(models.F("net") + models.F("excise") + models.F("vat"))),
                name="creditline_parts_add_up",
            ),
        ]

    def __str__(self):
        return self.description


class BillingRun(models.Model):
    """One day's postpaid billing. Unique per day: running a day again resumes it (a crash, a
    retry or a second worker continues where the last attempt stopped; nothing is billed twice,
    because each invoice is unique on (subscription, period start))."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    run_date = models.DateField(unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=1)
    billed_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    flagged_count = models.PositiveIntegerField(default=0)
    total_amount = models.DecimalField(**AMOUNT, default=0)
    started_by = models.CharField(max_length=120)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-run_date"]

    def __str__(self):
        return f"billing run {self.run_date}"


class BillingRunFlag(models.Model):
    """A subscription a billing run could not bill, and why. The run skipped it and went on;
    it stays due, so the next run tries again once staff fixed the cause."""

    run = models.ForeignKey(BillingRun, on_delete=models.CASCADE, related_name="flags")
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="billing_flags")
    code = models.CharField(max_length=40)
    reason = models.CharField(max_length=300)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "subscription"], name="billingrunflag_once_per_run"),
        ]

    def __str__(self):
        return f"{self.subscription_id}: {self.reason}"


class DunningNotice(models.Model):
    """One dunning step taken for an overdue invoice: a reminder at an offset from the due date,
    or the suspension after the grace period. Unique per (invoice, stage), so a job that runs
    twice never reminds or suspends twice."""

    class Stage(models.TextChoices):
        REMINDER = "reminder", "Reminder"
        SUSPENSION = "suspension", "Suspension"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="dunning_notices")
    stage = models.CharField(max_length=12, choices=Stage.choices)
    offset_days = models.SmallIntegerField(help_text="days after the due date (negative: before)")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["invoice", "offset_days", "id"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "stage", "offset_days"], name="dunningnotice_once_per_step"),
        ]

    def __str__(self):
        return f"{self.invoice_id} {self.stage} {self.offset_days:+d}"


class PaymentPromise(models.Model):
    """A promise to pay granted by staff: no suspension for this service's overdue debt until
    `until`. At most one per subscription and billing period (database constraint)."""

    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="payment_promises")
    period_start = models.DateTimeField(help_text="the billing period the promise was granted in")
    until = models.DateField()
    reason = models.CharField(max_length=300)
    granted_by = models.CharField(max_length=120)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "period_start"], name="paymentpromise_once_per_period"),
        ]

    def __str__(self):
        return f"{self.subscription_id} until {self.until}"


# Database triggers (installed after every migrate, see core/db.py) that make issued records immutable.
_FROZEN_INVOICE_COLUMNS = (
    "customer_id", "subscription_id", "series", "number", "currency", "issue_date", "issued_at", "due_date",
    "period_start", "period_end", "buyer_name", "buyer_pin", "buyer_address", "buyer_account_number",
    "net_total", "excise_total", "vat_total", "total", "notes", "created_at",
)  # fmt: skip
_PARENT_ISSUED_NEW = "(SELECT status FROM billing_invoice WHERE id = NEW.invoice_id) <> 'draft'"
_PARENT_ISSUED_OLD = "(SELECT status FROM billing_invoice WHERE id = OLD.invoice_id) <> 'draft'"
_CN = "immutable: a credit note cannot be changed or deleted"
ROW_PROTECTIONS = [
    RowProtection("invoice_issued_frozen", "billing_invoice", "UPDATE", "OLD.status <> 'draft'",
                  _FROZEN_INVOICE_COLUMNS, "immutable: an issued invoice cannot be changed; issue a credit note"),
    RowProtection("invoice_void_final", "billing_invoice", "UPDATE", "OLD.status = 'void'",
                  message="immutable: a void invoice cannot change"),
    RowProtection("invoice_issued_no_delete", "billing_invoice", "DELETE", "OLD.status <> 'draft'",
                  message="immutable: an issued invoice cannot be deleted"),
    RowProtection("invoiceline_issued_no_insert", "billing_invoiceline", "INSERT", _PARENT_ISSUED_NEW,
                  message="immutable: lines cannot be added to an issued invoice"),
    RowProtection("invoiceline_issued_no_update", "billing_invoiceline", "UPDATE", _PARENT_ISSUED_OLD,
                  message="immutable: lines of an issued invoice cannot be changed"),
    RowProtection("invoiceline_issued_no_delete", "billing_invoiceline", "DELETE", _PARENT_ISSUED_OLD,
                  message="immutable: lines of an issued invoice cannot be deleted"),
    RowProtection("creditnote_no_update", "billing_creditnote", "UPDATE", message=_CN),
    RowProtection("creditnote_no_delete", "billing_creditnote", "DELETE", message=_CN),
    RowProtection("creditnoteline_no_update", "billing_creditnoteline", "UPDATE", message=_CN),
    RowProtection("creditnoteline_no_delete", "billing_creditnoteline", "DELETE", message=_CN),
]  # fmt: skip

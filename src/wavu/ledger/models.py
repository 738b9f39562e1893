"""The ledger: a chart of accounts and an append-only, double-entry journal.

Every movement of money is one `JournalEntry` whose `Posting`s sum to zero (debits positive,
credits negative). Entries and postings are never updated or deleted (database triggers refuse
it); a mistake is corrected by a reversing entry. Customer balances are sums of postings.
"""

from django.db import models

from wavu.core.db import RowProtection
from wavu.customers.models import Customer


class Account(models.Model):
    class Type(models.TextChoices):
        ASSET = "asset", "Asset"
        LIABILITY = "liability", "Liability"
        EQUITY = "equity", "Equity"
        REVENUE = "revenue", "Revenue"
        EXPENSE = "expense", "Expense"

    code = models.CharField(max_length=10, unique=True)
    name = models.CharField(max_length=100)
    type = models.CharField(max_length=10, choices=Type.choices)
    is_customer_subledger = models.BooleanField(
        default=False, help_text="postings carry a customer (receivables, customer credit)"
    )

    class Meta:
        ordering = ["code"]

    def __str__(self):
        return f"{self.code} {self.name}"


class JournalEntry(models.Model):
    class Kind(models.TextChoices):
        INVOICE = "invoice", "Invoice"
        CREDIT_NOTE = "credit_note", "Credit note"
        PAYMENT = "payment", "Payment"
        ALLOCATION = "allocation", "Allocation"
        REFUND = "refund", "Refund"
        REVERSAL = "reversal", "Reversal"
        ADJUSTMENT = "adjustment", "Adjustment"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    posted_at = models.DateTimeField(db_index=True)
    memo = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, default="KES")
    source_type = models.CharField(max_length=40, help_text="app_label.model of the record this entry books")
    source_id = models.CharField(max_length=40)
    reverses = models.OneToOneField("self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversed_by")
    actor_label = models.CharField(max_length=120)

    class Meta:
        ordering = ["posted_at", "id"]
        verbose_name_plural = "journal entries"
        constraints = [
            # A record is booked once per kind: the database refuses a second invoice entry etc.
            models.UniqueConstraint(fields=["source_type", "source_id", "kind"], name="journal_one_entry_per_source"),
        ]

    def __str__(self):
        return f"JE{self.pk} {self.kind} {self.memo}"


class Posting(models.Model):
    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="postings")
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="postings")
    amount = models.DecimalField(max_digits=14, decimal_places=2, help_text="debit positive, credit negative")

    class Meta:
        ordering = ["entry", "id"]
        indexes = [models.Index(fields=["customer", "account"]), models.Index(fields=["account", "entry"])]
        constraints = [models.CheckConstraint(condition=~models.Q(amount=0), name="posting_not_zero")]

    def __str__(self):
        return f"{self.account.code} {self.amount}"


# Database triggers (installed after every migrate, see core/db.py): the journal is append-only.
_APPEND_ONLY = "immutable: the journal is append-only; post a reversal"
ROW_PROTECTIONS = [
    RowProtection("ledger_entry_no_update", "ledger_journalentry", "UPDATE", message=_APPEND_ONLY),
    RowProtection("ledger_entry_no_delete", "ledger_journalentry", "DELETE", message=_APPEND_ONLY),
    RowProtection("ledger_posting_no_update", "ledger_posting", "UPDATE", message=_APPEND_ONLY),
    RowProtection("ledger_posting_no_delete", "ledger_posting", "DELETE", message=_APPEND_ONLY),
]

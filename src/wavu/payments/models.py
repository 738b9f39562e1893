"""Payments, their allocation to invoices, and refunds.

One payment core for every channel. A payment is unique on (method, source, reference): the
database refuses a second copy of the same receipt, so a channel that delivers the same receipt
twice (M-Pesa retries, a cashier double-clicking) is credited once. Amounts never change;
a mistaken payment is reversed (a new journal entry), not edited.
"""

from django.db import models

from wavu.billing.models import Invoice
from wavu.core.db import RowProtection
from wavu.customers.models import Customer

AMOUNT = {"max_digits": 14, "decimal_places": 2}


class Method(models.TextChoices):
    CASH = "cash", "Cash"
    BANK_TRANSFER = "bank_transfer", "Bank transfer"
    CHEQUE = "cheque", "Cheque"
    MPESA = "mpesa", "M-Pesa"
    AIRTEL = "airtel", "Airtel Money"
    CARD = "card", "Card"


MANUAL_METHODS = (Method.CASH, Method.BANK_TRANSFER, Method.CHEQUE)


class Payment(models.Model):
    class Status(models.TextChoices):
        UNMATCHED = "unmatched", "Unmatched (suspense)"
        RECEIVED = "received", "Received"
        REVERSED = "reversed", "Reversed"

    method = models.CharField(max_length=16, choices=Method.choices)
    source = models.CharField(
        max_length=40, blank=True, default="", help_text="channel within the method, e.g. paybill 123456"
    )
    reference = models.CharField(max_length=60, help_text="receipt / transfer / cheque number")
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="payments")
    amount = models.DecimalField(**AMOUNT)
    currency = models.CharField(max_length=3, default="KES")
    received_at = models.DateTimeField(db_index=True)
    recorded_at = models.DateTimeField()
    payer_name = models.CharField(max_length=160, blank=True)
    payer_phone = models.CharField(max_length=80, blank=True, help_text="as the channel sent it; may be masked")
    account_reference = models.CharField(max_length=60, blank=True, help_text="what the payer typed")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED, db_index=True)
    amount_allocated = models.DecimalField(**AMOUNT, default=0)
    amount_refunded = models.DecimalField(**AMOUNT, default=0)
    notes = models.CharField(max_length=300, blank=True)
    recorded_by = models.CharField(max_length=120)
    reversed_at = models.DateTimeField(null=True, blank=True)
    reversal_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["customer", "received_at"])]
        constraints = [
            models.UniqueConstraint(fields=["method", "source", "reference"], name="payment_unique_receipt"),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="payment_amount_positive"),
            # A payment reversed straight out of suspense never had a customer.
            models.CheckConstraint(
                condition=models.Q(status__in=["unmatched", "reversed"]) | models.Q(customer__isnull=False),
                name="payment_matched_has_customer",
            ),
        ]

    def __str__(self):
        return f"{self.get_method_display()} {self.reference} {self.currency} {self.amount}"

    @property
    def unallocated(self):
        return self.amount - self.amount_allocated - self.amount_refunded


class Allocation(models.Model):
    """Part of a payment applied to an invoice. Negative rows undo earlier ones (payment reversal)."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="allocations")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="allocations")
    amount = models.DecimalField(**AMOUNT)
    created_at = models.DateTimeField()
    reverses = models.OneToOneField("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.CheckConstraint(condition=~models.Q(amount=0), name="allocation_not_zero")]

    def __str__(self):
        return f"{self.amount} of {self.payment_id} → {self.invoice_id}"


class Refund(models.Model):
    """Money paid back to a customer out of their credit (cash, bank, or M-Pesa B2C later)."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="refunds")
    amount = models.DecimalField(**AMOUNT)
    currency = models.CharField(max_length=3, default="KES")
    method = models.CharField(max_length=16, choices=Method.choices)
    reference = models.CharField(max_length=60)
    refunded_at = models.DateTimeField()
    reason = models.CharField(max_length=300)
    recorded_by = models.CharField(max_length=120)

    class Meta:
        ordering = ["-refunded_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["method", "reference"], name="refund_unique_reference"),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="refund_amount_positive"),
        ]

    def __str__(self):
        return f"refund {self.reference} {self.amount}"


# Database triggers (installed after every migrate, see core/db.py): receipts are immutable.
_PAYMENT_FROZEN = (
    "method", "source", "reference", "amount", "currency", "received_at", "recorded_at",
    "payer_name", "payer_phone", "account_reference", "recorded_by",
)  # fmt: skip
_ALLOCATIONS = "immutable: allocations are append-only"
ROW_PROTECTIONS = [
    RowProtection("payment_receipt_frozen", "payments_payment", "UPDATE", changed=_PAYMENT_FROZEN,
                  message="immutable: a recorded payment cannot be changed; reverse it"),
    RowProtection("payment_customer_set_once", "payments_payment", "UPDATE", "OLD.customer_id IS NOT NULL",
                  ("customer_id",), "immutable: a matched payment cannot move to another customer; reverse it"),
    RowProtection("payment_no_delete", "payments_payment", "DELETE",
                  message="immutable: a payment cannot be deleted; reverse it"),
    RowProtection("allocation_no_update", "payments_allocation", "UPDATE", message=_ALLOCATIONS),
    RowProtection("allocation_no_delete", "payments_allocation", "DELETE", message=_ALLOCATIONS),
    RowProtection("refund_no_update", "payments_refund", "UPDATE", message="immutable: a refund cannot be changed"),
    RowProtection("refund_no_delete", "payments_refund", "DELETE", message="immutable: a refund cannot be deleted"),
]  # fmt: skip

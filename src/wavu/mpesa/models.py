"""M-Pesa: the ISP's paybill and till channels, Daraja access tokens, and every request Daraja sent us.

A `PaymentChannel` is one paybill or till with its Daraja credentials (encrypted at rest), its
environment (sandbox, production or the local simulator) and a random hook token that appears in
its callback paths. Every request that reaches a hook is kept as an `InboundCallback` before it is
processed (raw body, headers, source address, time, outcome), so nothing Safaricom sends is lost
and a failed or stuck processing can be retried. Payments themselves live in `payments` (method
"mpesa", source = the channel's shortcode, reference = the M-Pesa receipt / TransID), whose unique
constraint makes a receipt credit once however often it is delivered.
"""

from __future__ import annotations

import secrets

from django.db import models
from django.db.models.functions import Coalesce

from wavu.core.fields import EncryptedTextField

# Safaricom's published callback source addresses (shared/reference/mpesa-daraja.md §security).
SAFARICOM_CALLBACK_IPS = (
    "196.201.214.200 196.201.214.206 196.201.213.114 196.201.214.207 196.201.214.208 196.201.213.44 "
    "196.201.212.127 196.201.212.138 196.201.212.129 196.201.212.136 196.201.212.74 196.201.212.69 "
    "196.201.212.128 196.201.212.132 196.201.214.212"
)
HOOK_TOKEN_BYTES = 32  # → 43 url-safe characters


# Safaricom refuses callback URLs containing these words, in any case (channels.check_public_url).
FORBIDDEN_URL_WORDS = ("m-pesa", "mpesa", "safaricom", "query", "sql", "exec", "exe", "cmd")


def new_hook_token() -> str:
    """A random url-safe token (43 characters) that contains none of `FORBIDDEN_URL_WORDS`."""
    while True:
        token = secrets.token_urlsafe(HOOK_TOKEN_BYTES)
        if not any(word in token.lower() for word in FORBIDDEN_URL_WORDS):
            return token


class PaymentChannel(models.Model):
    class Kind(models.TextChoices):
        PAYBILL = "paybill", "Paybill"
        TILL = "till", "Till (buy goods)"
        B2C = "b2c", "B2C (bulk disbursement: refunds to phones)"

    class Environment(models.TextChoices):
        SANDBOX = "sandbox", "Daraja sandbox"
        PRODUCTION = "production", "Daraja production"
        SIMULATOR = "simulator", "Local simulator"

    class Validation(models.TextChoices):
        ACCEPT_ALL = "accept_all", "Accept every payment (unmatched ones go to suspense)"
        REJECT_UNKNOWN = "reject_unknown", "Reject payments to unknown accounts (C2B00012)"

    class Allowlist(models.TextChoices):
        ENFORCE = "enforce", "Refuse other source addresses"
        LOG_ONLY = "log_only", "Accept, but flag other source addresses"
        OFF = "off", "Accept any source address"

    name = models.CharField(max_length=80)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    shortcode = models.CharField(
        max_length=12, unique=True, help_text="the paybill number, or the till's store number (BusinessShortCode)"
    )
    till_number = models.CharField(max_length=12, blank=True, help_text="buy goods: the till number customers pay")
    environment = models.CharField(max_length=12, choices=Environment.choices, default=Environment.SIMULATOR)
    base_url = models.URLField(blank=True, help_text="empty: the environment's address")
    consumer_key = EncryptedTextField(blank=True)
    consumer_secret = EncryptedTextField(blank=True)
    passkey = EncryptedTextField(blank=True, help_text="Lipa na M-Pesa Online passkey (STK push)")
    initiator_name = models.CharField(max_length=80, blank=True)
    security_credential = EncryptedTextField(blank=True, help_text="the initiator's encrypted password")
    hook_token = models.CharField(max_length=64, unique=True, default=new_hook_token)
    validation = models.CharField(max_length=16, choices=Validation.choices, default=Validation.ACCEPT_ALL)
    allowlist_mode = models.CharField(max_length=10, choices=Allowlist.choices, default=Allowlist.ENFORCE)
    allowlist = models.TextField(default=SAFARICOM_CALLBACK_IPS, help_text="addresses or networks, space separated")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=["paybill", "b2c"]) | ~models.Q(till_number=""),
                name="mpesa_till_has_till_number",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()} {self.till_number or self.shortcode})"


class AccessToken(models.Model):
    """The channel's current Daraja OAuth token, shared by every worker and web process."""

    channel = models.OneToOneField(PaymentChannel, on_delete=models.CASCADE, related_name="access_token")
    token = EncryptedTextField()
    expires_at = models.DateTimeField()
    fetched_at = models.DateTimeField()

    def __str__(self):
        return f"token for {self.channel_id} until {self.expires_at:%H:%M:%S}"


class InboundCallback(models.Model):
    """One request that reached a provider hook, stored before anything else happens."""

    class Kind(models.TextChoices):
        C2B_VALIDATION = "c2b_validation", "C2B validation"
        C2B_CONFIRMATION = "c2b_confirmation", "C2B confirmation"
        STK_CALLBACK = "stk_callback", "STK push callback"
        STATUS_RESULT = "status_result", "Transaction status result"
        STATUS_TIMEOUT = "status_timeout", "Transaction status timeout"
        B2C_RESULT = "b2c_result", "B2C result"
        B2C_TIMEOUT = "b2c_timeout", "B2C timeout"
        REVERSAL_RESULT = "reversal_result", "Reversal result"
        REVERSAL_TIMEOUT = "reversal_timeout", "Reversal timeout"

    class Status(models.TextChoices):
        RECEIVED = "received", "Received, not processed yet"
        PROCESSED = "processed", "Processed"
        DUPLICATE = "duplicate", "Duplicate (already processed)"
        MISMATCH = "mismatch", "Same receipt, different amount (flagged, not applied)"
        REJECTED = "rejected", "Rejected (bad payload)"
        FAILED = "failed", "Processing failed (will be retried)"

    channel = models.ForeignKey(PaymentChannel, null=True, blank=True, on_delete=models.PROTECT)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    received_at = models.DateTimeField(db_index=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    source_allowed = models.BooleanField(default=True)
    headers = models.JSONField(default=dict)
    body = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED, db_index=True)
    outcome = models.CharField(max_length=300, blank=True)
    reference = models.CharField(max_length=60, blank=True, db_index=True, help_text="TransID / receipt, if any")
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    payment = models.ForeignKey("payments.Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    resolved_at = models.DateTimeField(
        null=True, blank=True, help_text="when staff marked a callback that needed action as dealt with"
    )
    resolution = models.CharField(max_length=300, blank=True, help_text="who dealt with it, and how")

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["status", "received_at"], name="callback_to_process"),
            # Needing action (selectors.callbacks_needing_action): rejected, mismatch, or failed after
            # its last retry, not yet marked dealt with. /healthz counts them over this partial index.
            models.Index(
                fields=["status", "attempts"],
                name="callback_needs_action",
                condition=models.Q(resolved_at__isnull=True, status__in=["rejected", "mismatch", "failed"]),
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.reference or self.pk} ({self.status})"


class StkRequest(models.Model):
    """One STK push (M-Pesa Express) Wavu asked a customer's phone to pay, and how it ended.

    The row is written before Daraja is called (status "pending"), so a crash or a timeout never
    loses track of a prompt that may be on the customer's phone. At most one request per purpose
    (an invoice, a service's plan purchase, a top-up) is open ("pending" or "unknown") at a time:
    a unique partial index enforces it. Rules live in `wavu.mpesa.stk`.
    """

    class Purpose(models.TextChoices):
        INVOICE = "invoice", "Pay an invoice"
        PURCHASE = "purchase", "Buy a plan period (new service or renewal)"
        TOP_UP = "top_up", "Top up the account"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for the customer"
        UNKNOWN = "unknown", "Push sent, Daraja's answer lost (never pushed again)"
        PAID = "paid", "Paid"
        CANCELLED = "cancelled", "Cancelled by the customer"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "No answer in time"

    OPEN_STATUSES = (Status.PENDING, Status.UNKNOWN)

    channel = models.ForeignKey(PaymentChannel, on_delete=models.PROTECT, related_name="stk_requests")
    purpose = models.CharField(max_length=10, choices=Purpose.choices)
    customer = models.ForeignKey("customers.Customer", on_delete=models.PROTECT, related_name="stk_requests")
    invoice = models.ForeignKey(
        "billing.Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="stk_requests"
    )
    subscription = models.ForeignKey(
        "subscriptions.Subscription", null=True, blank=True, on_delete=models.PROTECT, related_name="stk_requests"
    )
    phone = models.CharField(max_length=12, help_text="2547######## or 2541########")
    amount = models.DecimalField(max_digits=12, decimal_places=2, help_text="whole shillings")
    account_reference = models.CharField(max_length=12)
    description = models.CharField(max_length=13)
    merchant_request_id = models.CharField(max_length=60, blank=True)
    checkout_request_id = models.CharField(max_length=60, null=True, blank=True, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    result_code = models.CharField(max_length=20, blank=True)
    result_desc = models.CharField(max_length=300, blank=True)
    customer_message = models.CharField(max_length=300, blank=True, help_text="what the customer should do")
    receipt = models.CharField(max_length=60, blank=True, help_text="MpesaReceiptNumber, once known")
    payment = models.ForeignKey(
        "payments.Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="stk_requests"
    )
    settled_by = models.CharField(max_length=10, blank=True, help_text="callback, query or expiry")
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True)
    checks = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                models.F("customer"),
                models.F("purpose"),
                Coalesce("invoice", models.Value(0)),
                Coalesce("subscription", models.Value(0)),
                condition=models.Q(status__in=["pending", "unknown"]),
                name="stk_one_open_request_per_purpose",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_check_at"], name="stk_to_check")]

    def __str__(self):
        return f"STK {self.get_purpose_display().lower()} {self.amount} KES ({self.status})"


class RefundRequest(models.Model):
    """Money Wavu asked M-Pesa to send back to a customer, and how it ended (rules: `wavu.mpesa.refunds`).

    Two kinds: a **reversal** of an M-Pesa payment (Daraja TransactionReversal: the payer gets that
    payment back) and a **B2C** refund of a customer's unapplied credit to a phone (Daraja
    BusinessPayment from a B2C channel). The row is written before Daraja is called; it is "pending"
    until the result reaches the hook ("completed" or "failed"), or "timed_out" when Daraja's queue
    timed out (staff check and resolve it). A B2C refund's `refunds` (payments.Refund rows) hold the
    credit while it is pending, so it cannot be spent twice. ConversationID and
    OriginatorConversationID are unique: a result names one request, however often it is delivered.
    A payment has at most one reversal that is not "failed" (a unique partial index).
    """

    class Kind(models.TextChoices):
        REVERSAL = "reversal", "Reversal of an M-Pesa payment"
        B2C = "b2c", "B2C refund of credit to a phone"

    class Status(models.TextChoices):
        PENDING = "pending", "Sent, waiting for M-Pesa's result"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed (the books are as before)"
        TIMED_OUT = "timed_out", "Timed out at M-Pesa (staff must check)"

    OPEN_STATUSES = (Status.PENDING, Status.TIMED_OUT)

    channel = models.ForeignKey(PaymentChannel, on_delete=models.PROTECT, related_name="refund_requests")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    payment = models.ForeignKey(
        "payments.Payment",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="mpesa_refund_requests",
        help_text="reversal: the payment sent back",
    )
    customer = models.ForeignKey(
        "customers.Customer", null=True, blank=True, on_delete=models.PROTECT, related_name="mpesa_refund_requests"
    )
    amount = models.DecimalField(max_digits=12, decimal_places=2, help_text="whole shillings")
    phone = models.CharField(max_length=12, blank=True, help_text="B2C: the phone paid, 2547######## or 2541########")
    original_receipt = models.CharField(max_length=20, blank=True, help_text="reversal: the receipt reversed")
    reason = models.CharField(max_length=300)
    originator_conversation_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    conversation_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    result_code = models.CharField(max_length=20, blank=True)
    result_desc = models.CharField(max_length=300, blank=True)
    outcome = models.CharField(max_length=400, blank=True, help_text="what happened and what staff should do")
    receipt = models.CharField(max_length=20, blank=True, help_text="M-Pesa's receipt of the reversal or payout")
    result_parameters = models.JSONField(default=dict, blank=True)
    refunds = models.ManyToManyField("payments.Refund", blank=True, related_name="+")
    requested_by = models.CharField(max_length=120)
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)
    settled_by = models.CharField(max_length=10, blank=True, help_text="result, timeout, daraja or staff")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["payment"],
                condition=models.Q(kind="reversal") & ~models.Q(status="failed"),
                name="mpesa_one_reversal_per_payment",
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="mpesa_refund_amount_positive"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="refund_by_status")]

    def __str__(self):
        return f"{self.get_kind_display()} {self.amount} KES ({self.status})"

"""Subscriptions: the service a customer takes, its lifecycle and its network credentials."""

from django.db import models
from django.db.models.functions import Lower

from wavu.catalog.models import AddOn, Plan
from wavu.customers.models import Customer


class Status(models.TextChoices):
    PENDING = "pending", "Pending activation"
    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    SUSPENDED = "suspended", "Suspended"
    PAUSED = "paused", "Paused"
    CANCELLED = "cancelled", "Cancelled"


# The only allowed status changes, in one place. Cancelled is final.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.PENDING: frozenset({Status.ACTIVE, Status.CANCELLED}),
    Status.ACTIVE: frozenset({Status.EXPIRED, Status.SUSPENDED, Status.PAUSED, Status.CANCELLED}),
    Status.EXPIRED: frozenset({Status.ACTIVE, Status.CANCELLED}),
    Status.SUSPENDED: frozenset({Status.ACTIVE, Status.CANCELLED}),
    Status.PAUSED: frozenset({Status.ACTIVE, Status.CANCELLED}),
    Status.CANCELLED: frozenset(),
}


class SuspensionCause(models.TextChoices):
    """Why a service is suspended: dunning lifts its own suspensions when the debt is cleared,
    never one staff imposed."""

    NONE = "", "Not suspended"
    OVERDUE = "overdue", "Overdue invoice"
    STAFF = "staff", "Suspended by staff"


class Subscription(models.Model):
    """One service: customer + plan (+ add-ons), its status, period and RADIUS credentials.

    For prepaid and hotspot services `current_period_end` is the expiry; for postpaid it is the
    end of the period invoiced last (the next billing date). `next_bill_at` is the start of the
    next postpaid period to invoice: the billing run picks services whose `next_bill_at` has come.
    An active hotspot service whose plan starts at first login has no period until that login.
    `username` is unique across the ISP (it is the PPPoE/hotspot login).
    """

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    username = models.CharField(max_length=64, unique=True)
    password = models.CharField(max_length=64, help_text="RADIUS needs the clear text for CHAP")
    static_ip = models.GenericIPAddressField(protocol="IPv4", null=True, blank=True, unique=True)
    mac_address = models.CharField(max_length=17, blank=True)
    billing_anchor_day = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="day of month a postpaid period starts (1–31; short months use their last day)",
    )
    scheduled_start = models.DateTimeField(
        null=True, blank=True, help_text="when the service is meant to start, e.g. the installation date"
    )
    activated_at = models.DateTimeField(null=True, blank=True)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True, db_index=True)
    next_bill_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="postpaid: start of the next period to invoice"
    )
    pending_plan = models.ForeignKey(
        Plan,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="a downgrade waiting for the end of the current period",
    )
    pending_plan_at = models.DateTimeField(null=True, blank=True, help_text="when the pending plan takes over")
    auto_renew = models.BooleanField(default=True, help_text="prepaid: renew from account credit at expiry")
    suspension_cause = models.CharField(max_length=10, choices=SuspensionCause.choices, blank=True, default="")
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_until = models.DateTimeField(null=True, blank=True, help_text="a paused service resumes by itself then")
    cancelled_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(billing_anchor_day__isnull=True)
                | models.Q(billing_anchor_day__gte=1, billing_anchor_day__lte=31),
                name="subscription_anchor_day_range",
            ),
            # "John" and "john" would be one login to a person reading it out: one of them only.
            models.UniqueConstraint(Lower("username"), name="subscription_username_unique_any_case"),
        ]

    def __str__(self):
        return f"{self.username} ({self.plan})"

    def can_become(self, status: str) -> bool:
        return status in TRANSITIONS[self.status]


class SubscriptionAddOn(models.Model):
    """An add-on attached to a subscription. One-off add-ons are billed once (see `billed_on_line`)."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="addons")
    addon = models.ForeignKey(AddOn, on_delete=models.PROTECT)
    quantity = models.PositiveSmallIntegerField(default=1)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    billed_on_line = models.ForeignKey(
        "billing.InvoiceLine", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["subscription", "id"]
        constraints = [models.CheckConstraint(condition=models.Q(quantity__gte=1), name="subaddon_qty_positive")]

    def __str__(self):
        return f"{self.addon} × {self.quantity}"


class LifecycleEvent(models.Model):
    """One status change of a subscription: the queryable stream that feeds RADIUS and SMS."""

    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="events")
    at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=30, help_text="e.g. activated, suspended, plan_changed")
    from_status = models.CharField(max_length=10, choices=Status.choices, blank=True)
    to_status = models.CharField(max_length=10, choices=Status.choices, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    actor_label = models.CharField(max_length=120)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["subscription", "at"])]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.subscription_id} {self.kind}"

"""Hotspot vouchers: printable batches of codes, each one a hotspot service that starts at first login.

A `VoucherBatch` is what staff issue and print (plan, quantity, price per voucher, who sells it);
each `Voucher` in it is one code and the `Subscription` it became (username = password = code,
under the ISP's voucher-stock customer, `VoucherStock`). The code's validity starts at its first
login (`billing.prepaid.start_at_first_login`, called by `services.drain_first_logins`).
"""

from django.conf import settings
from django.db import models

from wavu.catalog.models import Plan
from wavu.customers.models import Customer
from wavu.subscriptions.models import Subscription

# Unambiguous when read off a printed card: no 0/O, 1/I/L.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH_DEFAULT, CODE_LENGTH_MIN, CODE_LENGTH_MAX = 8, 6, 16


class VoucherStock(models.Model):
    """The ISP's one voucher-stock customer (a single row, id 1): the account every voucher's
    service belongs to. It never holds money, so no payment renews a used voucher."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    customer = models.OneToOneField(Customer, on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="voucherstock_single_row")]

    def __str__(self):
        return f"voucher stock: {self.customer_id}"


class VoucherBatch(models.Model):
    """One printed batch of vouchers for a hotspot plan that starts at first login."""

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="voucher_batches")
    quantity = models.PositiveIntegerField()
    price = models.DecimalField(max_digits=12, decimal_places=2, help_text="per voucher, tax included")
    currency = models.CharField(max_length=3)
    code_length = models.PositiveSmallIntegerField(default=CODE_LENGTH_DEFAULT)
    sold_by = models.CharField(max_length=120, blank=True, help_text="reseller or agent the batch is for")
    reseller = models.ForeignKey(
        Customer,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="voucher_batches",
        help_text="a reseller account invoiced for the batch (quantity × price)",
    )
    invoice = models.ForeignKey("billing.Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    note = models.CharField(max_length=300, blank=True)
    mac_lock = models.BooleanField(default=False, help_text="lock each voucher to the first device that uses it")
    device_limit = models.PositiveSmallIntegerField(default=1, help_text="devices online at once (Simultaneous-Use)")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_label = models.CharField(max_length=120)
    created_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="voucherbatch_quantity_positive"),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="voucherbatch_price_not_negative"),
            models.CheckConstraint(condition=models.Q(device_limit__gte=1), name="voucherbatch_device_limit_positive"),
        ]

    def __str__(self):
        return f"batch {self.pk}: {self.quantity} × {self.plan}"


class Voucher(models.Model):
    """One code: the hotspot service it became, and whether it was used."""

    class Status(models.TextChoices):
        UNUSED = "unused", "Unused"
        ACTIVE = "active", "In use (first login seen)"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    batch = models.ForeignKey(VoucherBatch, on_delete=models.PROTECT, related_name="vouchers")
    code = models.CharField(max_length=CODE_LENGTH_MAX, unique=True)
    subscription = models.OneToOneField(Subscription, on_delete=models.PROTECT, related_name="voucher")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.UNUSED)
    first_used_at = models.DateTimeField(null=True, blank=True)
    locked_mac = models.CharField(
        max_length=64, blank=True, help_text="Calling-Station-Id of the first device, as the router sent it"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "id"]
        indexes = [models.Index(fields=["status", "batch"], name="voucher_status_batch")]

    def __str__(self):
        return self.code


class FirstLoginCursor(models.Model):
    """How far `services.drain_first_logins` has read `radacct` (a single row, id 1)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_radacctid = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="firstlogincursor_single_row")]

    def __str__(self):
        return f"radacct read up to {self.last_radacctid}"

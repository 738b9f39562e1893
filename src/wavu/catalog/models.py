"""Catalog: plans and add-ons, with effective-dated prices (tax-inclusive)."""

from django.db import models

from wavu.core.tax import TaxClass


class Plan(models.Model):
    """What an ISP sells: a hotspot package, a prepaid or a postpaid recurring plan.

    Speeds are in kbit/s from the customer's point of view (download = to the customer).
    The price lives in `PlanPrice` rows; a price change is a new row with a later start.
    """

    class Kind(models.TextChoices):
        HOTSPOT = "hotspot", "Hotspot package"
        PREPAID = "prepaid", "Prepaid recurring"
        POSTPAID = "postpaid", "Postpaid recurring"

    class ValidityUnit(models.TextChoices):
        MINUTE = "minute", "minutes"
        HOUR = "hour", "hours"
        DAY = "day", "days"
        MONTH = "month", "calendar months"

    class QuotaAction(models.TextChoices):
        NONE = "none", "Nothing"
        THROTTLE = "throttle", "Throttle to the fair-usage speed"
        BLOCK = "block", "Block"

    class Technology(models.TextChoices):
        FTTH = "ftth", "FTTH (fibre)"
        FIXED_WIRELESS = "fixed_wireless", "Fixed wireless"
        HOTSPOT = "hotspot", "Hotspot (Wi-Fi)"
        OTHER = "other", "Other"

    class HotspotStart(models.TextChoices):
        PURCHASE = "purchase", "At purchase"
        FIRST_LOGIN = "first_login", "At first login"

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    validity_unit = models.CharField(max_length=10, choices=ValidityUnit.choices, default=ValidityUnit.MONTH)
    validity_count = models.PositiveIntegerField(default=1)
    download_kbps = models.PositiveIntegerField()
    upload_kbps = models.PositiveIntegerField()
    burst_download_kbps = models.PositiveIntegerField(null=True, blank=True)
    burst_upload_kbps = models.PositiveIntegerField(null=True, blank=True)
    burst_threshold_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    burst_time_seconds = models.PositiveIntegerField(null=True, blank=True)
    data_quota_mb = models.PositiveBigIntegerField(null=True, blank=True, help_text="empty = unlimited")
    quota_action = models.CharField(max_length=10, choices=QuotaAction.choices, default=QuotaAction.NONE)
    fup_download_kbps = models.PositiveIntegerField(null=True, blank=True)
    fup_upload_kbps = models.PositiveIntegerField(null=True, blank=True)
    time_quota_minutes = models.PositiveIntegerField(null=True, blank=True, help_text="empty = unlimited")
    devices_allowed = models.PositiveSmallIntegerField(default=1)
    technology = models.CharField(max_length=16, choices=Technology.choices)
    tax_class = models.CharField(max_length=20, choices=TaxClass.choices, default=TaxClass.INTERNET)
    sold_on_portal = models.BooleanField(default=False)
    hotspot_starts = models.CharField(max_length=12, choices=HotspotStart.choices, default=HotspotStart.PURCHASE)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["kind", "name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(validity_count__gte=1), name="plan_validity_positive"),
            models.CheckConstraint(
                condition=~models.Q(quota_action="throttle")
                | models.Q(fup_download_kbps__isnull=False, fup_upload_kbps__isnull=False),
                name="plan_throttle_has_fup_speed",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def is_recurring(self) -> bool:
        return self.kind in (self.Kind.PREPAID, self.Kind.POSTPAID)


class AddOn(models.Model):
    """Something billed with a subscription: monthly (static IP, router rental) or once (installation)."""

    class Billing(models.TextChoices):
        RECURRING = "recurring", "Every billing period"
        ONE_OFF = "one_off", "Once"

    class Category(models.TextChoices):
        STATIC_IP = "static_ip", "Static IP"
        EQUIPMENT_RENTAL = "equipment_rental", "Equipment rental"
        INSTALLATION = "installation", "Installation"
        DATA_BUNDLE = "data_bundle", "Data bundle"
        OTHER = "other", "Other"

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    category = models.CharField(max_length=20, choices=Category.choices)
    billing = models.CharField(max_length=10, choices=Billing.choices)
    tax_class = models.CharField(max_length=20, choices=TaxClass.choices, default=TaxClass.STANDARD)
    data_quota_mb = models.PositiveBigIntegerField(null=True, blank=True, help_text="for data bundles")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class PlanPrice(models.Model):
    """A tax-inclusive price of a plan from `valid_from` on. Rows are never edited; a change is a new row."""

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="prices")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="KES")
    valid_from = models.DateTimeField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["plan", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "valid_from"], name="planprice_unique_start"),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="planprice_not_negative"),
        ]

    def __str__(self):
        return f"{self.plan} {self.currency} {self.amount} from {self.valid_from:%Y-%m-%d}"


class AddOnPrice(models.Model):
    """A tax-inclusive price of an add-on from `valid_from` on."""

    addon = models.ForeignKey(AddOn, on_delete=models.PROTECT, related_name="prices")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="KES")
    valid_from = models.DateTimeField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["addon", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["addon", "valid_from"], name="addonprice_unique_start"),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="addonprice_not_negative"),
        ]

    def __str__(self):
        return f"{self.addon} {self.currency} {self.amount} from {self.valid_from:%Y-%m-%d}"

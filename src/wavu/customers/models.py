"""Customers: the subscriber accounts an ISP bills."""

from django.db import models


class Customer(models.Model):
    """A subscriber account. `account_number` is what the customer types into the paybill menu:
    numeric with a Damm check digit (see core.identifiers), allocated once, never reused."""

    class Kind(models.TextChoices):
        INDIVIDUAL = "individual", "Individual"
        BUSINESS = "business", "Business"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        INACTIVE = "inactive", "Inactive"
        CLOSED = "closed", "Closed"

    class Language(models.TextChoices):
        ENGLISH = "en", "English"
        KISWAHILI = "sw", "Kiswahili"

    account_number = models.CharField(max_length=12, unique=True, editable=False)
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.INDIVIDUAL)
    name = models.CharField(max_length=160, help_text="full name, or the registered business name")
    contact_person = models.CharField(max_length=160, blank=True)
    phone = models.CharField(max_length=12, db_index=True, help_text="2547######## or 2541######## (# = digit)")
    alt_phone = models.CharField(max_length=12, blank=True)
    email = models.EmailField(blank=True)
    kra_pin = models.CharField("KRA PIN", max_length=11, blank=True, db_index=True)
    national_id = models.CharField(max_length=20, blank=True)
    county = models.CharField(max_length=60, blank=True)
    town = models.CharField(max_length=80, blank=True)
    address = models.CharField(max_length=200, blank=True, help_text="estate, street, building, house")
    latitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    longitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    language = models.CharField(max_length=2, choices=Language.choices, default=Language.ENGLISH)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["name"])]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(kind="business") | ~models.Q(kra_pin=""),
                name="customer_business_has_pin",
            )
        ]

    def __str__(self):
        return f"{self.account_number} {self.name}"

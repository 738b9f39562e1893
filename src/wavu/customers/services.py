"""Customer services: opening, correcting and closing subscriber accounts.

Every write to `Customer` goes through this module. Whatever people type is normalised here
(phones to 2547…/2541…, KRA PINs upper-cased, counties to their canonical name), and every
change is audited with its before and after values. Invalid input raises
`django.core.exceptions.ValidationError` with a message per field and changes nothing.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from wavu.core import audit, clock
from wavu.core.db import copy_field_values
from wavu.core.errors import NotAllowed
from wavu.core.identifiers import make_account_number, normalize_kra_pin
from wavu.core.models import AuditEvent
from wavu.core.phones import normalize_msisdn
from wavu.core.sequences import next_value

from .counties import canonical_county
from .models import Customer

ACCOUNT_SEQUENCE = "customer_account"
ACCOUNT_SEQUENCE_START = 1000

# Fields staff may set when opening or correcting an account.
EDITABLE_FIELDS = (
    "kind",
    "name",
    "contact_person",
    "phone",
    "alt_phone",
    "email",
    "kra_pin",
    "national_id",
    "county",
    "town",
    "address",
    "latitude",
    "longitude",
    "language",
    "status",
    "notes",
)

_MAX_LENGTHS = {"name": 160, "contact_person": 160, "town": 80, "address": 200}


class _Errors:
    """Collects field errors so one call reports every problem of a form at once."""

    def __init__(self):
        self.by_field: dict[str, list[ValidationError]] = {}

    def add(self, field: str, message: str, code: str = "invalid") -> None:
        self.by_field.setdefault(field, []).append(ValidationError(message, code=code))

    def add_from(self, field: str, exc: ValidationError) -> None:
        for error in exc.error_list:
            self.by_field.setdefault(field, []).append(error)

    def raise_if_any(self) -> None:
        if self.by_field:
            raise ValidationError(self.by_field)


def _text(value) -> str:
    return re.sub(r"\s+", " ", str(value or "")).strip()


def _coordinate(value, field: str, limit: int, errors: _Errors) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        errors.add(field, f"{value!r} is not a number.", "coordinate_invalid")
        return None
    if not number.is_finite() or not -limit <= number <= limit:
        errors.add(field, f"{field.capitalize()} must be between -{limit} and {limit}.", "coordinate_invalid")
        return None
    return number.quantize(Decimal("0.000001"))


def _clean_field(field: str, value, errors: _Errors):
    """Normalise one field as typed; record an error and return None when it is unusable."""
    if field == "phone":
        try:
            return normalize_msisdn(value)
        except ValidationError as exc:
            errors.add_from(field, exc)
            return None
    if field == "alt_phone":
        if not _text(value):
            return ""
        try:
            return normalize_msisdn(value)
        except ValidationError as exc:
            errors.add_from(field, exc)
            return None
    if field == "kra_pin":
        try:
            return normalize_kra_pin(value or "")
        except ValidationError as exc:
            errors.add_from(field, exc)
            return None
    if field == "national_id":
        digits = re.sub(r"[\s\-]", "", str(value or ""))
        if digits and not re.fullmatch(r"\d{6,9}", digits):
            errors.add(
                field,
                f"{value!r} is not a national ID number: expected 6 to 9 digits.",
                "national_id_invalid",
            )
            return None
        return digits
    if field == "email":
        email = str(value or "").strip()
        if not email:
            return ""
        try:
            validate_email(email)
        except ValidationError:
            errors.add(field, f"{email!r} is not an e-mail address.", "email_invalid")
            return None
        local, _, domain = email.rpartition("@")
        return f"{local}@{domain.lower()}"
    if field == "county":
        county = canonical_county(str(value or ""))
        if county is None:
            errors.add(field, f"{value!r} is not one of Kenya's 47 counties.", "county_unknown")
        return county
    if field == "kind":
        if value not in Customer.Kind.values:
            errors.add(field, f"Kind must be one of: {', '.join(Customer.Kind.values)}.", "invalid_choice")
            return None
        return value
    if field == "language":
        if value not in Customer.Language.values:
            errors.add(field, f"Language must be one of: {', '.join(Customer.Language.values)}.", "invalid_choice")
            return None
        return value
    if field == "status":
        allowed = (Customer.Status.ACTIVE, Customer.Status.INACTIVE)
        if value not in allowed:
            errors.add(
                field,
                "Status may be set to active or inactive; use close_customer to close an account.",
                "invalid_choice",
            )
            return None
        return value
    if field == "latitude":
        return _coordinate(value, field, 90, errors)
    if field == "longitude":
        return _coordinate(value, field, 180, errors)
    if field == "notes":
        return str(value or "").strip()
    # Plain text fields.
    text = _text(value)
    if field == "name" and not text:
        errors.add(field, "Enter the customer's name (or the registered business name).", "required")
        return None
    limit = _MAX_LENGTHS.get(field)
    if limit and len(text) > limit:
        errors.add(field, f"At most {limit} characters.", "max_length")
        return None
    return text


def clean_customer_data(data: dict, *, instance: Customer | None = None) -> dict:
    """Validate and normalise customer fields as typed, without writing anything.

    `data` holds the fields being set; with `instance`, the rules that involve several fields
    (a business needs a buyer PIN) are checked against the resulting record. Returns the
    normalised values; raises ValidationError with every field error found. Used by the
    services below and by forms that want to show errors before saving.
    """
    errors = _Errors()
    unknown = sorted(set(data) - set(EDITABLE_FIELDS))
    for field in unknown:
        errors.add(field, "This field cannot be set.", "not_editable")
    cleaned = {}
    for field in EDITABLE_FIELDS:
        if field in data:
            cleaned[field] = _clean_field(field, data[field], errors)
    if instance is None and "phone" not in data:
        errors.add("phone", "Enter a phone number.", "phone_required")
    if instance is None and "name" not in data:
        errors.add("name", "Enter the customer's name (or the registered business name).", "required")

    def resulting(field):
        if field in cleaned:
            return cleaned[field]
        if instance is not None:
            return getattr(instance, field)
        return Customer._meta.get_field(field).get_default()

    if resulting("kind") == Customer.Kind.BUSINESS and not resulting("kra_pin") and "kra_pin" not in errors.by_field:
        errors.add(
            "kra_pin",
            "A business customer needs a KRA PIN: it is printed on their tax invoices as the buyer's PIN.",
            "business_pin_required",
        )
    errors.raise_if_any()
    return cleaned


def create_customer(
    *,
    name: str,
    phone: str,
    kind: str = Customer.Kind.INDIVIDUAL,
    contact_person: str = "",
    alt_phone: str = "",
    email: str = "",
    kra_pin: str = "",
    national_id: str = "",
    county: str = "",
    town: str = "",
    address: str = "",
    latitude=None,
    longitude=None,
    language: str = Customer.Language.ENGLISH,
    status: str = Customer.Status.ACTIVE,
    notes: str = "",
) -> Customer:
    """Open a customer account and give it the next account number.

    Guarantees: every field is validated and normalised first, so invalid input raises
    ValidationError and writes nothing (no customer, no account number used, no audit row);
    the account number is the next value of the gap-free `customer_account` sequence (from 1000)
    followed by its Damm check digit, allocated in this transaction (a rollback gives it back);
    the creation is audited. Not idempotent: calling twice opens two accounts.
    """
    data = {
        "kind": kind,
        "name": name,
        "contact_person": contact_person,
        "phone": phone,
        "alt_phone": alt_phone,
        "email": email,
        "kra_pin": kra_pin,
        "national_id": national_id,
        "county": county,
        "town": town,
        "address": address,
        "latitude": latitude,
        "longitude": longitude,
        "language": language,
        "status": status,
        "notes": notes,
    }
    cleaned = clean_customer_data(data)
    with transaction.atomic():
        now = clock.now()
        number = make_account_number(next_value(ACCOUNT_SEQUENCE, start=ACCOUNT_SEQUENCE_START))
        customer = Customer.objects.create(account_number=number, created_at=now, updated_at=now, **cleaned)
        audit.record(customer, AuditEvent.Action.CREATE, verb="create_customer")
    return customer


def _lock(customer: Customer) -> Customer:
    return Customer.objects.select_for_update().get(pk=customer.pk)


def lock_accounts(*customer_ids: int | None) -> None:
    """The money lock: lock these customers' rows (pk order) in the caller's transaction.

    Every service that moves a customer's money — invoices, payments, credit notes, renewals,
    plan changes, dunning, billing runs — takes it first, so two operations on one account queue
    instead of interleaving or deadlocking. `None` ids are ignored. A no-op on SQLite, whose
    IMMEDIATE transactions already serialise writers."""
    ids = sorted({pk for pk in customer_ids if pk is not None})
    if ids:
        list(Customer.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))


def update_customer(customer: Customer, *, reason: str = "", **changes) -> Customer:
    """Correct a customer's details (any of EDITABLE_FIELDS) as typed.

    Guarantees: validates and normalises like `create_customer` (the business-PIN rule is checked
    against the resulting record); locks the customer row while it applies the change; writes one
    audit event with the before and after values of the fields that changed; a change that
    changes nothing writes nothing. The account number never changes. `customer` is refreshed.
    """
    cleaned = clean_customer_data(changes, instance=customer)
    with transaction.atomic():
        locked = _lock(customer)
        clean_customer_data(cleaned, instance=locked)  # re-check cross-field rules on the locked row
        before = audit.snapshot(locked)
        for field, value in cleaned.items():
            setattr(locked, field, value)
        audit.save_if_changed(locked, before, verb="update_customer", reason=reason)
    copy_field_values(customer, locked)
    return customer


def close_customer(customer: Customer, *, reason: str = "") -> Customer:
    """Close an account. The account number stays reserved forever and is never reused.

    Refused (NotAllowed, code `customer_has_live_services`) while the customer has services that
    are not cancelled: cancel them first. Idempotent: closing a closed account changes nothing and
    writes no audit row. Locks the customer row; audited with before/after status.
    """
    from wavu.subscriptions.selectors import live_subscriptions

    with transaction.atomic():
        locked = _lock(customer)
        if locked.status != Customer.Status.CLOSED:
            live = list(live_subscriptions(locked).values_list("username", flat=True)[:10])
            if live:
                raise NotAllowed(
                    f"Customer {locked.account_number} still has services that are not cancelled "
                    f"({', '.join(live)}); cancel them before closing the account.",
                    code="customer_has_live_services",
                )
            before = audit.snapshot(locked)
            locked.status = Customer.Status.CLOSED
            locked.updated_at = clock.now()
            locked.save(update_fields=["status", "updated_at"])
            audit.record(
                locked,
                AuditEvent.Action.UPDATE,
                before=before,
                after=audit.snapshot(locked),
                verb="close_customer",
                reason=reason,
            )
    copy_field_values(customer, locked)
    return customer

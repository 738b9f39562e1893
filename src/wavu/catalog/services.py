"""Catalog services: plans, add-ons and their effective-dated, tax-inclusive prices.

Every write to the catalog goes through this module and is audited. Invalid input raises
`django.core.exceptions.ValidationError` with a message per field and writes nothing.

Prices are versions: `set_plan_price` / `set_addon_price` add a new row that starts at a moment
in time; existing rows are never edited, so the price that applied to an earlier date can always
be read back (`selectors.plan_price(plan, at)`).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from wavu.core import audit, clock
from wavu.core.db import copy_field_values
from wavu.core.errors import NotAllowed
from wavu.core.models import AuditEvent
from wavu.core.money import MINOR_UNITS, InvalidAmount, to_decimal
from wavu.core.tax import TaxClass

from .models import AddOn, AddOnPrice, Plan, PlanPrice

MAX_KBPS = 100_000_000  # 100 Gbit/s: anything above is a typo
PRICE_LIMIT = Decimal("10000000000")  # the price columns hold 12 digits, 2 after the point

PLAN_FIELDS = (
    "code",
    "name",
    "description",
    "kind",
    "validity_unit",
    "validity_count",
    "download_kbps",
    "upload_kbps",
    "burst_download_kbps",
    "burst_upload_kbps",
    "burst_threshold_percent",
    "burst_time_seconds",
    "data_quota_mb",
    "quota_action",
    "fup_download_kbps",
    "fup_upload_kbps",
    "time_quota_minutes",
    "devices_allowed",
    "technology",
    "tax_class",
    "sold_on_portal",
    "hotspot_starts",
    "is_active",
)
_PLAN_REQUIRED = ("code", "name", "kind", "download_kbps", "upload_kbps", "technology")
_BURST_FIELDS = ("burst_download_kbps", "burst_upload_kbps", "burst_threshold_percent", "burst_time_seconds")

ADDON_FIELDS = ("code", "name", "category", "billing", "tax_class", "data_quota_mb", "is_active")
_ADDON_REQUIRED = ("code", "name", "category", "billing")

# What some add-on categories must be billed as. Equipment *sold* once is category "other".
_ADDON_BILLING = {
    AddOn.Category.STATIC_IP: AddOn.Billing.RECURRING,
    AddOn.Category.EQUIPMENT_RENTAL: AddOn.Billing.RECURRING,
    AddOn.Category.INSTALLATION: AddOn.Billing.ONE_OFF,
}


class _Errors:
    def __init__(self):
        self.by_field: dict[str, list[ValidationError]] = {}

    def add(self, field: str, message: str, code: str = "invalid") -> None:
        self.by_field.setdefault(field, []).append(ValidationError(message, code=code))

    def has(self, *fields: str) -> bool:
        return any(f in self.by_field for f in fields)

    def raise_if_any(self) -> None:
        if self.by_field:
            raise ValidationError(self.by_field)


def _integer(field, value, errors: _Errors, *, minimum: int, maximum: int, optional: bool):
    if value is None or (isinstance(value, str) and not value.strip()):
        if not optional:
            errors.add(field, "This field is required.", "required")
        return None
    if isinstance(value, bool | float):
        errors.add(field, f"{value!r} is not a whole number.", "invalid_integer")
        return None
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        errors.add(field, f"{value!r} is not a whole number.", "invalid_integer")
        return None
    if number != value and not isinstance(value, str):
        errors.add(field, f"{value!r} is not a whole number.", "invalid_integer")
        return None
    if not minimum <= number <= maximum:
        errors.add(field, f"Must be between {minimum} and {maximum}.", "out_of_range")
        return None
    return number


def _choice(field, value, choices, errors: _Errors):
    if value not in choices:
        errors.add(field, f"{value!r} is not one of: {', '.join(str(c) for c in choices)}.", "invalid_choice")
        return None
    return value


def _boolean(field, value, errors: _Errors):
    if not isinstance(value, bool):
        errors.add(field, "Must be true or false.", "invalid_boolean")
        return None
    return value


def _code(value, errors: _Errors):
    code = str(value or "").strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", code):
        errors.add(
            "code",
            f"{value!r} is not a code: use 1–40 lower-case letters, digits, '-' or '_', e.g. home-10mbps.",
            "code_invalid",
        )
        return None
    return code


def _name(field, value, limit: int, errors: _Errors, *, required: bool):
    text = re.sub(r"\s+", " ", str(value or "")).strip()
    if required and not text:
        errors.add(field, "This field is required.", "required")
        return None
    if len(text) > limit:
        errors.add(field, f"At most {limit} characters.", "max_length")
        return None
    return text


def _resulting(field, cleaned: dict, instance, model):
    if field in cleaned:
        return cleaned[field]
    if instance is not None:
        return getattr(instance, field)
    return model._meta.get_field(field).get_default()


def clean_plan_data(data: dict, *, instance: Plan | None = None) -> dict:
    """Validate plan fields as given (all of them for a new plan, the changed ones for an update).

    Rules: kind hotspot/prepaid/postpaid; validity unit minute/hour/day/month and a count ≥ 1
    (postpaid plans run in calendar months); speeds in kbit/s; a burst is all four burst values
    with burst speeds above the plan's speeds; a quota action needs a data quota; throttling needs
    a fair-usage speed below the plan's speeds (and a fair-usage speed means nothing without it);
    "starts at first login" is for hotspot packages; the portal sells prepaid and hotspot plans.
    Returns the normalised values or raises ValidationError listing every problem.
    """
    errors = _Errors()
    for field in sorted(set(data) - set(PLAN_FIELDS)):
        errors.add(field, "This field cannot be set.", "not_editable")
    if instance is None:
        for field in _PLAN_REQUIRED:
            if field not in data:
                errors.add(field, "This field is required.", "required")
    cleaned: dict = {}
    for field, value in data.items():
        if field not in PLAN_FIELDS:
            continue
        if field == "code":
            cleaned[field] = _code(value, errors)
        elif field == "name":
            cleaned[field] = _name(field, value, 100, errors, required=True)
        elif field == "description":
            cleaned[field] = _name(field, value, 300, errors, required=False)
        elif field == "kind":
            cleaned[field] = _choice(field, value, Plan.Kind.values, errors)
        elif field == "validity_unit":
            cleaned[field] = _choice(field, value, Plan.ValidityUnit.values, errors)
        elif field == "quota_action":
            cleaned[field] = _choice(field, value, Plan.QuotaAction.values, errors)
        elif field == "technology":
            cleaned[field] = _choice(field, value, Plan.Technology.values, errors)
        elif field == "tax_class":
            cleaned[field] = _choice(field, value, TaxClass.values, errors)
        elif field == "hotspot_starts":
            cleaned[field] = _choice(field, value, Plan.HotspotStart.values, errors)
        elif field in ("sold_on_portal", "is_active"):
            cleaned[field] = _boolean(field, value, errors)
        elif field == "validity_count":
            cleaned[field] = _integer(field, value, errors, minimum=1, maximum=100_000, optional=False)
        elif field in ("download_kbps", "upload_kbps"):
            cleaned[field] = _integer(field, value, errors, minimum=1, maximum=MAX_KBPS, optional=False)
        elif field in ("burst_download_kbps", "burst_upload_kbps", "fup_download_kbps", "fup_upload_kbps"):
            cleaned[field] = _integer(field, value, errors, minimum=1, maximum=MAX_KBPS, optional=True)
        elif field == "burst_threshold_percent":
            cleaned[field] = _integer(field, value, errors, minimum=1, maximum=100, optional=True)
        elif field == "burst_time_seconds":
            cleaned[field] = _integer(field, value, errors, minimum=1, maximum=86_400, optional=True)
        elif field == "data_quota_mb":
            cleaned[field] = _integer(field, value, errors, minimum=1, maximum=10**12, optional=True)
        elif field == "time_quota_minutes":
            cleaned[field] = _integer(field, value, errors, minimum=1, maximum=10**7, optional=True)
        elif field == "devices_allowed":
            cleaned[field] = _integer(field, value, errors, minimum=1, maximum=1000, optional=False)

    def get(field):
        return _resulting(field, cleaned, instance, Plan)

    postpaid = not errors.has("kind", "validity_unit") and get("kind") == Plan.Kind.POSTPAID
    if postpaid and get("validity_unit") != Plan.ValidityUnit.MONTH:
        errors.add("validity_unit", "A postpaid plan is billed in calendar months.", "postpaid_needs_months")
    if not errors.has(*_BURST_FIELDS, "download_kbps", "upload_kbps"):
        burst = {f: get(f) for f in _BURST_FIELDS}
        if any(v is not None for v in burst.values()):
            for field, value in burst.items():
                if value is None:
                    errors.add(field, "A burst needs speeds, a threshold and a time together.", "burst_incomplete")
            for burst_field, base_field in (
                ("burst_download_kbps", "download_kbps"),
                ("burst_upload_kbps", "upload_kbps"),
            ):
                if burst[burst_field] is not None and get(base_field) and burst[burst_field] <= get(base_field):
                    errors.add(burst_field, "The burst speed must be above the plan's speed.", "burst_too_low")
    if not errors.has("quota_action", "data_quota_mb", "fup_download_kbps", "fup_upload_kbps"):
        action = get("quota_action")
        if action != Plan.QuotaAction.NONE and get("data_quota_mb") is None:
            errors.add("data_quota_mb", f"Quota action {action!r} needs a data quota.", "quota_required")
        if action == Plan.QuotaAction.THROTTLE:
            for fup_field, base_field in (("fup_download_kbps", "download_kbps"), ("fup_upload_kbps", "upload_kbps")):
                if get(fup_field) is None:
                    errors.add(fup_field, "Throttling needs a fair-usage speed.", "fup_speed_required")
                elif get(base_field) and get(fup_field) >= get(base_field):
                    errors.add(fup_field, "The fair-usage speed must be below the plan's speed.", "fup_too_high")
        else:
            for fup_field in ("fup_download_kbps", "fup_upload_kbps"):
                if get(fup_field) is not None:
                    errors.add(
                        fup_field,
                        "A fair-usage speed is only used when the quota action is 'throttle'.",
                        "fup_without_throttle",
                    )
    if (
        not errors.has("kind", "hotspot_starts")
        and get("hotspot_starts") == Plan.HotspotStart.FIRST_LOGIN
        and get("kind") != Plan.Kind.HOTSPOT
    ):
        errors.add("hotspot_starts", "Only hotspot packages can start at first login.", "not_hotspot")
    if not errors.has("kind", "sold_on_portal") and get("sold_on_portal") and get("kind") == Plan.Kind.POSTPAID:
        errors.add("sold_on_portal", "The portal sells prepaid and hotspot plans, not postpaid.", "portal_postpaid")
    kind_changed = instance is not None and "kind" in cleaned and cleaned["kind"] != instance.kind
    if kind_changed and instance.subscriptions.exists():
        errors.add("kind", "Customers use this plan: create a new plan instead of changing its kind.", "in_use")
    errors.raise_if_any()
    return cleaned


def _unique_code_error(model, code: str, instance=None) -> ValidationError | None:
    qs = model.objects.filter(code=code)
    if instance is not None:
        qs = qs.exclude(pk=instance.pk)
    if qs.exists():
        return ValidationError({"code": [ValidationError(f"The code {code!r} is taken.", code="code_taken")]})
    return None


def _save_new(model, cleaned: dict):
    """Insert a catalog row; a code taken concurrently becomes a field error, not a 500."""
    error = _unique_code_error(model, cleaned["code"])
    if error:
        raise error
    now = clock.now()
    try:
        with transaction.atomic():
            return model.objects.create(created_at=now, updated_at=now, **cleaned)
    except IntegrityError as exc:
        if model.objects.filter(code=cleaned["code"]).exists():
            raise _unique_code_error(model, cleaned["code"]) from exc
        raise


def _save_changes(instance, cleaned: dict, *, verb: str, reason: str):
    model = type(instance)
    if "code" in cleaned:
        error = _unique_code_error(model, cleaned["code"], instance)
        if error:
            raise error
    with transaction.atomic():
        locked = model.objects.select_for_update().get(pk=instance.pk)
        before = audit.snapshot(locked)
        for field, value in cleaned.items():
            setattr(locked, field, value)
        if audit.snapshot(locked) != before:
            locked.updated_at = clock.now()
            try:
                with transaction.atomic():
                    locked.save()
            except IntegrityError as exc:
                if "code" in cleaned and model.objects.filter(code=cleaned["code"]).exclude(pk=locked.pk).exists():
                    raise _unique_code_error(model, cleaned["code"], locked) from exc
                raise
            audit.record(
                locked, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(locked), verb=verb, reason=reason
            )
    copy_field_values(instance, locked)
    return instance


def create_plan(*, price=None, price_valid_from=None, **fields) -> Plan:
    """Create a plan from the fields of `PLAN_FIELDS` (see `clean_plan_data` for the rules).

    With `price`, the first price version is set in the same transaction (from `price_valid_from`,
    default now). Guarantees: nothing is written when any field or the price is invalid; the code
    is unique (a taken code is a field error); the creation (and the price) are audited.
    """
    cleaned = clean_plan_data(fields)
    with transaction.atomic():
        plan = _save_new(Plan, cleaned)
        audit.record(plan, AuditEvent.Action.CREATE, verb="create_plan")
        if price is not None:
            set_plan_price(plan, price, valid_from=price_valid_from)
    return plan


def update_plan(plan: Plan, *, reason: str = "", **changes) -> Plan:
    """Change a plan's fields (not its price: see `set_plan_price`). The rules of `clean_plan_data`
    apply to the resulting plan; a plan customers use cannot change its kind. Locks the plan row;
    audited with before/after of the changed fields; a no-op writes nothing. `plan` is refreshed."""
    cleaned = clean_plan_data(changes, instance=plan)
    return _save_changes(plan, cleaned, verb="update_plan", reason=reason)


def clean_addon_data(data: dict, *, instance: AddOn | None = None) -> dict:
    """Validate add-on fields. Static IPs and equipment rental are billed every period, installation
    once; a data bundle has a data quota and, being internet data, the internet tax class (excise)."""
    errors = _Errors()
    for field in sorted(set(data) - set(ADDON_FIELDS)):
        errors.add(field, "This field cannot be set.", "not_editable")
    if instance is None:
        for field in _ADDON_REQUIRED:
            if field not in data:
                errors.add(field, "This field is required.", "required")
    cleaned: dict = {}
    for field, value in data.items():
        if field == "code":
            cleaned[field] = _code(value, errors)
        elif field == "name":
            cleaned[field] = _name(field, value, 100, errors, required=True)
        elif field == "category":
            cleaned[field] = _choice(field, value, AddOn.Category.values, errors)
        elif field == "billing":
            cleaned[field] = _choice(field, value, AddOn.Billing.values, errors)
        elif field == "tax_class":
            cleaned[field] = _choice(field, value, TaxClass.values, errors)
        elif field == "data_quota_mb":
            cleaned[field] = _integer(field, value, errors, minimum=1, maximum=10**12, optional=True)
        elif field == "is_active":
            cleaned[field] = _boolean(field, value, errors)

    def get(field):
        return _resulting(field, cleaned, instance, AddOn)

    if not errors.has("category", "billing"):
        expected = _ADDON_BILLING.get(get("category"))
        if expected and get("billing") != expected:
            errors.add(
                "billing",
                f"{AddOn.Category(get('category')).label} is billed "
                f"{AddOn.Billing(expected).label.lower()}, not {AddOn.Billing(get('billing')).label.lower()}.",
                "billing_mismatch",
            )
    if not errors.has("category", "data_quota_mb", "tax_class"):
        if get("category") == AddOn.Category.DATA_BUNDLE:
            if get("data_quota_mb") is None:
                errors.add("data_quota_mb", "A data bundle needs its size in MB.", "quota_required")
            if "tax_class" not in data and instance is None:
                cleaned["tax_class"] = TaxClass.INTERNET
            elif get("tax_class") != TaxClass.INTERNET:
                errors.add(
                    "tax_class",
                    "A data bundle is an internet data service: excise duty applies (tax class internet).",
                    "data_bundle_tax_class",
                )
        elif get("data_quota_mb") is not None:
            errors.add("data_quota_mb", "Only data bundles have a data quota.", "quota_not_bundle")
    errors.raise_if_any()
    return cleaned


def create_addon(*, price=None, price_valid_from=None, **fields) -> AddOn:
    """Create an add-on (see `clean_addon_data`); optionally its first price. Same guarantees as
    `create_plan`."""
    cleaned = clean_addon_data(fields)
    with transaction.atomic():
        addon = _save_new(AddOn, cleaned)
        audit.record(addon, AuditEvent.Action.CREATE, verb="create_addon")
        if price is not None:
            set_addon_price(addon, price, valid_from=price_valid_from)
    return addon


def update_addon(addon: AddOn, *, reason: str = "", **changes) -> AddOn:
    """Change an add-on's fields (not its price). Locks the row; audited; a no-op writes nothing."""
    cleaned = clean_addon_data(changes, instance=addon)
    return _save_changes(addon, cleaned, verb="update_addon", reason=reason)


# --- prices -------------------------------------------------------------------------------------


def _price_amount(amount) -> Decimal:
    try:
        value = to_decimal(amount)
    except InvalidAmount as exc:
        raise ValidationError({"amount": [ValidationError(str(exc), code="amount_invalid")]}) from exc
    if value < 0:
        raise ValidationError({"amount": [ValidationError("A price cannot be negative.", code="amount_negative")]})
    if value != value.quantize(Decimal("0.01")):
        raise ValidationError(
            {"amount": [ValidationError("A price has at most 2 decimal places (cents).", code="amount_precision")]}
        )
    if value >= PRICE_LIMIT:
        raise ValidationError({"amount": [ValidationError("That price is too large.", code="amount_too_large")]})
    return value.quantize(Decimal("0.01"))


def _price_start(valid_from) -> dt.datetime:
    if valid_from is None:
        return clock.now()
    if isinstance(valid_from, dt.datetime):
        return valid_from if timezone.is_aware(valid_from) else timezone.make_aware(valid_from)
    if isinstance(valid_from, dt.date):
        return clock.start_of_day(valid_from)
    raise ValidationError(
        {"valid_from": [ValidationError("Give the start as a date or a date and time.", code="invalid")]}
    )


def _set_price(owner, price_model, owner_field: str, amount, valid_from, currency: str, reason: str, verb: str):
    value = _price_amount(amount)
    start = _price_start(valid_from)
    currency = (currency or settings.WAVU["CURRENCY"]).upper()
    if currency not in MINOR_UNITS:
        raise ValidationError({"currency": [ValidationError(f"Unknown currency {currency!r}.", code="invalid")]})
    with transaction.atomic():
        type(owner).objects.select_for_update().get(pk=owner.pk)  # one price change at a time
        rows = price_model.objects.filter(**{owner_field: owner})
        latest = rows.order_by("-valid_from").first()
        if latest is not None:
            if latest.currency != currency:
                raise ValidationError(
                    {
                        "currency": [
                            ValidationError(f"{owner} is priced in {latest.currency}.", code="currency_mismatch")
                        ]
                    }
                )
            if rows.filter(valid_from=start).exists():
                raise NotAllowed(
                    f"{owner} already has a price starting {clock.local(start):%Y-%m-%d %H:%M}; "
                    "prices are never edited: set a new one with a later start.",
                    code="price_start_taken",
                    fields={"valid_from": ["A price already starts at this moment."]},
                )
            if start < latest.valid_from:
                raise NotAllowed(
                    f"{owner} has a price starting {clock.local(latest.valid_from):%Y-%m-%d %H:%M}; "
                    "a new price must start after it.",
                    code="price_backdated",
                    fields={"valid_from": ["Must be after the latest price's start."]},
                )
            if start < clock.start_of_day(clock.today()):
                raise NotAllowed(
                    "A price change cannot start in the past: it would rewrite prices already charged.",
                    code="price_backdated",
                    fields={"valid_from": ["Must be today or later."]},
                )
        now = clock.now()
        try:
            with transaction.atomic():
                row = price_model.objects.create(
                    **{owner_field: owner}, amount=value, currency=currency, valid_from=start, created_at=now
                )
        except IntegrityError as exc:
            raise NotAllowed(
                f"{owner} already has a price starting at that moment.",
                code="price_start_taken",
                fields={"valid_from": ["A price already starts at this moment."]},
            ) from exc
        before = None
        if latest is not None:
            before = {
                "price": str(latest.amount),
                "currency": latest.currency,
                "price_valid_from": latest.valid_from.isoformat(),
            }
        after = {
            "price": str(row.amount),
            "currency": row.currency,
            "price_valid_from": row.valid_from.isoformat(),
            "price_id": row.pk,
        }
        audit.record(owner, AuditEvent.Action.UPDATE, before=before, after=after, verb=verb, reason=reason)
    return row


def set_plan_price(plan: Plan, amount, *, valid_from=None, currency: str = "", reason: str = "") -> PlanPrice:
    """Add a new tax-inclusive price version for `plan`, in force from `valid_from` (a datetime, or a
    date meaning local midnight; default now).

    Guarantees: existing price rows are never changed; the amount is a non-negative decimal with at
    most 2 places (floats refused); a start that duplicates an existing version, that is earlier
    than the latest version, or (once the plan has a price) that is before today is refused with
    NotAllowed (`price_start_taken` / `price_backdated`), because it would rewrite prices already
    charged. Locks the plan row so two changes cannot interleave; audited on the plan.
    Not idempotent: a retry with the same start is refused as a duplicate.
    """
    return _set_price(plan, PlanPrice, "plan", amount, valid_from, currency, reason, "set_plan_price")


def set_addon_price(addon: AddOn, amount, *, valid_from=None, currency: str = "", reason: str = "") -> AddOnPrice:
    """Add a new price version for `addon`; same rules and guarantees as `set_plan_price`."""
    return _set_price(addon, AddOnPrice, "addon", amount, valid_from, currency, reason, "set_addon_price")

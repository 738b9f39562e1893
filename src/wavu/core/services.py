"""Core services: changing tax rates (the one ISP setting that lives in the database so far)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from . import audit
from .models import AuditEvent, TaxRate
from .money import InvalidAmount, to_decimal
from .tax import TaxClass, TaxKind


def add_tax_rate(*, tax_class: str, kind: str, rate: object, valid_from: dt.date, source: str = "") -> TaxRate:
    """Record a new rate in force from `valid_from` (e.g. after a Finance Act). Audited.

    Guarantees: rates are fractions in [0, 1) with at most 4 decimals; one row per
    (class, kind, start date) — a duplicate is refused with a clear error and nothing is written.
    Existing rows are never edited, so invoices keep the rates they were issued with.
    """
    errors = {}
    if tax_class not in TaxClass.values:
        errors["tax_class"] = [f"unknown tax class {tax_class!r}"]
    if kind not in (TaxKind.VAT, TaxKind.EXCISE):
        errors["kind"] = [f"unknown tax kind {kind!r}"]
    try:
        value = to_decimal(rate)
        if not (Decimal(0) <= value < 1) or value != value.quantize(Decimal("0.0001")):
            errors["rate"] = ["a rate is a fraction between 0 and 1 with at most 4 decimals, e.g. 0.16"]
    except InvalidAmount as exc:
        errors["rate"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            row = TaxRate.objects.create(
                tax_class=tax_class, kind=kind, rate=value, valid_from=valid_from, source=source
            )
            audit.record(row, AuditEvent.Action.CREATE, verb="add_tax_rate")
    except IntegrityError as exc:
        raise ValidationError(
            {"valid_from": [f"a {kind} rate for {tax_class} already starts on {valid_from}"]}
        ) from exc
    return row

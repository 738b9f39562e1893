"""The tax engine: split a tax-inclusive price into net, excise duty and VAT.

Kenyan rule (see shared reference, kenya-tax-and-regulation §4.2): excise duty applies to the
service value and VAT applies to the excise-inclusive value, so gross = net × (1 + e) × (1 + v).
Prices are tax-inclusive, so we compute *backwards from the gross*:

    vat     = round(gross × v / (1 + v))
    ex_vat  = gross − vat
    net     = round(ex_vat / (1 + e))
    excise  = ex_vat − net

Guarantee: net + excise + vat == gross exactly, for every amount and every rate, because only
two values are rounded and the other two are differences. Rates are data (`TaxRate` rows with
start dates), never constants, because Finance Acts change them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from .money import Money, round_money


class TaxClass:
    """Tax classes of what an ISP sells; a plan or charge names one."""

    INTERNET = "internet"  # internet data services: excise duty + VAT 16 % (band B)
    STANDARD = "standard"  # equipment, installation, static IP: VAT 16 % only (band B)
    ZERO_RATED = "zero_rated"  # VAT 0 % (band C)
    EXEMPT = "exempt"  # exempt supplies (band A)

    choices = [
        (INTERNET, "Internet data service (excise + VAT)"),
        (STANDARD, "Standard-rated goods and services (VAT only)"),
        (ZERO_RATED, "Zero-rated (VAT 0 %)"),
        (EXEMPT, "Exempt"),
    ]
    values = [c[0] for c in choices]


class TaxKind:
    VAT = "vat"
    EXCISE = "excise"
    choices = [(VAT, "VAT"), (EXCISE, "Excise duty")]


# eTIMS tax bands: A exempt, B 16 %, C zero-rated 0 %, D non-VAT, E 8 %.
ETIMS_BAND = {
    TaxClass.INTERNET: "B",
    TaxClass.STANDARD: "B",
    TaxClass.ZERO_RATED: "C",
    TaxClass.EXEMPT: "A",
}


@dataclass(frozen=True)
class Rates:
    """The rates in force for one tax class on one date (fractions, e.g. Decimal('0.16'))."""

    tax_class: str
    vat: Decimal
    excise: Decimal
    band: str


@dataclass(frozen=True)
class TaxSplit:
    gross: Money
    net: Money
    excise: Money
    vat: Money
    rates: Rates


class TaxRateMissing(LookupError):
    pass


def split_gross(gross: Money, rates: Rates) -> TaxSplit:
    """Split a tax-inclusive amount into net, excise and VAT. Pure; see module docstring."""
    cur = gross.currency
    g = round_money(gross.amount, cur)
    vat = round_money(g * rates.vat / (1 + rates.vat), cur)
    ex_vat = g - vat
    net = round_money(ex_vat / (1 + rates.excise), cur)
    excise = ex_vat - net
    return TaxSplit(
        gross=Money(g, cur),
        net=Money(net, cur),
        excise=Money(excise, cur),
        vat=Money(vat, cur),
        rates=rates,
    )


def rates_for(tax_class: str, on: dt.date) -> Rates:
    """The VAT and excise rates in force for `tax_class` on date `on`, read from `TaxRate` rows.

    A class with no excise row has excise 0; every class must have a VAT row (0 for exempt and
    zero-rated) or `TaxRateMissing` is raised, so a missing configuration never bills untaxed.
    """
    from .models import TaxRate

    if tax_class not in TaxClass.values:
        raise TaxRateMissing(f"unknown tax class {tax_class!r}")
    found: dict[str, Decimal] = {}
    rows = (
        TaxRate.objects.filter(tax_class=tax_class, valid_from__lte=on)
        .order_by("kind", "-valid_from")
        .values_list("kind", "rate")
    )
    for kind, rate in rows:
        found.setdefault(kind, rate)
    if TaxKind.VAT not in found:
        raise TaxRateMissing(f"no VAT rate for tax class {tax_class!r} on {on}")
    return Rates(
        tax_class=tax_class,
        vat=found[TaxKind.VAT],
        excise=found.get(TaxKind.EXCISE, Decimal("0")),
        band=ETIMS_BAND[tax_class],
    )


def split_price(gross: Money, tax_class: str, on: dt.date) -> TaxSplit:
    """Split a tax-inclusive price of `tax_class` with the rates in force on `on`."""
    return split_gross(gross, rates_for(tax_class, on))


class RateBook:
    """Every `TaxRate` row read once, answering `rates_for` in memory (same answers): for
    set-based writers that split thousands of lines over many dates."""

    def __init__(self):
        from .models import TaxRate

        self._rows: dict[str, list[tuple[dt.date, str, Decimal]]] = {}
        for tax_class, kind, rate, valid_from in TaxRate.objects.order_by("-valid_from").values_list(
            "tax_class", "kind", "rate", "valid_from"
        ):
            self._rows.setdefault(tax_class, []).append((valid_from, kind, rate))
        self._cache: dict[tuple[str, dt.date], Rates] = {}

    def rates_for(self, tax_class: str, on: dt.date) -> Rates:
        key = (tax_class, on)
        if key in self._cache:
            return self._cache[key]
        if tax_class not in TaxClass.values:
            raise TaxRateMissing(f"unknown tax class {tax_class!r}")
        found: dict[str, Decimal] = {}
        for valid_from, kind, rate in self._rows.get(tax_class, ()):
            if valid_from <= on:
                found.setdefault(kind, rate)
        if TaxKind.VAT not in found:
            raise TaxRateMissing(f"no VAT rate for tax class {tax_class!r} on {on}")
        self._cache[key] = rates = Rates(
            tax_class=tax_class,
            vat=found[TaxKind.VAT],
            excise=found.get(TaxKind.EXCISE, Decimal("0")),
            band=ETIMS_BAND[tax_class],
        )
        return rates

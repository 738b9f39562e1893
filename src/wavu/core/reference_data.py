"""Reference data Wavu ships: Kenyan tax rates with their start dates.

Sources (shared reference, kenya-tax-and-regulation §4.1–4.2): VAT 16 % (VAT Act 2013, in force
2 Sep 2013); excise duty on internet data services 15 % (Finance Act 2018, from 1 Oct 2018),
20 % (Finance Act 2021, from 1 Jul 2021), 15 % (Finance Act 2023, from 1 Jul 2023).
Operators add rows when a Finance Act changes a rate; nothing here is a constant in code.
"""

import datetime as dt
from decimal import Decimal

from .tax import TaxClass, TaxKind

DEFAULT_TAX_RATES = [
    (TaxClass.INTERNET, TaxKind.VAT, Decimal("0.16"), dt.date(2013, 9, 2), "VAT Act 2013"),
    (TaxClass.INTERNET, TaxKind.EXCISE, Decimal("0.15"), dt.date(2018, 10, 1), "Finance Act 2018"),
    (TaxClass.INTERNET, TaxKind.EXCISE, Decimal("0.20"), dt.date(2021, 7, 1), "Finance Act 2021"),
    (TaxClass.INTERNET, TaxKind.EXCISE, Decimal("0.15"), dt.date(2023, 7, 1), "Finance Act 2023"),
    (TaxClass.STANDARD, TaxKind.VAT, Decimal("0.16"), dt.date(2013, 9, 2), "VAT Act 2013"),
    (TaxClass.ZERO_RATED, TaxKind.VAT, Decimal("0"), dt.date(2013, 9, 2), "VAT Act 2013, Second Schedule"),
    (TaxClass.EXEMPT, TaxKind.VAT, Decimal("0"), dt.date(2013, 9, 2), "VAT Act 2013, First Schedule"),
]


def install_tax_rates(TaxRate=None) -> None:
    """Create the default rate rows that are missing. Idempotent; used by the migration and tests."""
    if TaxRate is None:
        from .models import TaxRate
    existing = set(TaxRate.objects.values_list("tax_class", "kind", "valid_from"))
    TaxRate.objects.bulk_create(
        [
            TaxRate(tax_class=c, kind=k, rate=r, valid_from=d, source=s)
            for c, k, r, d, s in DEFAULT_TAX_RATES
            if (c, k, d) not in existing
        ]
    )

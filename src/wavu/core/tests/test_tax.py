"""The tax engine: prices are tax-inclusive and the parts always add up to the price."""

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wavu.core.money import Money
from wavu.core.tax import Rates, TaxClass, TaxRateMissing, rates_for, split_gross, split_price

INTERNET_2023 = Rates(TaxClass.INTERNET, vat=Decimal("0.16"), excise=Decimal("0.15"), band="B")


def test_the_kes_2999_worked_example_splits_exactly():
    split = split_gross(Money.of("2999"), INTERNET_2023)
    assert split.vat.amount == Decimal("413.66")
    assert split.net.amount == Decimal("2248.12")
    assert split.excise.amount == Decimal("337.22")
    assert split.net + split.excise + split.vat == Money.of("2999")


@pytest.mark.django_db
def test_rates_are_data_with_start_dates_and_follow_the_finance_acts():
    assert rates_for(TaxClass.INTERNET, dt.date(2022, 1, 1)).excise == Decimal("0.20")  # Finance Act 2021
    assert rates_for(TaxClass.INTERNET, dt.date(2024, 1, 1)).excise == Decimal("0.15")  # Finance Act 2023
    assert rates_for(TaxClass.INTERNET, dt.date(2024, 1, 1)).vat == Decimal("0.16")


@pytest.mark.django_db
def test_equipment_pays_vat_only_and_exempt_pays_nothing():
    equipment = split_price(Money.of("1160"), TaxClass.STANDARD, dt.date(2026, 1, 1))
    assert (equipment.net.amount, equipment.excise.amount, equipment.vat.amount) == (
        Decimal("1000.00"),
        Decimal("0.00"),
        Decimal("160.00"),
    )
    exempt = split_price(Money.of("500"), TaxClass.EXEMPT, dt.date(2026, 1, 1))
    assert exempt.net.amount == Decimal("500.00") and exempt.vat.is_zero() and exempt.rates.band == "A"
    zero = split_price(Money.of("500"), TaxClass.ZERO_RATED, dt.date(2026, 1, 1))
    assert zero.vat.is_zero() and zero.rates.band == "C"


@pytest.mark.django_db
def test_an_unknown_tax_class_or_a_date_before_any_rate_is_refused():
    with pytest.raises(TaxRateMissing):
        rates_for("luxury", dt.date(2026, 1, 1))
    with pytest.raises(TaxRateMissing):
        rates_for(TaxClass.INTERNET, dt.date(2000, 1, 1))


amounts = st.decimals(min_value=0, max_value=Decimal("10000000"), places=2, allow_nan=False, allow_infinity=False)
rates = st.decimals(min_value=0, max_value=Decimal("0.9999"), places=4, allow_nan=False, allow_infinity=False)


@given(gross=amounts, vat=rates, excise=rates)
def test_net_plus_excise_plus_vat_equals_the_price_to_the_cent_for_any_amount_and_rates(gross, vat, excise):
    split = split_gross(Money.of(gross), Rates(TaxClass.INTERNET, vat=vat, excise=excise, band="B"))
    assert split.net + split.excise + split.vat == Money.of(gross)
    for part in (split.net, split.excise, split.vat):
        assert part.amount == part.amount.quantize(Decimal("0.01"))
        assert part.amount >= 0


@given(gross=amounts)
def test_each_part_is_within_a_cent_of_the_exact_value(gross):
    split = split_gross(Money.of(gross), INTERNET_2023)
    exact_net = gross / (Decimal("1.15") * Decimal("1.16"))
    assert abs(split.net.amount - exact_net) <= Decimal("0.01")
    assert abs(split.vat.amount - gross * Decimal("0.16") / Decimal("1.16")) <= Decimal("0.005")

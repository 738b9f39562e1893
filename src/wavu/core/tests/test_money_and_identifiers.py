"""Money never floats; phones, KRA PINs and account numbers are checked where people type them."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from wavu.core.identifiers import (
    clean_account_reference,
    is_valid_account_number,
    make_account_number,
    normalize_kra_pin,
)
from wavu.core.money import CurrencyMismatch, InvalidAmount, Money
from wavu.core.phones import normalize_msisdn


def test_money_refuses_floats_and_garbage():
    with pytest.raises(InvalidAmount):
        Money.of(10.5)
    with pytest.raises(InvalidAmount):
        Money.of("ten shillings")
    with pytest.raises(InvalidAmount):
        Money.of("NaN")


def test_money_rounds_half_up_once_and_keeps_currency():
    assert Money.of("0.005").amount == Decimal("0.01")
    assert Money.of("2,500").amount == Decimal("2500.00")
    with pytest.raises(CurrencyMismatch):
        Money.of("1") + Money.of("1", "USD")


@pytest.mark.parametrize(
    "typed",
    ["0712345678", "0712 345 678", "712345678", "+254712345678", "254712345678", "+254 712-345-678"],
)
def test_a_safaricom_number_is_stored_as_2547_whatever_form_it_is_typed_in(typed):
    assert normalize_msisdn(typed) == "254712345678"


@pytest.mark.parametrize("typed", ["0110123456", "110123456", "+254110123456"])
def test_01_numbers_are_stored_as_2541(typed):
    assert normalize_msisdn(typed) == "254110123456"


@pytest.mark.parametrize("typed", ["", "12345", "0201234567", "+255712345678", "07123456789", "hello"])
def test_a_bad_phone_gets_a_clear_error(typed):
    with pytest.raises(ValidationError):
        normalize_msisdn(typed)


def test_kra_pin_is_a_letter_nine_digits_and_a_letter():
    assert normalize_kra_pin(" a123456789b ") == "A123456789B"
    assert normalize_kra_pin("") == ""
    for bad in ("A12345678B", "1234567890B", "A123456789", "AB23456789C"):
        with pytest.raises(ValidationError):
            normalize_kra_pin(bad)


def test_account_references_forgive_case_spaces_dashes_and_hash():
    assert clean_account_reference(" #10-00 8 ") == "10008"


@given(st.integers(min_value=1000, max_value=99_999_999))
def test_a_one_digit_typo_in_an_account_number_is_never_another_valid_account(seq):
    number = make_account_number(seq)
    assert is_valid_account_number(number)
    for i, ch in enumerate(number):
        for d in "0123456789":
            if d != ch:
                typo = number[:i] + d + number[i + 1 :]
                assert not is_valid_account_number(typo)
    for i in range(len(number) - 1):
        if number[i] != number[i + 1]:
            swapped = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
            assert not is_valid_account_number(swapped)

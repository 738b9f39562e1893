"""Money: a Decimal amount with a currency.

Guarantees: never a float; amounts are quantised to the currency's minor unit (KES: 2 places)
with ROUND_HALF_UP only when `Money.of` or `.rounded()` is called, i.e. once, at the boundary;
arithmetic between different currencies raises `CurrencyMismatch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MINOR_UNITS = {"KES": 2, "USD": 2, "UGX": 0, "TZS": 2}
DEFAULT_CURRENCY = "KES"


class CurrencyMismatch(ValueError):
    pass


class InvalidAmount(ValueError):
    """Raised for amounts that are not finite decimal numbers (including floats)."""


def to_decimal(value: object) -> Decimal:
    """Convert a str/int/Decimal to Decimal; floats are refused because they are already inexact."""
    if isinstance(value, bool | float):
        raise InvalidAmount(f"amount must be a decimal string or integer, not {type(value).__name__}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        cleaned = value.strip().replace(",", "")
        try:
            result = Decimal(cleaned)
        except InvalidOperation as exc:
            raise InvalidAmount(f"{value!r} is not a number") from exc
    else:
        raise InvalidAmount(f"cannot use {type(value).__name__} as an amount")
    if not result.is_finite():
        raise InvalidAmount(f"{value!r} is not a finite amount")
    return result


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2))


def round_money(amount: Decimal, currency: str = DEFAULT_CURRENCY) -> Decimal:
    """Round half-up to the currency's minor unit."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str = DEFAULT_CURRENCY

    @classmethod
    def of(cls, amount: object, currency: str = DEFAULT_CURRENCY) -> Money:
        """Build a rounded Money from a str/int/Decimal (never a float)."""
        return cls(round_money(to_decimal(amount), currency), currency)

    @classmethod
    def zero(cls, currency: str = DEFAULT_CURRENCY) -> Money:
        return cls(round_money(Decimal(0), currency), currency)

    def _check(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __mul__(self, factor: object) -> Money:
        """Multiply by a quantity or ratio; the result is NOT rounded (call .rounded() once at the end)."""
        return Money(self.amount * to_decimal(factor), self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._check(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._check(other)
        return self.amount >= other.amount

    def rounded(self) -> Money:
        return Money(round_money(self.amount, self.currency), self.currency)

    def is_zero(self) -> bool:
        return self.amount == 0

    def is_positive(self) -> bool:
        return self.amount > 0

    def is_negative(self) -> bool:
        return self.amount < 0

    def __str__(self) -> str:
        places = MINOR_UNITS.get(self.currency, 2)
        return f"{self.currency} {self.amount:,.{places}f}"


def money_sum(items, currency: str = DEFAULT_CURRENCY) -> Money:
    total = Money.zero(currency)
    for item in items:
        total = total + item
    return total

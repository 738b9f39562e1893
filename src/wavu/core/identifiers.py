"""Identifiers people type: account numbers (with a Damm check digit) and KRA PINs.

Account numbers are what subscribers type into the M-Pesa paybill menu. The Damm check digit
detects every single-digit typo and every swap of two adjacent digits, so a one-digit mistake
never lands on another customer's account: it is rejected as invalid instead.
"""

import re

from django.core.exceptions import ValidationError

# Damm's totally anti-symmetric quasigroup of order 10.
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)


def damm_digit(digits: str) -> int:
    interim = 0
    for ch in digits:
        interim = _DAMM[interim][int(ch)]
    return interim


def make_account_number(sequence_value: int) -> str:
    """Account number = the sequence value followed by its Damm check digit (e.g. 1000 → 10008)."""
    base = str(int(sequence_value))
    return base + str(damm_digit(base))


def is_valid_account_number(value: str) -> bool:
    """2–12 ASCII digits with a right Damm check digit (other scripts' digits are no account number)."""
    return bool(re.fullmatch(r"[0-9]{2,12}", value or "")) and damm_digit(value) == 0


def clean_account_reference(raw: str) -> str:
    """Forgive what people add around an account number: case, spaces, dashes, a leading '#'."""
    return re.sub(r"[\s\-]", "", (raw or "").strip()).lstrip("#").upper()


KRA_PIN_RE = re.compile(r"^[A-Z]\d{9}[A-Z]$")


def normalize_kra_pin(raw: str) -> str:
    """KRA PIN: a letter, nine digits, a letter (e.g. A123456789B). Upper-cased; blank stays blank."""
    value = re.sub(r"\s", "", raw or "").upper()
    if not value:
        return ""
    if not KRA_PIN_RE.match(value):
        raise ValidationError(
            f"{raw!r} is not a KRA PIN: expected a letter, 9 digits and a letter, e.g. A123456789B.",
            code="kra_pin_invalid",
        )
    return value

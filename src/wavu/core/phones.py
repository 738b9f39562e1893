"""Kenyan mobile numbers, stored as 2547######## or 2541######## (# = digit) (the form Daraja expects).

Parsing uses `phonenumbers` (never hand-parsing); accepted inputs include 0712 345 678, 712345678,
+254712345678, 254712345678 and 0110 123 456.
"""

import re

import phonenumbers
from django.core.exceptions import ValidationError


def normalize_msisdn(raw: str) -> str:
    """Return the number as 254 followed by nine digits or raise ValidationError with a clear message."""
    if raw is None or not str(raw).strip():
        raise ValidationError("Enter a phone number.", code="phone_required")
    text = re.sub(r"[\s\-().]", "", str(raw))
    if re.fullmatch(r"[17]\d{8}", text):  # typed without the leading 0
        text = "0" + text
    elif re.fullmatch(r"254\d{9}", text):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, "KE")
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(f"{raw!r} is not a phone number.", code="phone_invalid") from exc
    if number.country_code != 254 or not phonenumbers.is_valid_number(number):
        raise ValidationError(f"{raw!r} is not a valid Kenyan phone number.", code="phone_invalid")
    national = str(number.national_number)
    if len(national) != 9 or national[0] not in "17":
        raise ValidationError(f"{raw!r} is not a Kenyan mobile number (07… or 01…).", code="phone_not_mobile")
    return "254" + national


def mask_msisdn(msisdn: str) -> str:
    """For logs: 254712***678."""
    return msisdn[:6] + "***" + msisdn[-3:] if len(msisdn) >= 9 else "***"

"""Customer reads: staff search and the account-reference lookup that payments use."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from wavu.core.identifiers import KRA_PIN_RE, clean_account_reference, is_valid_account_number
from wavu.core.phones import normalize_msisdn

from .models import Customer


def search_customers(q: str, queryset: QuerySet[Customer] | None = None) -> QuerySet[Customer]:
    """Customers matching what staff typed: part of a name (or contact person), a phone number in
    any form people type it (0712…, +254 712…, 712…), an account number (spaces, dashes or a
    leading '#' forgiven), a KRA PIN, a national ID or an e-mail address. Blank `q` matches all."""
    qs = Customer.objects.all() if queryset is None else queryset
    text = (q or "").strip()
    if not text:
        return qs
    condition = Q(name__icontains=text) | Q(contact_person__icontains=text)
    try:
        phone = normalize_msisdn(text)
    except ValidationError:
        phone = None
    if phone:
        condition |= Q(phone=phone) | Q(alt_phone=phone)
    reference = clean_account_reference(text)
    if reference.isdigit():
        condition |= Q(account_number=reference) | Q(national_id=reference)
    pin = re.sub(r"\s", "", text).upper()
    if KRA_PIN_RE.match(pin):
        condition |= Q(kra_pin=pin)
    if "@" in text:
        condition |= Q(email__iexact=text)
    return qs.filter(condition)


def find_by_account_reference(text: str) -> Customer | None:
    """The customer whose account number was typed (e.g. in the M-Pesa paybill "account" box).

    Returns a customer only when the cleaned reference has a valid Damm check digit, so a one-digit
    typo or two swapped digits never land on somebody else's account: they give None. Closed
    accounts are returned too (the caller decides what to do with money for them).
    """
    reference = clean_account_reference(text)
    if not is_valid_account_number(reference):
        return None
    return Customer.objects.filter(account_number=reference).first()


def with_phone(msisdn: str) -> QuerySet[Customer]:
    """Customers whose main or alternative phone is `msisdn` (already normalised, 2547…/2541…)."""
    return Customer.objects.filter(Q(phone=msisdn) | Q(alt_phone=msisdn)).order_by("pk")

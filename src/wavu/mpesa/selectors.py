"""M-Pesa reads: which channel a hook token names, whether a source address is allowed, who a paybill
account reference names, which stored callbacks are due for (another) processing attempt, and which
need a person.

No writes here.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q

from wavu.billing.selectors import invoice_by_number
from wavu.billing.services import INVOICE_SERIES, format_number
from wavu.core import clock
from wavu.core.fields import EncryptedTextField
from wavu.core.identifiers import clean_account_reference, is_valid_account_number
from wavu.core.phones import normalize_msisdn
from wavu.customers.models import Customer
from wavu.customers.selectors import find_by_account_reference
from wavu.customers.selectors import with_phone as customers_with_phone
from wavu.subscriptions.selectors import find_by_username

from .models import InboundCallback, PaymentChannel

logger = logging.getLogger("wavu.mpesa")

MAX_TOKEN_LENGTH = 64

# Defaults for the knobs read from settings.WAVU (see `hook_setting`).
HOOK_DEFAULTS = {
    "HOOK_MAX_BODY_BYTES": 16 * 1024,  # larger requests are answered 413 (kept, truncated, when the token is valid)
    "HOOK_TRUSTED_PROXIES": 0,  # 0: the source address is REMOTE_ADDR; n: the n-th X-Forwarded-For entry from the right
    "CALLBACK_STUCK_SECONDS": 60,  # a confirmation still "received" after this long is processed by the retry job
    "CALLBACK_MAX_ATTEMPTS": 8,  # the retry job gives up after this many processing attempts
    "HOOK_CHANNEL_CACHE_SECONDS": 5,  # how long a web process reuses the channels it read (0: every request)
}


def hook_setting(name: str) -> int:
    """A hook setting from settings.WAVU, or its default from HOOK_DEFAULTS."""
    return int(getattr(settings, "WAVU", {}).get(name, HOOK_DEFAULTS[name]))


# --- channels and source addresses -------------------------------------------------------------


def channel_for_token(token: str) -> PaymentChannel | None:
    """The channel whose hook token is `token`, or None.

    Timing does not tell an attacker how much of a guess was right: the token is never used in a
    WHERE clause (an index lookup stops at the first differing byte); instead every channel's token
    is compared with `hmac.compare_digest`, all of them, whatever matched. Inactive channels are
    included on purpose: Safaricom keeps calling a registered URL, and money that has already moved
    must still be recorded.

    The channels are read once per HOOK_CHANNEL_CACHE_SECONDS per process (`_channels`), so a hook
    request normally costs no query here; an unknown token re-reads them at once (a channel created
    a moment ago), and saving a channel clears this process's copy. Another web process may accept
    a rotated-out token, or apply an old allowlist, for at most that many seconds.
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    given = token.encode()
    for fresh in (False, True):
        channels, loaded_now = _channels(fresh=fresh)
        found = None
        for channel in channels:
            if hmac.compare_digest(given, (channel.hook_token or "").encode()) and channel.hook_token:
                found = channel
        if found is not None or loaded_now:
            return found
    return None


_channel_cache: dict = {"until": 0.0, "channels": []}


def _channels(*, fresh: bool = False) -> tuple[list[PaymentChannel], bool]:
    """Every channel, secrets left undecrypted (a handful of rows), from this process's copy while it
    is younger than HOOK_CHANNEL_CACHE_SECONDS; returns (channels, whether they were just read)."""
    now = time.monotonic()
    if not fresh and now < _channel_cache["until"]:
        return _channel_cache["channels"], False
    secrets = [f.name for f in PaymentChannel._meta.concrete_fields if isinstance(f, EncryptedTextField)]
    channels = list(PaymentChannel.objects.defer(*secrets))
    _channel_cache.update(until=now + hook_setting("HOOK_CHANNEL_CACHE_SECONDS"), channels=channels)
    return channels, True


def forget_cached_channels(**kwargs) -> None:
    """Drop this process's copy of the channels (connected to PaymentChannel's post_save/post_delete)."""
    _channel_cache.update(until=0.0, channels=[])


def allowlist_networks(channel: PaymentChannel) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The channel's allowlist (addresses or networks separated by spaces, commas or new lines).
    Entries that are not addresses are skipped and logged, never fatal."""
    networks = []
    for entry in re.split(r"[\s,;]+", channel.allowlist or ""):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            logger.warning("channel %s: allowlist entry %r is not an address or network; ignored", channel.pk, entry)
    return networks


def source_on_allowlist(channel: PaymentChannel, source_ip: str | None) -> bool:
    """True when `source_ip` lies in one of the channel's allowlisted addresses or networks."""
    if not source_ip:
        return False
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    return any(address in network for network in allowlist_networks(channel))


# --- who a paybill account reference names ------------------------------------------------------

_INVOICE_RE = re.compile(rf"^{INVOICE_SERIES}0*([0-9]{{1,9}})$")
_PHONE_RE = re.compile(r"^(?:\+?254|0)[17][0-9]{8}$")
OTHER_DIGITS = "the account reference has digits other than 0-9, which match no account"


def _has_other_digits(text: str) -> bool:
    """True when `text` holds a digit that is not ASCII 0-9 ("١", "१", "１", "²"): int() and the
    phone parser would read them, so each rule would treat them differently; none of them matches."""
    return any(ch.isdigit() and not "0" <= ch <= "9" for ch in text)


@dataclass(frozen=True)
class ReferenceMatch:
    """The customer an account reference names (None: nobody, the payment goes to suspense), the
    rule that matched ("account_number", "invoice_number", "phone", "username" or ""), and why."""

    customer: Customer | None
    rule: str
    detail: str


def match_account_reference(text: str) -> ReferenceMatch:
    """Who the payer meant by what they typed as the paybill account (C2B BillRefNumber).

    Tried in this order, the first hit wins:
    1. an account number: case, spaces, dashes and a leading '#' forgiven; the Damm check digit must
       be right, so a typo matches nobody (rather than someone else);
    2. an invoice number: INV-000123 in any case, with or without the dash and leading zeros;
    3. a customer's registered phone (main or alternative), only when the reference is written as a
       whole Kenyan mobile number (07…/01…, 2547…, +2547…); two customers on one phone match nobody;
    4. a service (PPPoE/hotspot) username, case-insensitive.
    Digits are ASCII 0-9 in every rule: a reference holding other digits ("INV-٠٠٠١", "१२२१९",
    "１０００８") matches nobody. The payer's MSISDN is never an input: Safaricom masks or hashes it.
    """
    raw = (text or "").strip()
    if not raw:
        return ReferenceMatch(None, "", "no account reference was given")
    if _has_other_digits(raw):
        return ReferenceMatch(None, "", OTHER_DIGITS)
    customer = find_by_account_reference(raw)
    if customer is not None:
        return ReferenceMatch(customer, "account_number", f"account number {customer.account_number}")
    return _match_beyond_account_number(raw)


def _match_beyond_account_number(raw: str) -> ReferenceMatch:
    """Rules 2–4 of `match_account_reference` for a non-blank reference that is no account number."""
    if _has_other_digits(raw):
        return ReferenceMatch(None, "", OTHER_DIGITS)
    compact = re.sub(r"[\s\-_/.]", "", raw).lstrip("#").upper()
    invoice_match = _INVOICE_RE.match(compact)
    if invoice_match and int(invoice_match.group(1)) > 0:
        number = format_number(INVOICE_SERIES, int(invoice_match.group(1)))
        invoice = invoice_by_number(number)
        if invoice is not None:
            return ReferenceMatch(invoice.customer, "invoice_number", f"invoice {number}")

    if _PHONE_RE.match(compact):
        try:
            phone = normalize_msisdn(compact)
        except ValidationError:
            phone = None
        if phone:
            owners = list(customers_with_phone(phone)[:2])
            if len(owners) == 1:
                return ReferenceMatch(owners[0], "phone", "the customer's registered phone")
            if len(owners) > 1:
                return ReferenceMatch(None, "", "the phone number belongs to more than one customer")

    subscription = find_by_username(raw)
    if subscription is not None:
        return ReferenceMatch(subscription.customer, "username", f"service username {subscription.username}")
    return ReferenceMatch(None, "", "no customer matches the account reference")


def match_account_references(texts) -> dict[str, ReferenceMatch]:
    """`match_account_reference` for many references at once: {text: match}. Account numbers (what
    nearly every payer types) are looked up in one query; the rest go through the rules one by one.
    The same rules, ASCII digits included, as `match_account_reference`."""
    texts = set(texts)
    numbers = {}
    for text in texts:
        number = clean_account_reference((text or "").strip())
        if number and is_valid_account_number(number):
            numbers[text] = number
    customers = {c.account_number: c for c in Customer.objects.filter(account_number__in=set(numbers.values()))}
    found = {}
    for text in texts:
        customer = customers.get(numbers.get(text))
        raw = (text or "").strip()
        if customer is not None:
            found[text] = ReferenceMatch(customer, "account_number", f"account number {customer.account_number}")
        elif raw:  # the account numbers were all looked up above: only the other rules are left
            found[text] = _match_beyond_account_number(raw)
        else:
            found[text] = match_account_reference(text)
    return found


# --- callbacks to (re)process --------------------------------------------------------------------


def needs_action_condition() -> Q:
    """Stored callbacks a person must look at, not yet marked dealt with: every request refused
    ("rejected": a hook refusal or a body the worker could not read), every "mismatch" (a receipt
    known with another amount, an STK success for another amount), and every "failed" one whose
    retries are used up (CALLBACK_MAX_ATTEMPTS). Matches the partial index "callback_needs_action"."""
    Status = InboundCallback.Status
    return Q(resolved_at__isnull=True) & (
        Q(status__in=(Status.REJECTED, Status.MISMATCH))
        | Q(status=Status.FAILED, attempts__gte=hook_setting("CALLBACK_MAX_ATTEMPTS"))
    )


def callbacks_needing_action():
    """The stored callbacks needing action (`needs_action_condition`), newest first."""
    return InboundCallback.objects.filter(needs_action_condition())


def count_callbacks_needing_action() -> int:
    """How many stored callbacks need action: one count over the partial index (for /healthz)."""
    return callbacks_needing_action().order_by().count()


def needs_action(callback: InboundCallback) -> bool:
    """`needs_action_condition` for one callback already read."""
    Status = InboundCallback.Status
    if callback.resolved_at is not None:
        return False
    if callback.status == Status.FAILED:
        return callback.attempts >= hook_setting("CALLBACK_MAX_ATTEMPTS")
    return callback.status in (Status.REJECTED, Status.MISMATCH)


def retry_delay(attempts: int) -> dt.timedelta:
    """How long after its receipt a failed callback waits before attempt `attempts + 1`:
    2^attempts − 1 minutes (1, 3, 7, 15, 31 … minutes after it arrived)."""
    return dt.timedelta(minutes=2 ** min(attempts, 16) - 1)


def callbacks_to_retry(now: dt.datetime | None = None, *, kinds, limit: int = 200) -> list[int]:
    """Ids of stored callbacks of `kinds` due for another processing attempt, oldest first (at most `limit`):
    failed ones whose back-off (`retry_delay`) has passed, and ones still "received" more than
    CALLBACK_STUCK_SECONDS after they arrived (the process that stored them died before processing,
    or the job was lost). Callbacks with CALLBACK_MAX_ATTEMPTS attempts are left for staff (they
    need action: `callbacks_needing_action`), as are callbacks staff marked dealt with."""
    now = now or clock.now()
    stuck_before = now - dt.timedelta(seconds=hook_setting("CALLBACK_STUCK_SECONDS"))
    candidates = (
        InboundCallback.objects.filter(
            kind__in=kinds, attempts__lt=hook_setting("CALLBACK_MAX_ATTEMPTS"), resolved_at__isnull=True
        )
        .filter(
            Q(status=InboundCallback.Status.FAILED)
            | Q(status=InboundCallback.Status.RECEIVED, received_at__lte=stuck_before)
        )
        .order_by("received_at", "pk")
        .values_list("pk", "status", "attempts", "received_at")
    )
    due = []
    for pk, status, attempts, received_at in candidates[: limit * 5]:
        if status == InboundCallback.Status.RECEIVED or received_at + retry_delay(attempts) <= now:
            due.append(pk)
            if len(due) >= limit:
                break
    return due

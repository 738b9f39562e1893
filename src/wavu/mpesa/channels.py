"""Payment channel services: create and change M-Pesa paybill/till channels, their callback URLs, C2B URL
registration with Daraja, and the hook token.

Rules (checked by `clean_channel_data`, enforced on create and update; a refusal writes nothing):
- `kind` paybill, till or b2c; `shortcode` 5–7 digits (the paybill number, the till's store number —
  Daraja's BusinessShortCode — or the B2C (bulk disbursement) shortcode), unique; a till needs its
  `till_number` (5–8 digits), a paybill and a B2C channel have none. A B2C channel only pays out
  (refunds, `wavu.mpesa.refunds`): it has no passkey and registers no C2B URLs.
- `environment` sandbox / production / simulator; `base_url` empty (the environment's address) or an
  absolute http(s) URL; production URLs must be https.
- Secrets (`consumer_key`, `consumer_secret`, `passkey`, `security_credential`) are optional and
  stored encrypted; omitted (or None) means "unchanged", "" clears one. They never appear in audit
  rows (which record only that a secret was set, changed or cleared), logs or API answers.
- A secret stored under a key Wavu no longer has (SECRET_KEY changed without WAVU_ENCRYPTION_KEY) is
  *unreadable* (`core.crypto.UnreadableSecret`): the channel still loads, lists and saves (the stored
  value is kept as it is), `secrets_status` says "unreadable", and entering a new value replaces it.
  Whatever needs it to talk to Daraja raises `daraja.CredentialsUnreadable` (409) before sending.
- `allowlist`: addresses or networks (IPv4/IPv6, CIDR) separated by spaces, commas or new lines.
- Changing what the access token depends on (credentials, environment, address, shortcode) drops the
  cached `AccessToken`, so the next Daraja call fetches one for the new settings.

Callback URLs are `settings.WAVU_PUBLIC_URL` + the hook path (`mpesa-hooks:*` URL names, with the
channel's hook token). Safaricom refuses URLs containing mpesa, m-pesa, safaricom, query, sql, exe,
exec or cmd in any case (host included): `check_public_url` refuses them before anything is sent, and
hook tokens are generated without those words.
"""

from __future__ import annotations

import ipaddress
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from wavu.core import audit, clock, crypto
from wavu.core.models import AuditEvent

from . import daraja
from .models import FORBIDDEN_URL_WORDS, AccessToken, PaymentChannel, new_hook_token

CHANNEL_FIELDS = (
    "name",
    "kind",
    "shortcode",
    "till_number",
    "environment",
    "base_url",
    "consumer_key",
    "consumer_secret",
    "passkey",
    "initiator_name",
    "security_credential",
    "validation",
    "allowlist_mode",
    "allowlist",
    "is_active",
)
SECRET_FIELDS = ("consumer_key", "consumer_secret", "passkey", "security_credential")
_REQUIRED = ("name", "kind", "shortcode")
# A cached access token is only valid for these settings.
_TOKEN_FIELDS = ("shortcode", "environment", "base_url", "consumer_key", "consumer_secret")
# Never in audit rows: the secrets and the hook token (it is a credential: it opens the hooks).
_NOT_AUDITED = (*SECRET_FIELDS, "hook_token")


# The hook URL names (wavu/mpesa/urls.py, namespace "mpesa-hooks", included at /hooks/) by callback kind.
HOOKS = {
    "c2b_validation": "c2b-validation",
    "c2b_confirmation": "c2b-confirmation",
    "stk_callback": "stk-callback",
    "status_result": "status-result",
    "status_timeout": "status-timeout",
}


# --- URLs and tokens ---------------------------------------------------------------------------------


def forbidden_words(url: str) -> list[str]:
    """The words Safaricom refuses that occur in `url` (any case), most specific first."""
    lowered = url.lower()
    found = [word for word in FORBIDDEN_URL_WORDS if word in lowered]
    # "mpesa" inside "m-pesa" cannot happen; "exe" is reported once when "exec" is there.
    return [w for w in found if not (w == "exe" and "exec" in found)]


def check_public_url(url: str, *, field: str = "url") -> str:
    """`url` unchanged, or ValidationError (code `forbidden_url_word`) naming the word Safaricom refuses."""
    words = forbidden_words(url)
    if words:
        raise ValidationError(
            {
                field: [
                    ValidationError(
                        f"Safaricom refuses callback URLs containing {', '.join(repr(w) for w in words)} "
                        f"(in any case): {url}. Change WAVU_PUBLIC_URL (host and path) so it avoids them.",
                        code="forbidden_url_word",
                    )
                ]
            }
        )
    return url


def callback_urls(channel: PaymentChannel) -> dict[str, str]:
    """The absolute callback URLs of `channel`: c2b_validation, c2b_confirmation, stk_callback,
    status_result, status_timeout (settings.WAVU_PUBLIC_URL + the hook path with the channel's token)."""
    base = settings.WAVU_PUBLIC_URL.rstrip("/")
    token = channel.hook_token
    return {key: base + reverse(f"mpesa-hooks:{name}", kwargs={"token": token}) for key, name in HOOKS.items()}


def checked_callback_urls(channel: PaymentChannel) -> dict[str, str]:
    """`callback_urls`, refused (ValidationError) when one contains a forbidden word or, for a
    production channel, is not https."""
    urls = callback_urls(channel)
    for key, url in urls.items():
        check_public_url(url, field="WAVU_PUBLIC_URL")
        if channel.environment == PaymentChannel.Environment.PRODUCTION and not url.startswith("https://"):
            raise ValidationError(
                {"WAVU_PUBLIC_URL": [f"Daraja production needs https callback URLs; {key} is {url}."]}
            )
    return urls


def _redacted(url: str, token: str) -> str:
    return url.replace(token, "<token>")


# --- validation ----------------------------------------------------------------------------------------


class _Errors(dict):
    def add(self, field: str, message: str, code: str):
        self.setdefault(field, []).append(ValidationError(message, code=code))

    def raise_if_any(self):
        if self:
            raise ValidationError(dict(self))


def _text(field: str, value, limit: int, errors: _Errors, *, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors.add(field, "Enter text.", "invalid")
        return ""
    value = value.strip()
    if required and not value:
        errors.add(field, "This field is required.", "required")
    elif len(value) > limit:
        errors.add(field, f"At most {limit} characters.", "max_length")
    return value


def _digits(field: str, value, low: int, high: int, errors: _Errors, *, required: bool) -> str:
    text = _text(field, value, 64, errors, required=required)
    if text and not re.fullmatch(rf"\d{{{low},{high}}}", text):
        errors.add(field, f"Enter {low} to {high} digits, nothing else.", "invalid_number")
    return text


def _allowlist(value, errors: _Errors) -> str:
    text = _text("allowlist", value, 20_000, errors, required=False)
    items, bad = [], []
    for item in re.split(r"[\s,]+", text):
        if not item:
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            bad.append(item)
        else:
            items.append(item)
    if bad:
        errors.add("allowlist", f"Not an address or network: {', '.join(bad[:5])}.", "invalid_address")
    return " ".join(items)


def clean_channel_data(data: dict, *, instance: PaymentChannel | None = None) -> dict:
    """Validate channel fields as given (all required ones for a new channel, the changed ones for an
    update) against the rules of the module docstring; returns normalised values or raises
    ValidationError listing every problem. Secrets given as None are dropped (unchanged)."""
    errors = _Errors()
    for field in sorted(set(data) - set(CHANNEL_FIELDS)):
        errors.add(field, "This field cannot be set.", "not_editable")
    if instance is None:
        for field in _REQUIRED:
            if data.get(field) in (None, ""):
                errors.add(field, "This field is required.", "required")
    cleaned: dict = {}
    for field, value in data.items():
        if field not in CHANNEL_FIELDS or (field in errors):
            continue
        if field in SECRET_FIELDS:
            if value is None:
                continue
            cleaned[field] = _text(field, value, 4096, errors, required=False)
        elif field == "name":
            cleaned[field] = _text(field, value, 80, errors, required=True)
        elif field == "initiator_name":
            cleaned[field] = _text(field, value, 80, errors, required=False)
        elif field == "shortcode":
            cleaned[field] = _digits(field, value, 5, 7, errors, required=True)
        elif field == "till_number":
            cleaned[field] = _digits(field, value, 5, 8, errors, required=False)
        elif field in ("kind", "environment", "validation", "allowlist_mode"):
            choices = {
                "kind": PaymentChannel.Kind,
                "environment": PaymentChannel.Environment,
                "validation": PaymentChannel.Validation,
                "allowlist_mode": PaymentChannel.Allowlist,
            }[field]
            if value not in choices.values:
                errors.add(field, f"Choose one of: {', '.join(choices.values)}.", "invalid_choice")
            cleaned[field] = value
        elif field == "base_url":
            text = _text(field, value, 200, errors, required=False).rstrip("/")
            if text and not re.fullmatch(r"https?://[^\s/?#]+(:\d+)?(/\S*)?", text):
                errors.add(field, "Enter an absolute http(s) URL, or leave it empty.", "invalid_url")
            cleaned[field] = text
        elif field == "allowlist":
            cleaned[field] = _allowlist(value, errors)
        elif field == "is_active":
            if not isinstance(value, bool):
                errors.add(field, "Enter true or false.", "invalid")
            cleaned[field] = value

    def get(field):
        if field in cleaned:
            return cleaned[field]
        return getattr(instance, field) if instance is not None else PaymentChannel._meta.get_field(field).get_default()

    if not errors.keys() & {"kind", "till_number"}:
        if get("kind") == PaymentChannel.Kind.TILL and not get("till_number"):
            errors.add("till_number", "A till (buy goods) channel needs the till number customers pay.", "required")
        if get("kind") == PaymentChannel.Kind.PAYBILL and get("till_number"):
            errors.add("till_number", "A paybill has no till number; leave it empty.", "not_allowed")
        if get("kind") == PaymentChannel.Kind.B2C and get("till_number"):
            errors.add("till_number", "A B2C channel has no till number; leave it empty.", "not_allowed")
    if (
        not errors.keys() & {"kind", "validation"}
        and get("kind") == PaymentChannel.Kind.TILL
        and get("validation") == PaymentChannel.Validation.REJECT_UNKNOWN
    ):
        errors.add(
            "validation",
            "Buy Goods payments carry no account number: a till that rejects unknown accounts would refuse every "
            "payment. Accept them (unmatched payments wait in suspense for staff).",
            "not_allowed",
        )
    if not errors.keys() & {"kind", "passkey"} and get("kind") == PaymentChannel.Kind.B2C and get("passkey"):
        errors.add("passkey", "A B2C channel only pays out: it has no STK passkey; leave it empty.", "not_allowed")
    if not errors.keys() & {"environment", "base_url"}:
        base_url = get("base_url") or ""
        if get("environment") == PaymentChannel.Environment.PRODUCTION and base_url.startswith("http://"):
            errors.add("base_url", "Daraja production is reached over https only.", "insecure_url")
    errors.raise_if_any()
    return cleaned


# --- writes --------------------------------------------------------------------------------------------


def _audit_view(channel: PaymentChannel) -> dict:
    data = audit.snapshot(channel, exclude=_NOT_AUDITED)
    data["secrets_set"] = sorted(f for f in SECRET_FIELDS if getattr(channel, f))
    data["secrets_unreadable"] = unreadable_secrets(channel)
    return data


SET, NOT_SET, UNREADABLE = "set", "not set", "unreadable"
SECRET_STATES = (SET, NOT_SET, UNREADABLE)


def secrets_set(channel: PaymentChannel) -> dict[str, bool]:
    """Which secrets the channel holds, readable or not (never their values)."""
    return {f: bool(getattr(channel, f)) for f in SECRET_FIELDS}


def secrets_status(channel: PaymentChannel) -> dict[str, str]:
    """Each secret's state, never its value: "set", "not set", or "unreadable" (stored under a key Wavu
    no longer has: enter it again)."""
    return {
        f: UNREADABLE if crypto.is_unreadable(value) else (SET if value else NOT_SET)
        for f, value in ((f, getattr(channel, f)) for f in SECRET_FIELDS)
    }


def unreadable_secrets(channel: PaymentChannel) -> list[str]:
    """The secrets of `channel` the current key cannot decrypt, in SECRET_FIELDS order."""
    return [f for f in SECRET_FIELDS if crypto.is_unreadable(getattr(channel, f))]


def _shortcode_taken() -> ValidationError:
    return ValidationError(
        {"shortcode": [ValidationError("Another channel already uses this shortcode.", code="unique")]}
    )


def create_channel(**fields) -> PaymentChannel:
    """Create a paybill or till channel from `CHANNEL_FIELDS` (rules: `clean_channel_data`).

    Guarantees: nothing is written when a field is invalid or the shortcode is taken (unique
    constraint, reported as a field error); the channel gets a fresh hook token free of Safaricom's
    forbidden words; the creation is audited without secrets or token.
    """
    cleaned = clean_channel_data(fields)
    now = clock.now()
    channel = PaymentChannel(created_at=now, updated_at=now, hook_token=new_hook_token(), **cleaned)
    try:
        with transaction.atomic():
            channel.save()
            audit.record(channel, AuditEvent.Action.CREATE, after=_audit_view(channel), verb="create_channel")
    except IntegrityError:
        if PaymentChannel.objects.filter(shortcode=channel.shortcode).exists():
            raise _shortcode_taken() from None
        raise
    return channel


def update_channel(channel: PaymentChannel, *, reason: str = "", **changes) -> PaymentChannel:
    """Change a channel's fields (rules: `clean_channel_data`, applied to the resulting channel).

    Locks the channel row; a change of credentials, environment, address or shortcode drops the cached
    access token in the same transaction. Audited with before/after of the changed fields, secrets shown
    only as set / not set / unreadable before and set / changed / cleared after. Works on a channel
    whose secrets are unreadable: a new value replaces one, the others are kept as stored. A change
    that changes nothing writes nothing. `channel` is refreshed.
    """
    cleaned = clean_channel_data(changes, instance=channel)
    try:
        with transaction.atomic():
            locked = PaymentChannel.objects.select_for_update().get(pk=channel.pk)
            before = _audit_view(locked)
            changed = [f for f, v in cleaned.items() if getattr(locked, f) != v]
            if changed:
                secret_marks_before, secret_marks_after = {}, {}
                status_before = secrets_status(locked)
                for f in changed:
                    if f in SECRET_FIELDS:
                        secret_marks_before[f] = status_before[f]
                        secret_marks_after[f] = (
                            "changed" if getattr(locked, f) and cleaned[f] else ("set" if cleaned[f] else "cleared")
                        )
                    setattr(locked, f, cleaned[f])
                locked.updated_at = clock.now()
                locked.save()
                if set(changed) & set(_TOKEN_FIELDS):
                    AccessToken.objects.filter(channel=locked).delete()
                after = _audit_view(locked)
                audit.record(
                    locked,
                    AuditEvent.Action.UPDATE,
                    before={**before, **secret_marks_before},
                    after={**after, **secret_marks_after},
                    verb="update_channel",
                    reason=reason,
                )
    except IntegrityError:
        if (
            "shortcode" in cleaned
            and PaymentChannel.objects.filter(shortcode=cleaned["shortcode"]).exclude(pk=channel.pk).exists()
        ):
            raise _shortcode_taken() from None
        raise
    channel.refresh_from_db()
    return channel


def rotate_hook_token(channel: PaymentChannel, *, reason: str = "") -> PaymentChannel:
    """Give the channel a new hook token: the old callback URLs stop working at once (unknown token → 404).

    Locks the channel row; audited (without either token). Register the C2B URLs again afterwards
    (in production Safaricom may need the old registration removed first). `channel` is refreshed.
    """
    with transaction.atomic():
        locked = PaymentChannel.objects.select_for_update().get(pk=channel.pk)
        locked.hook_token = new_hook_token()
        locked.updated_at = clock.now()
        locked.save(update_fields=["hook_token", "updated_at"])
        audit.record(
            locked,
            AuditEvent.Action.UPDATE,
            before={"hook_token": "previous"},
            after={"hook_token": "rotated"},
            verb="rotate_hook_token",
            reason=reason,
        )
    channel.refresh_from_db()
    return channel


def register_c2b_urls(
    channel: PaymentChannel, *, response_type: str = "Completed", client: daraja.DarajaClient | None = None
) -> daraja.AcceptedResult:
    """Register the channel's C2B confirmation and validation URLs with Daraja.

    Refuses (ValidationError, nothing sent) callback URLs with forbidden words, or http ones for
    production. The Daraja call runs outside any transaction; the outcome — accepted or the error's code
    and message — is audited (verb `register_c2b_urls`, URLs with the token redacted), then a failure is
    re-raised (`daraja.DarajaError` subclasses). Safe to repeat (Daraja's registration is idempotent).
    """
    if channel.kind == PaymentChannel.Kind.B2C:
        raise ValidationError(
            {"kind": [ValidationError("A B2C channel receives no C2B payments: nothing to register.", code="b2c")]}
        )
    urls = checked_callback_urls(channel)
    if response_type not in daraja.RESPONSE_TYPES:
        raise ValidationError({"response_type": ['response_type is "Completed" or "Cancelled".']})
    outcome = {
        "confirmation_url": _redacted(urls["c2b_confirmation"], channel.hook_token),
        "validation_url": _redacted(urls["c2b_validation"], channel.hook_token),
        "response_type": response_type,
    }
    own_client = client is None
    client = client or daraja.DarajaClient(channel)
    try:
        result = client.register_c2b_urls(urls["c2b_confirmation"], urls["c2b_validation"], response_type)
    except daraja.DarajaError as exc:
        outcome.update(registered=False, error_code=exc.code, daraja_code=exc.daraja_code, message=exc.message)
        audit.record(channel, AuditEvent.Action.UPDATE, before={}, after=outcome, verb="register_c2b_urls")
        raise
    finally:
        if own_client:
            client.close()
    outcome.update(registered=True, response_code=result.response_code, message=result.response_description)
    audit.record(channel, AuditEvent.Action.UPDATE, before={}, after=outcome, verb="register_c2b_urls")
    return result


def last_c2b_registration(channel: PaymentChannel) -> dict | None:
    """The latest C2B URL registration attempt: {"at", "registered", "message", …} or None."""
    event = audit.history(channel).filter(verb="register_c2b_urls").order_by("-at", "-id").first()
    if event is None:
        return None
    return {"at": event.at, "by": event.actor_label, **(event.after or {})}

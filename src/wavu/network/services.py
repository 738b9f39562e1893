"""Network services: the NAS registry (every write to `nas` and its Wavu profile).

A NAS is a router that sends RADIUS requests to FreeRADIUS and receives CoA / Disconnect-Requests
from Wavu. FreeRADIUS loads its clients from the `nas` table when it starts (`read_clients`):
restart FreeRADIUS after adding, changing or disabling one (docs/network.md).

Fields (the API and the admin use these names; the `nas` column is in brackets):
- `address` [nasname]: the IPv4/IPv6 address the router's RADIUS packets come from, or a network in
  CIDR form (at most a /16, or /48 for IPv6); stored normalised (`10.0.0.1`, `10.0.0.0/24`); unique.
- `shortname` [shortname]: 1–32 letters, digits, '.', '_' or '-', starting with a letter or digit; unique.
- `type` [type]: "mikrotik" or "other".
- `coa_port` [ports]: where the router takes CoA and Disconnect-Requests, 1–65535 (MikroTik: 3799).
- `secret` [secret]: the shared secret, 16–128 characters from letters, digits and `._~!@#%^&*+=:,/-`
  (no spaces, quotes, backslashes or `$`, which break RouterOS scripts and FreeRADIUS quoting).
  Write-only: never in audit rows, logs or API answers (`masked_secret` shows its last 3 characters).
- `server` [server]: a FreeRADIUS virtual server name, or empty for Wavu's.
- `community` [community] (≤ 50), `description` [description] (≤ 200), and Wavu's `site` (≤ 100)
  and `enabled` (a disabled NAS stays registered but FreeRADIUS does not load it).

Every change is validated first (a refusal raises `ValidationError` with field errors and writes
nothing), runs in one transaction and is audited.
"""

from __future__ import annotations

import ipaddress
import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from wavu.core import audit, clock
from wavu.core.models import AuditEvent

from .models import Nas, NasProfile

FIELDS = ("address", "shortname", "type", "coa_port", "secret", "server", "community", "description", "site", "enabled")
_REQUIRED = ("address", "shortname", "secret")
_COLUMN = {"address": "nasname", "coa_port": "ports"}
SHORTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
SECRET_RE = re.compile(r"^[A-Za-z0-9._~!@#%^&*+=:,/-]{16,128}$")
SERVER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_COA_PORT = 3799
_MAX_LENGTH = {"community": 50, "description": 200, "site": 100}
_SHORTEST_PREFIX = {4: 16, 6: 48}


def _error(field: str, message: str, code: str) -> ValidationError:
    return ValidationError({field: [ValidationError(message, code=code)]})


def masked_secret(secret: str) -> str:
    """A secret as staff may see it: asterisks and its last 3 characters."""
    if not secret:
        return ""
    return "*" * max(len(secret) - 3, 5) + secret[-3:]


def clean_address(raw) -> str:
    """A NAS address normalised (`10.0.0.1`, `10.0.0.0/24`, `2001:db8::1`); ValidationError otherwise."""
    text = str(raw or "").strip()
    if not text:
        raise _error("address", "Give the router's IP address.", "required")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise _error(
            "address", f"{raw!r} is not an IP address or a network such as 10.0.0.0/24.", "address_invalid"
        ) from exc
    if network.network_address.is_multicast or network.network_address.is_unspecified:
        raise _error("address", f"{text} cannot be a router's address.", "address_invalid")
    if network.prefixlen < _SHORTEST_PREFIX[network.version]:
        raise _error(
            "address",
            f"{network} is too wide: a NAS is one router (at most a /{_SHORTEST_PREFIX[network.version]}).",
            "address_too_wide",
        )
    if network.num_addresses == 1:
        return str(network.network_address)
    return str(network)


def clean_nas_data(data: dict, *, instance: Nas | None = None) -> dict:
    """Validate and normalise NAS fields (see the module docstring) as given; on create (`instance`
    None) the required fields must be there. Returns the cleaned values of what was given.
    Raises ValidationError with every field error at once."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValidationError(
            {f: [ValidationError("This field cannot be set.", code="unknown_field")] for f in unknown}
        )
    errors: dict[str, list] = {}
    cleaned: dict = {}

    def check(field, func):
        if field not in data:
            return
        try:
            cleaned[field] = func(data[field])
        except ValidationError as exc:
            errors.setdefault(field, []).extend(exc.error_dict[field])

    check("address", clean_address)
    check("shortname", _clean_shortname)
    check("type", _clean_type)
    check("coa_port", _clean_port)
    check("secret", _clean_secret)
    check("server", _clean_server)
    for name in ("community", "description", "site"):
        check(name, lambda value, name=name: _clean_text(name, value))
    check("enabled", _clean_bool)
    if instance is None:
        for name in _REQUIRED:
            if name not in data and name not in errors:
                errors[name] = [ValidationError("This field is required.", code="required")]
    exclude = instance.pk if instance is not None else None
    if "address" in cleaned and Nas.objects.filter(nasname=cleaned["address"]).exclude(pk=exclude).exists():
        errors.setdefault("address", []).append(
            ValidationError(f"Another NAS already has the address {cleaned['address']}.", code="address_taken")
        )
    if "shortname" in cleaned and Nas.objects.filter(shortname=cleaned["shortname"]).exclude(pk=exclude).exists():
        errors.setdefault("shortname", []).append(
            ValidationError(f"Another NAS is already called {cleaned['shortname']!r}.", code="shortname_taken")
        )
    if errors:
        raise ValidationError(errors)
    return cleaned


def _clean_shortname(value) -> str:
    text = str(value or "").strip()
    if not SHORTNAME_RE.match(text):
        raise _error("shortname", "A short name is 1–32 letters, digits, '.', '_' or '-'.", "shortname_invalid")
    return text


def _clean_type(value) -> str:
    if value not in Nas.Type.values:
        raise _error("type", f"The type is one of: {', '.join(Nas.Type.values)}.", "type_invalid")
    return value


def _clean_port(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _error("coa_port", "The CoA port is a whole number from 1 to 65535 (MikroTik: 3799).", "port_invalid")
    return value


def _clean_secret(value) -> str:
    text = value if isinstance(value, str) else ""
    if not SECRET_RE.match(text):
        raise _error(
            "secret",
            "The shared secret is 16–128 characters: letters, digits and ._~!@#%^&*+=:,/- "
            "(no spaces, quotes, backslashes or $).",
            "secret_invalid",
        )
    return text


def _clean_server(value) -> str:
    text = str(value or "").strip()
    if text and not SERVER_RE.match(text):
        raise _error("server", "A virtual server name is letters, digits, '_', '.' or '-'.", "server_invalid")
    return text


def _clean_text(field: str, value) -> str:
    text = str(value or "").strip()
    if len(text) > _MAX_LENGTH[field] or any(ord(c) < 32 for c in text):
        raise _error(field, f"At most {_MAX_LENGTH[field]} characters on one line.", "text_invalid")
    return text


def _clean_bool(value) -> bool:
    if not isinstance(value, bool):
        raise _error("enabled", "enabled is true or false.", "enabled_invalid")
    return value


def _snapshot(nas: Nas) -> dict:
    data = audit.snapshot(nas, exclude=("secret",))
    profile = NasProfile.objects.filter(nas=nas).first()
    data["site"] = profile.site if profile else ""
    data["enabled"] = profile.enabled if profile else True
    return data


def _set_columns(nas: Nas, cleaned: dict) -> None:
    for name, value in cleaned.items():
        if name in ("site", "enabled"):
            continue
        column = _COLUMN.get(name, name)
        if name in ("server", "community", "description"):
            value = value or None
        setattr(nas, column, value)


def _save(nas: Nas) -> None:
    try:
        with transaction.atomic():
            nas.save()
    except IntegrityError as exc:
        raise _error("address", "Another NAS took this address or short name a moment ago.", "address_taken") from exc


def create_nas(*, reason: str = "", **fields) -> Nas:
    """Register a router. Required: address, shortname, secret; type defaults to "other", the CoA
    port to 3799, enabled to true. Refused (ValidationError, nothing written) on any invalid or
    taken value. Audited (without the secret). Not idempotent: the same address twice is refused."""
    cleaned = clean_nas_data(fields)
    now = clock.now()
    with transaction.atomic():
        nas = Nas(type=Nas.Type.OTHER, ports=DEFAULT_COA_PORT, require_ma="yes")
        _set_columns(nas, cleaned)
        _save(nas)
        NasProfile.objects.create(
            nas=nas, site=cleaned.get("site", ""), enabled=cleaned.get("enabled", True), created_at=now, updated_at=now
        )
        audit.record(nas, AuditEvent.Action.CREATE, after=_snapshot(nas), verb="create_nas", reason=reason)
    return nas


def update_nas(nas: Nas, *, reason: str = "", **fields) -> Nas:
    """Change a router's fields (only those given; `secret` omitted keeps it). Refused
    (ValidationError, nothing written) on any invalid or taken value. Locks the row; audited,
    recording only that the secret changed; a change that changes nothing writes nothing."""
    cleaned = clean_nas_data(fields, instance=nas)
    with transaction.atomic():
        locked = Nas.objects.select_for_update().get(pk=nas.pk)
        profile, _ = NasProfile.objects.select_for_update().get_or_create(
            nas=locked, defaults={"created_at": clock.now(), "updated_at": clock.now()}
        )
        before = _snapshot(locked)
        secret_changed = "secret" in cleaned and cleaned["secret"] != locked.secret
        _set_columns(locked, cleaned)
        for name in ("site", "enabled"):
            if name in cleaned:
                setattr(profile, name, cleaned[name])
        after = {**audit.snapshot(locked, exclude=("secret",)), "site": profile.site, "enabled": profile.enabled}
        if after == before and not secret_changed:
            return locked
        _save(locked)
        profile.updated_at = clock.now()
        profile.save()
        if secret_changed:
            before["secret_changed"], after["secret_changed"] = False, True
        audit.record(locked, AuditEvent.Action.UPDATE, before=before, after=after, verb="update_nas", reason=reason)
    return locked


def delete_nas(nas: Nas, *, reason: str = "") -> None:
    """Remove a router from the registry (FreeRADIUS stops accepting it at its next start).
    Its accounting history in `radacct` stays. Audited."""
    with transaction.atomic():
        locked = Nas.objects.select_for_update().get(pk=nas.pk)
        before = _snapshot(locked)
        audit.record(locked, AuditEvent.Action.DELETE, before=before, verb="delete_nas", reason=reason)
        locked.delete()

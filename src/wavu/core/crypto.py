"""Secrets at rest: provider credentials are stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from `WAVU_ENCRYPTION_KEY` (a Fernet key: any 44-character url-safe base64 of 32 bytes,
e.g. from `generate_key()`; docs/configuration.md shows the command); without it, one is derived from
`SECRET_KEY` with HKDF, so a demo works out of the box, but then rotating SECRET_KEY makes stored
secrets unreadable — set WAVU_ENCRYPTION_KEY in production. A value that cannot be decrypted
raises `SecretUnreadable` (never returns garbage).

A lost key must not lock staff out, so a model field reading such a value (`core.fields.
EncryptedTextField`) gives an `UnreadableSecret` instead of raising: the row loads, pages that list
it work, code can ask `is_unreadable(value)` and say so, and saving the row writes the stored
ciphertext back unchanged (putting the old key back makes it readable again). Using it as text
raises `SecretUnreadable`, so it can never be sent anywhere in place of the real secret.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PREFIX = "enc1:"


class SecretUnreadable(Exception):
    """A stored secret could not be decrypted with the configured key."""


class UnreadableSecret:
    """A stored secret that the current key cannot decrypt (a field's value, see the module docstring).

    Truthy (something is stored), equal only to an UnreadableSecret of the same stored text, and not
    text: `str()` or formatting it raises `SecretUnreadable`."""

    __slots__ = ("stored",)

    def __init__(self, stored: str):
        self.stored = stored

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other) -> bool:
        return isinstance(other, UnreadableSecret) and other.stored == self.stored

    def __hash__(self) -> int:
        return hash(("UnreadableSecret", self.stored))

    def __str__(self) -> str:
        raise SecretUnreadable("the secret cannot be decrypted with this WAVU_ENCRYPTION_KEY / SECRET_KEY")

    def __repr__(self) -> str:
        return "<UnreadableSecret>"


def is_unreadable(value) -> bool:
    """True when `value` is a stored secret the current key cannot decrypt."""
    return isinstance(value, UnreadableSecret)


@functools.lru_cache(maxsize=4)
def _fernet(key_material: str, secret_key: str) -> Fernet:
    if key_material:
        return Fernet(key_material.encode())
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"wavu-secrets-at-rest", info=b"fernet").derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def _current() -> Fernet:
    return _fernet(getattr(settings, "WAVU_ENCRYPTION_KEY", "") or "", settings.SECRET_KEY)


def encrypt(plain: str) -> str:
    """`plain` encrypted, as text safe to store; "" stays "" (nothing to hide)."""
    if not plain:
        return ""
    return PREFIX + _current().encrypt(plain.encode()).decode()


def decrypt(stored: str) -> str:
    """The plain text of a value written by `encrypt`."""
    if not stored:
        return ""
    if not stored.startswith(PREFIX):
        raise SecretUnreadable("the stored value is not an encrypted secret")
    try:
        return _current().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("the secret cannot be decrypted with this WAVU_ENCRYPTION_KEY / SECRET_KEY") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()

"""Model fields shared by apps."""

from __future__ import annotations

from django.db import models

from . import crypto


class EncryptedTextField(models.TextField):
    """Text stored encrypted (see `core.crypto`); Python code sees the plain text. Not searchable or
    orderable in the database, by design. The admin and the API must never show the value.

    A stored value the current key cannot decrypt (SECRET_KEY changed with no WAVU_ENCRYPTION_KEY, or
    a wrong key) loads as a `crypto.UnreadableSecret`, so the row can still be shown and its other
    fields changed; saving writes that stored value back as it was."""

    def from_db_value(self, value, expression, connection):
        if value is None:
            return value
        try:
            return crypto.decrypt(value)
        except crypto.SecretUnreadable:
            return crypto.UnreadableSecret(value)

    def get_prep_value(self, value):
        if crypto.is_unreadable(value):
            return value.stored
        value = super().get_prep_value(value)
        if value is None:
            return value
        return crypto.encrypt(value)

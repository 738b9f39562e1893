"""Model fields shared by apps."""

from __future__ import annotations

from django.db import models

from . import crypto


class EncryptedTextField(models.TextField):
    """Text stored encrypted (see `core.crypto`); Python code sees the plain text. Not searchable or
    orderable in the database, by design. The admin and the API must never show the value."""

    def from_db_value(self, value, expression, connection):
        if value is None:
            return value
        return crypto.decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None:
            return value
        return crypto.encrypt(value)

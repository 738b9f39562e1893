"""Domain errors raised by services. The API maps them to `{"error": {...}}` with a 4xx status."""


class DomainError(Exception):
    """A business rule refused the operation. `code` is stable and machine-readable."""

    code = "invalid"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, fields: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.fields = fields or {}


class NotAllowed(DomainError):
    code = "not_allowed"
    status = 409


class ImmutableRecordError(DomainError):
    """An issued financial record (invoice, credit note, payment, journal entry) cannot change."""

    code = "immutable"
    status = 409

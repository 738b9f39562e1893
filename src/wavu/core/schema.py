"""The OpenAPI schema class (`REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]`): documents the error answers.

Every answer of `core.api.error_handler` is `{"error": {"code", "message", "fields"}}`; the schema
says so for each status an operation can give, so generated clients (and schemathesis) know them.
"""

from django.core.exceptions import FieldDoesNotExist
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="stable and machine-readable, e.g. invalid, not_found, invalid_transition")
    message = serializers.CharField(help_text="for people")
    fields = serializers.DictField(
        child=serializers.JSONField(), help_text="per field: a list of messages (nested fields: an object)"
    )


class ErrorSerializer(serializers.Serializer):
    """Every 4xx and 5xx answer of the API (`error_handler`)."""

    error = ErrorBodySerializer()


_ERRORS = {
    "400": "invalid input: `error.fields` names each field and what is wrong with it",
    "401": "no credentials, or invalid ones",
    "403": "not allowed: the API is for staff",
    "404": "no such record (or page)",
    "409": "refused by a business rule, or in conflict with existing records (`error.code` says which)",
}


class WavuAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, documenting the error answers each operation can give.

    Every operation can answer 400 (a query parameter with a NUL character is refused anywhere:
    `core.middleware.RefuseNulMiddleware`), 401 and 403; 404 where the path names a record or the
    list is paged; 409 for writes. An error the view documents without a body gets the error format.

    Read-only fields of a model field that may be blank say so: DRF drops `allow_blank` from
    read-only model serializer fields, so the schema would otherwise forbid the "" the API answers
    for an empty status, e-mail address or URL."""

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if _read_only_and_may_be_blank(field) and isinstance(schema.get("enum"), list) and "" not in schema["enum"]:
            schema["enum"] = [*schema["enum"], ""]
        return schema

    def _insert_field_validators(self, field, schema):
        super()._insert_field_validators(field, schema)
        if _read_only_and_may_be_blank(field) and schema.get("format") in ("email", "uri"):
            del schema["format"]  # "" is no e-mail address nor URI

    def _error_codes(self) -> list[str]:
        codes = ["400", "401", "403"]
        if "{" in self.path or (self._is_list_view() and self._get_paginator()):
            codes.append("404")
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            codes.append("409")
        return codes

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        documented = {code for code in responses if code.startswith(("4", "5"))}
        for code in sorted(set(self._error_codes()) | documented):
            existing = responses.get(code)
            if existing is not None and "content" in existing:
                continue
            description = existing["description"] if existing and existing.get("description") else _ERRORS.get(code)
            error = self._get_response_for_code(
                OpenApiResponse(ErrorSerializer, description=description or ""), code, ["application/json"]
            )
            responses[code] = {**(existing or {}), **error}
        return dict(sorted(responses.items()))


def _read_only_and_may_be_blank(field) -> bool:
    if not field.read_only or getattr(field, "allow_blank", False):
        return False
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    if model is None or not field.source or "." in field.source or field.source == "*":
        return False
    try:
        model_field = model._meta.get_field(field.source)
    except FieldDoesNotExist:
        return False
    return bool(getattr(model_field, "blank", False)) and model_field.get_internal_type() in (
        "CharField",
        "TextField",
        "EmailField",
        "URLField",
    )

"""Shared API pieces: pagination, the error format of interfaces.md, and the audited base viewset.

Errors are `{"error": {"code": "...", "message": "...", "fields": {...}}}` with a 4xx status.
Domain errors, Django validation errors and integrity errors all map to 4xx; a 500 for bad
input is a bug.
"""

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler

from .audit import Actor, _current
from .errors import DomainError
from .money import InvalidAmount


class StandardPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def _error(code: str, message: str, fields: dict | None, http_status: int) -> Response:
    return Response({"error": {"code": code, "message": message, "fields": fields or {}}}, status=http_status)


def _flatten(detail) -> dict:
    if isinstance(detail, dict):
        out = {}
        for key, value in detail.items():
            if isinstance(value, list):
                out[key] = [str(v) if not isinstance(v, dict) else _flatten(v) for v in value]
            elif isinstance(value, dict):
                out[key] = _flatten(value)
            else:
                out[key] = [str(value)]
        return out
    return {}


def error_handler(exc, context):
    if isinstance(exc, DomainError):
        return _error(exc.code, exc.message, exc.fields, exc.status)
    if isinstance(exc, InvalidAmount):
        return _error("invalid_amount", str(exc), {}, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        fields = exc.message_dict if hasattr(exc, "error_dict") else {}
        message = "; ".join(exc.messages)
        return _error("invalid", message, fields, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, IntegrityError):
        return _error("conflict", "The request conflicts with existing records.", {}, status.HTTP_409_CONFLICT)
    if isinstance(exc, Http404 | ObjectDoesNotExist):
        return _error("not_found", "Not found.", {}, status.HTTP_404_NOT_FOUND)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail) if isinstance(exc.detail, dict) else {}
        if isinstance(exc.detail, list):
            message = "; ".join(str(d) for d in exc.detail)
        else:
            message = "Some fields are invalid." if fields else str(exc.detail)
        if "non_field_errors" in fields:
            message = "; ".join(fields.pop("non_field_errors"))
        return _error("invalid", message, fields, response.status_code)
    code = getattr(exc, "default_code", "error")
    detail = getattr(exc, "detail", str(exc))
    return _error(str(code), str(detail), {}, response.status_code)


class AuditedViewMixin:
    """Attribute changes to the authenticated API user (token auth runs after middleware)."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        user = request.user if request.user and request.user.is_authenticated else None
        if user is not None:
            _current.set(
                Actor(user=user, label=f"user:{user.get_username()}", source_ip=request.META.get("REMOTE_ADDR"))
            )

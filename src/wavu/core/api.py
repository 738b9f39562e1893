"""Shared API pieces: pagination, the error format of interfaces.md, the audited base viewset, and the
date-time inputs and id filters every app uses (`DateTimeField`, `IsoDateTimeFilter`, `IdFilter`).

Errors are `{"error": {"code": "...", "message": "...", "fields": {...}}}` with a 4xx status.
Domain errors, Django validation errors and integrity errors all map to 4xx; a 500 for bad
input is a bug.
"""

import datetime as dt

import django_filters
from django import forms
from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import JSONRenderer
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
    response = _error_response(exc, context)
    if response is not None:
        _answer_errors_in_json(context.get("request"))
    return response


def _answer_errors_in_json(request) -> None:
    """An error is JSON even from an action that answers a PDF, a CSV file or an HTML page."""
    if request is None:
        return
    renderer = getattr(request, "accepted_renderer", None)  # None: content negotiation failed
    if getattr(renderer, "format", None) not in ("json", "api"):
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type


def _error_response(exc, context):
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


# --- date-time inputs -------------------------------------------------------------------------

MAX_UTC_OFFSET = dt.timedelta(hours=14)


def datetime_problem(value: dt.datetime) -> str | None:
    """Why an aware date-time parsed from a request cannot be used, or None when it can.

    ISO 8601 and Python accept any UTC offset below 24 hours, PostgreSQL refuses those beyond
    ±15:59 (a 500 where the value reaches a query), and no place on Earth is further than 14 hours
    from UTC; a value at the edge of year 1 or 9999 cannot be moved to UTC."""
    offset = value.utcoffset()
    if offset is None:
        return None
    if abs(offset) > MAX_UTC_OFFSET:
        sign = "-" if offset < dt.timedelta(0) else "+"
        minutes = abs(offset) // dt.timedelta(minutes=1)
        shown = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        return f"The UTC offset {shown} is out of range: at most 14 hours from UTC."
    try:
        value.astimezone(dt.UTC)
    except OverflowError:
        return "Date-time out of range."
    return None


# What a date and time given to Wavu may be: nothing an ISP bills happened before 2000 or after 2099
# (before 1928 Nairobi's clocks were not even on a whole-minute offset, which the answers would show).
EARLIEST_INPUT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST_INPUT = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


class DateTimeField(serializers.DateTimeField):
    """DRF's DateTimeField, refusing UTC offsets beyond ±14:00, values that overflow in UTC, and
    instants outside 2000–2099 (`EARLIEST_INPUT`, `LATEST_INPUT`)."""

    def enforce_timezone(self, value):
        if isinstance(value, dt.datetime) and (problem := datetime_problem(value)):
            raise serializers.ValidationError(problem, code="invalid")
        value = super().enforce_timezone(value)
        if isinstance(value, dt.datetime) and value.tzinfo and not EARLIEST_INPUT <= value < LATEST_INPUT:
            raise serializers.ValidationError("give a date and time between 2000 and 2099", code="invalid")
        return value


class _IsoDateTimeFormField(django_filters.fields.IsoDateTimeField):
    def to_python(self, value):
        value = super().to_python(value)
        if isinstance(value, dt.datetime) and (problem := datetime_problem(value)):
            raise forms.ValidationError(problem, code="invalid")
        return value


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's IsoDateTimeFilter with the same checks as `DateTimeField` (400, never a 500)."""

    field_class = _IsoDateTimeFormField


MAX_ID = 2**63 - 1  # the largest id PostgreSQL's bigint and SQLite's INTEGER hold


class IdFilter(django_filters.NumberFilter):
    """A filter on a record's id: a whole number from 1 up (a 400 otherwise). django-filter's NumberFilter
    takes any decimal, and one beyond 64 bits made SQLite raise OverflowError: a 500."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)

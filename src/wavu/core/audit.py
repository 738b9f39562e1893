"""The audit trail: services call `record(...)` for every change they make.

Who acted comes from a context variable: the web middleware sets the user and source address for
a request; jobs and commands wrap their work in `acting_as("job:billing-run")`.

Sign-ins are audited too: Django's `user_logged_in`, `user_login_failed` and `user_logged_out` signals
(connected in `core.apps`) each append one event (verbs `login`, `login_failed`, `logout`) with the
user name given, the source address and the user agent; never a password. They cover every session
login (the admin's and any other `django.contrib.auth.login`); a token-authenticated API request is
not a login and writes none.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import decimal
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import models

from . import clock
from .models import AuditEvent


@dataclass(frozen=True)
class Actor:
    user: object | None = None
    label: str = "system"
    source_ip: str | None = None


_SYSTEM = Actor()
_current: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("wavu_actor", default=None)


def current_actor() -> Actor:
    return _current.get() or _SYSTEM


@contextmanager
def acting_as(label: str | None = None, *, user=None, source_ip: str | None = None):
    """Attribute changes made inside the block to a user or a job."""
    if label is None:
        label = getattr(user, "username", None) or "system"
    token = _current.set(Actor(user=user, label=label, source_ip=source_ip))
    try:
        yield
    finally:
        _current.reset(token)


def _jsonable(value):
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, models.Model):
        return value.pk
    return value


def snapshot(instance: models.Model, exclude: tuple[str, ...] = ("password",)) -> dict:
    """The concrete field values of `instance`, JSON-ready (foreign keys as ids, secrets left out)."""
    data = {}
    for field in instance._meta.concrete_fields:
        if field.name in exclude:
            continue
        data[field.attname] = _jsonable(getattr(instance, field.attname))
    return data


def record(
    instance: models.Model,
    action: str,
    *,
    before: dict | None = None,
    after: dict | None = None,
    verb: str = "",
    reason: str = "",
) -> AuditEvent:
    """Append one audit event for `instance`, in the caller's transaction."""
    actor = current_actor()
    user = actor.user if getattr(actor.user, "pk", None) else None
    if after is None and action != AuditEvent.Action.DELETE:
        after = snapshot(instance)
    if before is not None and after is not None:
        changed = {k for k in after if before.get(k) != after.get(k)}
        before = {k: v for k, v in before.items() if k in changed}
        after = {k: v for k, v in after.items() if k in changed}
    return AuditEvent.objects.create(
        at=clock.now(),
        actor=user,
        actor_label=actor.label[:120],
        source_ip=actor.source_ip,
        action=action,
        verb=verb[:60],
        object_type=instance._meta.label_lower,
        object_id=str(instance.pk),
        object_repr=str(instance)[:200],
        before=before,
        after=after,
        reason=reason[:300],
    )


def save_if_changed(instance: models.Model, before: dict, *, verb: str, reason: str = "") -> bool:
    """Save `instance` and record one update event when it differs from the `before` snapshot.

    Stamps `updated_at` when the model has one. A change that changes nothing writes nothing and
    returns False. Runs in the caller's transaction (callers hold the row lock).
    """
    if snapshot(instance) == before:
        return False
    if hasattr(instance, "updated_at"):
        instance.updated_at = clock.now()
    instance.save()
    record(instance, AuditEvent.Action.UPDATE, before=before, after=snapshot(instance), verb=verb, reason=reason)
    return True


# --- sign-ins ---------------------------------------------------------------------------------------------

LOGIN, LOGIN_FAILED, LOGOUT = "login", "login_failed", "logout"
_USER_AGENT_MAX = 300


def _request_origin(request) -> tuple[str | None, str]:
    meta = getattr(request, "META", None) or {}
    return (meta.get("REMOTE_ADDR") or None), str(meta.get("HTTP_USER_AGENT") or "")[:_USER_AGENT_MAX]


def record_sign_in(verb: str, *, request=None, user=None, username: str = "") -> AuditEvent:
    """Append one sign-in event (`login`, `login_failed` or `logout`) for `user` (None when the name
    given matches nobody). Stores the name given, the address and the user agent; nothing else of
    what was typed."""
    from django.contrib.auth import get_user_model

    source_ip, user_agent = _request_origin(request)
    if user is not None:
        username = user.get_username()
    username = username[:200]
    label = f"user:{username}" if verb != LOGIN_FAILED else "anonymous"
    return AuditEvent.objects.create(
        at=clock.now(),
        actor=user if verb != LOGIN_FAILED and getattr(user, "pk", None) else None,
        actor_label=label[:120],
        source_ip=source_ip,
        action=AuditEvent.Action.ACTION,
        verb=verb,
        object_type=get_user_model()._meta.label_lower,
        object_id=str(user.pk) if getattr(user, "pk", None) else "",
        object_repr=username,
        before=None,
        after={"username": username, "user_agent": user_agent},
    )


def on_user_logged_in(sender, request, user, **kwargs) -> None:
    """`user_logged_in` receiver: one `login` event."""
    record_sign_in(LOGIN, request=request, user=user)


def on_user_logged_out(sender, request, user, **kwargs) -> None:
    """`user_logged_out` receiver: one `logout` event (nothing when nobody was signed in)."""
    if user is not None and getattr(user, "pk", None):
        record_sign_in(LOGOUT, request=request, user=user)


def on_user_login_failed(sender, credentials, request=None, **kwargs) -> None:
    """`user_login_failed` receiver: one `login_failed` event with the user name tried (the other
    credentials, the password among them, are never read)."""
    from django.contrib.auth import get_user_model

    model = get_user_model()
    username = credentials.get(model.USERNAME_FIELD) or credentials.get("username") or ""
    username = username if isinstance(username, str) else ""
    user = model._default_manager.filter(**{model.USERNAME_FIELD: username}).first() if username else None
    record_sign_in(LOGIN_FAILED, request=request, user=user, username=username)


def history(instance: models.Model):
    return AuditEvent.objects.filter(object_type=instance._meta.label_lower, object_id=str(instance.pk))

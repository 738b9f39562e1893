"""The audit trail: services call `record(...)` for every change they make.

Who acted comes from a context variable: the web middleware sets the user and source address for
a request; jobs and commands wrap their work in `acting_as("job:billing-run")`.
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


def history(instance: models.Model):
    return AuditEvent.objects.filter(object_type=instance._meta.label_lower, object_id=str(instance.pk))

"""Subscription services: creating services, moving them through their lifecycle, add-ons and
network credentials.

Every write to subscriptions goes through this module. Rules shared by all of them:
- the allowed status changes are `models.TRANSITIONS` (the one place); anything else raises
  `InvalidTransition` (code `invalid_transition`) and changes nothing;
- each change runs in one transaction holding the subscription's row lock
  (`select_for_update`), re-reads the status under the lock, and writes one `LifecycleEvent`
  (the stream RADIUS and SMS follow) plus one audit event with before/after values;
- the passed-in `Subscription` object is refreshed from the row that was written.
Bad input raises `ValidationError` (field errors) or a `DomainError` with a stable code.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import secrets
from collections.abc import Iterable
from contextlib import nullcontext

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from wavu.catalog.models import AddOn, Plan
from wavu.catalog.selectors import addon_price, plan_price
from wavu.core import audit, clock
from wavu.core.db import copy_field_values
from wavu.core.errors import DomainError, NotAllowed
from wavu.core.models import AuditEvent
from wavu.customers.models import Customer

from .models import TRANSITIONS, LifecycleEvent, Status, Subscription, SubscriptionAddOn, SuspensionCause
from .periods import period_for
from .selectors import paused_due, with_username

# Lower-case letters and digits without the ones people confuse when reading a password out
# over the phone or off an SMS: 0/o, 1/l/i.
PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
PASSWORD_LENGTH = 12
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{2,63}$")
MAX_USERNAME_ATTEMPTS = 50

logger = logging.getLogger(__name__)


class InvalidTransition(DomainError):
    """A status change that `TRANSITIONS` does not allow (or an operation whose precondition fails)."""

    code = "invalid_transition"
    status = 409


class PauseLimitReached(DomainError):
    """The service has had as many pauses in the last 12 months as WAVU["PAUSES_PER_YEAR"] allows."""

    code = "pause_limit_reached"
    status = 409


class PlanKindMismatch(DomainError):
    """Postpaid, prepaid and hotspot services are different products: moving between them is a new
    service (cancel one, open the other), not a plan change."""

    code = "plan_kind_mismatch"
    status = 409


class _Unset:
    def __repr__(self):
        return "UNSET"


UNSET = _Unset()


def _field_error(field: str, message: str, code: str) -> ValidationError:
    return ValidationError({field: [ValidationError(message, code=code)]})


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """A random, readable password (no 0/o, 1/l/i), from the `secrets` module."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(max(length, 10)))


def normalize_mac(raw: str) -> str:
    """A MAC address as AA:BB:CC:DD:EE:FF from any usual form (colons, dashes, Cisco dots, bare);
    blank stays blank. Raises ValidationError for anything else."""
    text = (raw or "").strip()
    if not text:
        return ""
    hexdigits = re.sub(r"[:\-.\s]", "", text)
    if not re.fullmatch(r"[0-9A-Fa-f]{12}", hexdigits) or not re.fullmatch(
        r"[0-9A-Fa-f]{2}([:\-]?[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}", text
    ):
        raise _field_error("mac_address", f"{raw!r} is not a MAC address, e.g. AA:BB:CC:DD:EE:FF.", "mac_invalid")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2)).upper()


def _clean_static_ip(raw, *, exclude_pk=None) -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    text = str(raw).strip()
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError as exc:
        raise _field_error("static_ip", f"{raw!r} is not an IPv4 address.", "ip_invalid") from exc
    if (
        address.is_multicast
        or address.is_unspecified
        or address.is_loopback
        or address == ipaddress.ip_address("255.255.255.255")
    ):
        raise _field_error("static_ip", f"{text} cannot be given to a customer.", "ip_invalid")
    holder = Subscription.objects.filter(static_ip=str(address)).exclude(pk=exclude_pk).first()
    if holder is not None:
        raise _field_error("static_ip", f"{address} is already assigned to {holder.username}.", "ip_taken")
    return str(address)


def _clean_username(raw, *, exclude_pk=None) -> str:
    text = str(raw or "").strip()
    if not USERNAME_RE.match(text):
        raise _field_error(
            "username",
            f"{raw!r} is not a valid username: 3–64 letters, digits, '.', '_', '@' or '-'.",
            "username_invalid",
        )
    holder = with_username(text).exclude(pk=exclude_pk).first()
    if holder is not None:
        raise _field_error("username", f"The username {text!r} is already in use.", "username_taken")
    return text


def clean_billing_anchor_day(value, plan: Plan) -> int | None:
    """The billing day of the month for a service of `plan`: None, or 1–31 for postpaid plans."""
    if value is None or value == "":
        return None
    if plan.kind != Plan.Kind.POSTPAID:
        raise _field_error("billing_anchor_day", "Only postpaid services have a billing day.", "anchor_not_postpaid")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 31:
        raise _field_error("billing_anchor_day", "The billing day is a day of the month, 1–31.", "anchor_invalid")
    return value


def _addon_items(addons) -> list[tuple[AddOn, int]]:
    items = []
    for item in addons or ():
        addon, quantity = item if isinstance(item, tuple | list) else (item, 1)
        items.append((addon, _clean_quantity(quantity)))
    return items


def _clean_quantity(quantity) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 1000:
        raise _field_error("quantity", "The quantity is a whole number from 1 to 1000.", "quantity_invalid")
    return quantity


def _check_addon_available(addon: AddOn, at: dt.datetime) -> None:
    if not addon.is_active:
        raise NotAllowed(f"The add-on {addon} is no longer sold.", code="addon_not_available")
    addon_price(addon, at)  # raises NoPrice when it cannot be billed


def _username_taken(candidate: str) -> bool:
    """A cheap pre-check; the unique constraint is the real guard (tests replace this to force races)."""
    return with_username(candidate).exists()


def _username_candidates(customer: Customer):
    """`10008`, `10008-2`, `10008-3`…, starting after the services the customer already has."""
    index = Subscription.objects.filter(customer=customer).count() + 1
    for offset in range(MAX_USERNAME_ATTEMPTS):
        n = index + offset
        yield customer.account_number if n == 1 else f"{customer.account_number}-{n}"


def _actor_scope(actor: str | None):
    if not actor:
        return nullcontext()
    current = audit.current_actor()
    return audit.acting_as(actor, user=current.user, source_ip=current.source_ip)


def _event(sub: Subscription, kind: str, *, at, from_status="", to_status="", reason="", data=None):
    return LifecycleEvent.objects.create(
        subscription=sub,
        at=at,
        kind=kind,
        from_status=from_status,
        to_status=to_status,
        reason=(reason or "")[:300],
        actor_label=audit.current_actor().label[:120],
        data=data or {},
    )


def _lock(subscription: Subscription) -> Subscription:
    return Subscription.objects.select_for_update(of=("self",)).select_related("plan").get(pk=subscription.pk)


def _iso(value):
    return value.isoformat() if value is not None else None


# --- creating -----------------------------------------------------------------------------------


def _prepare_subscription(
    customer, plan, *, addons, username, static_ip, mac_address, billing_anchor_day, start
) -> tuple[dict, list[tuple[AddOn, int]]]:
    at = start or clock.now()
    if customer.status == Customer.Status.CLOSED:
        raise NotAllowed(f"Account {customer.account_number} is closed.", code="customer_closed")
    if not plan.is_active:
        raise NotAllowed(f"The plan {plan} is no longer sold.", code="plan_not_available")
    plan_price(plan, at)  # NoPrice when the plan cannot be billed
    items = _addon_items(addons)
    for addon, _quantity in items:
        _check_addon_available(addon, at)
    fields = {
        "customer": customer,
        "plan": plan,
        "status": Status.PENDING,
        "username": _clean_username(username) if username is not None else None,
        "password": generate_password(),
        "static_ip": _clean_static_ip(static_ip),
        "mac_address": normalize_mac(mac_address),
        "billing_anchor_day": clean_billing_anchor_day(billing_anchor_day, plan),
        "scheduled_start": start,
    }
    return fields, items


def validate_new_subscription(
    customer: Customer,
    plan: Plan,
    *,
    addons: Iterable = (),
    username: str | None = None,
    static_ip: str | None = None,
    mac_address: str = "",
    billing_anchor_day: int | None = None,
    start: dt.datetime | None = None,
) -> None:
    """Run every check `create_subscription` makes, without writing (forms show errors early).
    Raises the same ValidationError / DomainError `create_subscription` would."""
    _prepare_subscription(
        customer,
        plan,
        addons=addons,
        username=username,
        static_ip=static_ip,
        mac_address=mac_address,
        billing_anchor_day=billing_anchor_day,
        start=start,
    )


def clean_credentials(*, username=UNSET, static_ip=UNSET, mac_address=UNSET, subscription=None) -> dict:
    """Validate and normalise credentials as typed (for forms); returns the normalised values of
    what was given. Raises ValidationError for a malformed or taken username or static IP, or a
    malformed MAC address."""
    exclude_pk = subscription.pk if subscription is not None else None
    cleaned = {}
    if username is not UNSET:
        cleaned["username"] = _clean_username(username, exclude_pk=exclude_pk)
    if static_ip is not UNSET:
        cleaned["static_ip"] = _clean_static_ip(static_ip, exclude_pk=exclude_pk)
    if mac_address is not UNSET:
        cleaned["mac_address"] = normalize_mac(mac_address)
    return cleaned


def create_subscription(
    customer: Customer,
    plan: Plan,
    *,
    addons: Iterable = (),
    username: str | None = None,
    static_ip: str | None = None,
    mac_address: str = "",
    billing_anchor_day: int | None = None,
    start: dt.datetime | None = None,
    notes: str = "",
    reason: str = "",
) -> Subscription:
    """Open a service for `customer` on `plan`, status pending (call `activate` when it goes live).

    `addons` is a list of add-ons or (add-on, quantity) pairs; `start` is when the service is
    meant to start (e.g. the installation date; default now), used to check that the plan and
    add-ons have prices then. Without `username`, one is generated from the account number
    (`10008`, then `10008-2`, … for further services), unique across the ISP: the unique
    constraint is the guard and a collision (even with a concurrent request) moves on to the next
    candidate. A readable random password of 12 characters is generated.

    Refused, writing nothing: a closed customer, a plan or add-on no longer sold or without a
    price, a taken or malformed username or static IP, a malformed MAC address, a billing day for
    a non-postpaid plan. Audited; writes a `created` lifecycle event. Not idempotent.
    """
    fields, items = _prepare_subscription(
        customer,
        plan,
        addons=addons,
        username=username,
        static_ip=static_ip,
        mac_address=mac_address,
        billing_anchor_day=billing_anchor_day,
        start=start,
    )
    at = start or clock.now()
    username = fields.pop("username")
    fields["notes"] = (notes or "").strip()
    candidates = [username] if username is not None else _username_candidates(customer)
    with transaction.atomic():
        subscription = None
        for candidate in candidates:
            if username is None and _username_taken(candidate):
                continue
            now = clock.now()
            try:
                with transaction.atomic():
                    subscription = Subscription.objects.create(
                        username=candidate, created_at=now, updated_at=now, **fields
                    )
                break
            except IntegrityError as exc:
                if fields["static_ip"] and Subscription.objects.filter(static_ip=fields["static_ip"]).exists():
                    raise _field_error("static_ip", f"{fields['static_ip']} is already assigned.", "ip_taken") from exc
                if not with_username(candidate).exists():
                    raise
                if username is not None:
                    raise _field_error(
                        "username", f"The username {candidate!r} is already in use.", "username_taken"
                    ) from exc
        if subscription is None:
            raise DomainError("Could not find a free username for this service.", code="username_exhausted")
        for addon, quantity in items:
            SubscriptionAddOn.objects.create(subscription=subscription, addon=addon, quantity=quantity, started_at=at)
        _event(
            subscription,
            "created",
            at=clock.now(),
            to_status=Status.PENDING,
            reason=reason,
            data={"plan": plan.code, "addons": [a.code for a, _ in items]},
        )
        audit.record(subscription, AuditEvent.Action.CREATE, verb="create_subscription", reason=reason)
    return subscription


# --- the lifecycle ------------------------------------------------------------------------------

_DEFAULT_KIND = {
    Status.ACTIVE: "activated",
    Status.SUSPENDED: "suspended",
    Status.PAUSED: "paused",
    Status.EXPIRED: "expired",
    Status.CANCELLED: "cancelled",
}


def _event_kind(from_status: str, to_status: str, new_period: bool) -> str:
    if to_status == Status.ACTIVE:
        if from_status == Status.EXPIRED:
            return "renewed"
        if from_status in (Status.SUSPENDED, Status.PAUSED) and not new_period:
            return "resumed"
    return _DEFAULT_KIND[to_status]


def _start_period(sub: Subscription, at: dt.datetime) -> dict:
    """A new period from `at`. Postpaid: the anchor day defaults to the ISP's billing day, else the
    local day of `at`; `next_bill_at` = `at`, so the next billing run invoices this first period
    (prorated when it is shorter than a month)."""
    if sub.plan.kind == Plan.Kind.POSTPAID and sub.billing_anchor_day is None:
        sub.billing_anchor_day = settings.WAVU.get("BILLING_DAY") or clock.local(at).day
    start, end = period_for(sub.plan, at, sub.billing_anchor_day)
    sub.current_period_start, sub.current_period_end = start, end
    if sub.plan.kind == Plan.Kind.POSTPAID:
        sub.next_bill_at = start
    if sub.activated_at is None:
        sub.activated_at = at
    return {"period_start": _iso(start), "period_end": _iso(end)}


def _apply_effects(sub: Subscription, from_status: str, to_status: str, at: dt.datetime, new_period: bool) -> dict:
    """The side effects of a status change on the subscription's own columns and add-ons."""
    data: dict = {}
    if from_status == Status.SUSPENDED and to_status != Status.SUSPENDED:
        sub.suspension_cause = SuspensionCause.NONE
    if to_status == Status.ACTIVE:
        if new_period or from_status in (Status.PENDING, Status.EXPIRED):
            data.update(_start_period(sub, at))
        elif from_status == Status.PAUSED:
            data.update(_shift_for_pause(sub, at))
    elif to_status == Status.CANCELLED:
        sub.cancelled_at = at
        ended = SubscriptionAddOn.objects.filter(subscription=sub, ended_at__isnull=True).update(ended_at=at)
        if ended:
            data["addons_ended"] = ended
        if sub.static_ip:
            data["released_static_ip"] = sub.static_ip
            sub.static_ip = None
        if sub.pending_plan_id is not None:
            data["dropped_pending_plan"] = sub.pending_plan.code
            sub.pending_plan, sub.pending_plan_at = None, None
    if from_status == Status.PAUSED and to_status != Status.PAUSED:
        sub.paused_at, sub.pause_until = None, None
    return data


def _shift_for_pause(sub: Subscription, at: dt.datetime) -> dict:
    """Resuming a paused service: the billing clock stood still while it was paused, so the period
    end (prepaid expiry, postpaid end of the invoiced period), the postpaid `next_bill_at` and a
    scheduled plan change due after the pause began all move by the paused time. The billing
    anchor day is kept: the next postpaid period runs from the shifted date to the next anchor
    date (a short period, which the billing run prorates by days)."""
    if sub.paused_at is None or at <= sub.paused_at:
        return {}
    shift = at - sub.paused_at
    data: dict = {"paused_at": _iso(sub.paused_at), "shift_seconds": int(shift.total_seconds())}
    if sub.current_period_end is not None:
        sub.current_period_end += shift
        data["period_end"] = _iso(sub.current_period_end)
    if sub.plan.kind == Plan.Kind.POSTPAID and sub.next_bill_at is not None:
        sub.next_bill_at += shift
        data["next_bill_at"] = _iso(sub.next_bill_at)
    if sub.pending_plan_at is not None and sub.pending_plan_at >= sub.paused_at:
        sub.pending_plan_at += shift
        data["pending_plan_at"] = _iso(sub.pending_plan_at)
    return data


def _begin_pause(sub: Subscription, at: dt.datetime, until) -> dict:
    """Check the vacation-hold limits under the subscription lock and record the pause.

    `until` defaults to `at` + WAVU["PAUSE_MAX_DAYS"] and may not be later than that; at most
    WAVU["PAUSES_PER_YEAR"] pauses start in the 365 days up to `at` (counted from the `paused`
    lifecycle events), the next one is refused with `pause_limit_reached`."""
    max_days = settings.WAVU["PAUSE_MAX_DAYS"]
    latest = at + dt.timedelta(days=max_days)
    if until is None:
        until = latest
    elif isinstance(until, dt.date) and not isinstance(until, dt.datetime):
        until = clock.start_of_day(until)
    if not isinstance(until, dt.datetime) or until.tzinfo is None:
        raise _field_error("until", "Give the end of the pause as a date and time with a time zone.", "until_invalid")
    if until <= at:
        raise _field_error("until", "A pause must end after it starts.", "until_invalid")
    if until > latest:
        raise _field_error("until", f"A pause lasts at most {max_days} days (until {clock.local(latest):%Y-%m-%d}).",
                           "pause_too_long")  # fmt: skip
    allowed = settings.WAVU["PAUSES_PER_YEAR"]
    taken = LifecycleEvent.objects.filter(
        subscription=sub, kind="paused", at__gt=at - dt.timedelta(days=365), at__lte=at
    ).count()
    if taken >= allowed:
        raise PauseLimitReached(
            f"Service {sub.username} was already paused {taken} time(s) in the last 12 months; "
            f"at most {allowed} pause(s) a year are allowed."
        )
    sub.paused_at, sub.pause_until = at, until
    return {"pause_until": _iso(until)}


def _change_status(
    subscription: Subscription,
    to_status: str,
    *,
    reason: str,
    actor: str | None,
    at: dt.datetime | None,
    kind: str | None = None,
    new_period: bool = False,
    require_from: Iterable[str] | None = None,
    cause: str = "",
    pause_until=None,
    event_data: dict | None = None,
) -> Subscription:
    if to_status not in Status.values:
        raise DomainError(
            f"{to_status!r} is not a subscription status.",
            code="invalid_status",
            fields={"status": [f"Choose one of: {', '.join(Status.values)}."]},
        )
    with _actor_scope(actor), transaction.atomic():
        sub = _lock(subscription)
        from_status = sub.status
        allowed = to_status in TRANSITIONS[from_status]
        if require_from is not None and from_status not in require_from:
            allowed = False
        if not allowed:
            raise InvalidTransition(
                f"Service {sub.username} is {Status(from_status).label.lower()}: it cannot become "
                f"{Status(to_status).label.lower()}.",
                fields={"status": [f"{from_status} → {to_status} is not allowed."]},
            )
        at = at or clock.now()
        before = audit.snapshot(sub)
        data = _apply_effects(sub, from_status, to_status, at, new_period)
        if to_status == Status.PAUSED:
            data.update(_begin_pause(sub, at, pause_until))
        if to_status == Status.SUSPENDED:
            sub.suspension_cause = cause or SuspensionCause.STAFF
            data["cause"] = sub.suspension_cause
        sub.status = to_status
        sub.updated_at = clock.now()
        sub.save()
        kind = kind or _event_kind(from_status, to_status, new_period)
        data.update(event_data or {})
        _event(sub, kind, at=at, from_status=from_status, to_status=to_status, reason=reason, data=data)
        audit.record(sub, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(sub), verb=kind, reason=reason)
    copy_field_values(subscription, sub)
    return subscription


def transition(
    subscription: Subscription,
    to_status: str,
    *,
    reason: str = "",
    actor: str | None = None,
    at: dt.datetime | None = None,
) -> Subscription:
    """Move `subscription` to `to_status` if `TRANSITIONS` allows it from its current status.

    Effects by target: active from pending or expired starts a new period (see `activate`), from
    suspended or paused resumes the current one (see `resume`); paused records when, with the
    default end and the limits of `pause`; cancelled ends open add-ons, releases the static IP and
    drops a scheduled plan change. `actor` overrides the label of who acted (e.g.
    "job:expiry"); by default it is `core.audit.current_actor()`. Refused with `InvalidTransition`
    (nothing changed) otherwise. Locks the subscription row; writes a lifecycle event and an audit
    event. Not idempotent: a repeated move from the new status is refused unless allowed.
    """
    return _change_status(subscription, to_status, reason=reason, actor=actor, at=at)


def activate(
    subscription: Subscription,
    *,
    at: dt.datetime | None = None,
    reason: str = "",
    actor: str | None = None,
    data: dict | None = None,
) -> Subscription:
    """Make the service active with a NEW period starting at `at` (default now): from pending
    (first activation, `activated_at` set once), expired (renewal), or suspended/paused.

    Prepaid and hotspot: the period ends at `at` + the plan's validity (the expiry). Postpaid:
    the period ends on the next billing date for the billing anchor day, which defaults to the
    local day of the first activation (a 31st anchor bills on 28/29 February and 30 April).
    `data` is added to the event's data (e.g. the invoice that paid for the period).
    """
    return _change_status(
        subscription, Status.ACTIVE, reason=reason, actor=actor, at=at, new_period=True, event_data=data
    )


def suspend(
    subscription: Subscription,
    *,
    reason: str = "",
    actor: str | None = None,
    at=None,
    cause: str = SuspensionCause.STAFF,
) -> Subscription:
    """Suspend an active service (e.g. unpaid invoice, abuse). The period is kept. `cause` records
    why (`SuspensionCause`): dunning lifts only its own "overdue" suspensions when the debt is paid."""
    if cause not in (SuspensionCause.OVERDUE, SuspensionCause.STAFF):
        raise _field_error("cause", f"{cause!r} is not a suspension cause.", "cause_invalid")
    return _change_status(subscription, Status.SUSPENDED, reason=reason, actor=actor, at=at, cause=cause)


def resume(subscription: Subscription, *, reason: str = "", actor: str | None = None, at=None) -> Subscription:
    """Bring a suspended or paused service back to active in its current period. Refused from any
    other status.

    From paused, the billing clock restarts where it stopped: for every kind of plan the period end
    moves by the paused time (`at` − `paused_at`), and so do a postpaid service's `next_bill_at`
    (its next invoice comes that much later) and a scheduled plan change due after the pause
    began. The `resumed` event's data records the shift (`shift_seconds`) and the new dates;
    `paused_at` and `pause_until` are cleared."""
    return _change_status(
        subscription,
        Status.ACTIVE,
        reason=reason,
        actor=actor,
        at=at,
        kind="resumed",
        require_from=(Status.SUSPENDED, Status.PAUSED),
    )


def pause(
    subscription: Subscription,
    *,
    until: dt.datetime | None = None,
    reason: str = "",
    actor: str | None = None,
    at: dt.datetime | None = None,
) -> Subscription:
    """Pause an active service at the customer's request (vacation hold: travel, relocation) from
    `at` (default now) until `until`, when `resume_due_pauses` resumes it by itself.

    Limits (settings.WAVU): `until` defaults to, and may not be later than, `at` +
    PAUSE_MAX_DAYS (`pause_too_long`; not after `at`: `until_invalid`); at most PAUSES_PER_YEAR
    pauses may start in the 365 days up to `at`, counted from the `paused` lifecycle events
    (`pause_limit_reached`, 409). Only an active service can be paused (`TRANSITIONS`: a pending,
    suspended or expired one is refused with `invalid_transition`). Locks the subscription; the
    limits are checked under the lock; writes a `paused` event (data: `pause_until`) and an audit
    row; a refusal writes nothing. Not idempotent: pausing a paused service is refused."""
    return _change_status(subscription, Status.PAUSED, reason=reason, actor=actor, at=at, pause_until=until)


def resume_due_pauses(now: dt.datetime | None = None) -> int:
    """Periodic job: resume every paused service whose `pause_until` has come by `now` (default
    now), acting as "job:pause", with `at` = its `pause_until` so the period moves by exactly the
    planned length of the pause however late the job runs. Returns how many were resumed.

    Idempotent and safe to run concurrently or twice: each service is locked and re-checked
    (still paused, still due) in its own transaction; a resumed service is no longer selected.
    One service failing is logged and does not stop the others."""
    now = now or clock.now()
    due = list(paused_due(now).values_list("pk", flat=True))
    resumed = 0
    for pk in due:
        try:
            with transaction.atomic():
                sub = _lock(Subscription(pk=pk))
                if sub.status != Status.PAUSED or sub.pause_until is None or sub.pause_until > now:
                    continue
                resume(sub, at=sub.pause_until, actor="job:pause", reason="the planned pause ended")
                resumed += 1
        except Exception:  # one bad row must not stop the others; the next run retries it
            logger.exception("could not resume paused subscription %s", pk)
    return resumed


def expire(subscription: Subscription, *, reason: str = "", actor: str | None = None, at=None) -> Subscription:
    """Mark an active service expired (its prepaid period ran out without renewal)."""
    return _change_status(subscription, Status.EXPIRED, reason=reason, actor=actor, at=at)


def cancel(subscription: Subscription, *, reason: str = "", actor: str | None = None, at=None) -> Subscription:
    """End a service for good (final). Open add-ons end and the static IP is released; the username
    stays reserved so usage history keeps pointing at one service."""
    return _change_status(subscription, Status.CANCELLED, reason=reason, actor=actor, at=at)


def record_event(
    subscription: Subscription,
    kind: str,
    *,
    reason: str = "",
    data: dict | None = None,
    at: dt.datetime | None = None,
    actor: str | None = None,
) -> LifecycleEvent:
    """Write a lifecycle event that is not a status change (e.g. `payment_reminder`,
    `promise_to_pay`, `plan_change_scheduled`) so that SMS and RADIUS read one stream. Runs in the
    caller's transaction; `data` must be JSON-serialisable."""
    with _actor_scope(actor):
        return _event(subscription, kind, at=at or clock.now(), reason=reason, data=data)


def renew_period(
    subscription: Subscription,
    start: dt.datetime,
    end: dt.datetime,
    *,
    reason: str = "",
    actor: str | None = None,
    data: dict | None = None,
) -> Subscription:
    """Give an active or expired prepaid/hotspot service the paid period [start, end): the new
    expiry is `end`. An expired service becomes active again. Refused (`InvalidTransition`) for
    any other status and for a postpaid plan; `ValidationError` when end <= start. Locks the
    subscription; writes a `renewed` event (with `data`) and an audit row."""
    if end <= start:
        raise _field_error("period_end", "A period must end after it starts.", "period_invalid")
    with _actor_scope(actor), transaction.atomic():
        sub = _lock(subscription)
        if sub.plan.kind == Plan.Kind.POSTPAID or sub.status not in (Status.ACTIVE, Status.EXPIRED):
            raise InvalidTransition(
                f"Service {sub.username} is {Status(sub.status).label.lower()} on a {sub.plan.kind} plan: "
                "only an active or expired prepaid service is renewed."
            )
        before = audit.snapshot(sub)
        from_status = sub.status
        sub.current_period_start, sub.current_period_end = start, end
        if sub.activated_at is None:
            sub.activated_at = start
        sub.status = Status.ACTIVE
        sub.updated_at = clock.now()
        sub.save()
        payload = {"period_start": _iso(start), "period_end": _iso(end), **(data or {})}
        _event(sub, "renewed", at=clock.now(), from_status=from_status, to_status=Status.ACTIVE, reason=reason,
               data=payload)  # fmt: skip
        audit.record(sub, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(sub), verb="renew_period",
                     reason=reason)  # fmt: skip
    copy_field_values(subscription, sub)
    return subscription


def apply_pending_plan(
    subscription: Subscription, *, at: dt.datetime | None = None, reason: str = "", actor: str | None = None
) -> bool:
    """Switch to the plan waiting in `pending_plan` once `pending_plan_at` has come (default now)
    and clear it; returns whether it switched. Idempotent: without a due pending plan it changes
    nothing. The billing run and the prepaid renewal call it before billing the next period, so
    that period is billed on the new plan. `actor` labels who acted (e.g. "job:billing-run").
    Locks the subscription; writes a `plan_changed` event (data: from_plan, to_plan,
    scheduled: true) and an audit row."""
    at = at or clock.now()
    with _actor_scope(actor), transaction.atomic():
        sub = _lock(subscription)
        if sub.pending_plan_id is None or (sub.pending_plan_at is not None and sub.pending_plan_at > at):
            copy_field_values(subscription, sub)
            return False
        before = audit.snapshot(sub)
        old_plan, new_plan = sub.plan, Plan.objects.get(pk=sub.pending_plan_id)
        sub.plan, sub.pending_plan, sub.pending_plan_at = new_plan, None, None
        sub.updated_at = clock.now()
        sub.save()
        _event(sub, "plan_changed", at=at, reason=reason or "scheduled plan change",
               data={"from_plan": old_plan.code, "to_plan": new_plan.code, "scheduled": True})  # fmt: skip
        audit.record(sub, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(sub),
                     verb="apply_pending_plan", reason=reason)  # fmt: skip
    copy_field_values(subscription, sub)
    return True


def schedule_plan_change(
    subscription: Subscription,
    new_plan: Plan,
    at: dt.datetime,
    *,
    reason: str = "",
    actor: str | None = None,
) -> Subscription:
    """Schedule a move to `new_plan` at `at` (normally the end of the current period; a downgrade
    waits for it): sets `pending_plan` / `pending_plan_at`, which `apply_pending_plan` applies.

    Refused, writing nothing: a cancelled service, the current plan, a plan no longer sold or
    without a price at `at`, a plan of another kind (`plan_kind_mismatch`). A different pending
    change is replaced (the event says which). Idempotent: the same plan at the same time again
    changes nothing. Locks the subscription; writes a `plan_change_scheduled` event (data:
    from_plan, to_plan, at, replaced) and an audit row."""
    if not isinstance(at, dt.datetime) or at.tzinfo is None:
        raise _field_error("at", "Give when the plan changes as a date and time with a time zone.", "at_invalid")
    with _actor_scope(actor), transaction.atomic():
        sub = _lock(subscription)
        validate_plan_switch(sub, new_plan, at=at)
        if sub.pending_plan_id == new_plan.pk and sub.pending_plan_at == at:
            copy_field_values(subscription, sub)
            return subscription
        before = audit.snapshot(sub)
        replaced = sub.pending_plan.code if sub.pending_plan_id is not None else None
        sub.pending_plan, sub.pending_plan_at = new_plan, at
        sub.updated_at = clock.now()
        sub.save()
        data = {"from_plan": sub.plan.code, "to_plan": new_plan.code, "at": _iso(at)}
        if replaced:
            data["replaced"] = replaced
        _event(sub, "plan_change_scheduled", at=clock.now(), reason=reason, data=data)
        audit.record(sub, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(sub),
                     verb="schedule_plan_change", reason=reason)  # fmt: skip
    copy_field_values(subscription, sub)
    return subscription


def cancel_scheduled_plan_change(subscription: Subscription, *, reason: str = "", actor: str | None = None) -> bool:
    """Drop the plan change waiting in `pending_plan`; returns whether there was one. Idempotent:
    without a pending change nothing is written. Locks the subscription; writes a
    `plan_change_cancelled` event (data: plan, at) and an audit row."""
    with _actor_scope(actor), transaction.atomic():
        sub = _lock(subscription)
        if sub.pending_plan_id is None:
            copy_field_values(subscription, sub)
            return False
        before = audit.snapshot(sub)
        data = {"plan": sub.pending_plan.code, "at": _iso(sub.pending_plan_at)}
        sub.pending_plan, sub.pending_plan_at = None, None
        sub.updated_at = clock.now()
        sub.save()
        _event(sub, "plan_change_cancelled", at=clock.now(), reason=reason, data=data)
        audit.record(sub, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(sub),
                     verb="cancel_scheduled_plan_change", reason=reason)  # fmt: skip
    copy_field_values(subscription, sub)
    return True


def _refuse_if_cancelled(sub: Subscription) -> None:
    if sub.status == Status.CANCELLED:
        raise NotAllowed(f"Service {sub.username} is cancelled.", code="subscription_cancelled")


# --- add-ons, plan and credentials --------------------------------------------------------------


def add_addon(
    subscription: Subscription, addon: AddOn, quantity: int = 1, *, at: dt.datetime | None = None, reason: str = ""
) -> SubscriptionAddOn:
    """Attach an add-on from `at` (default now). Refused for a cancelled service, an add-on no longer
    sold or without a price, a bad quantity, or a recurring add-on the service already has (end it
    first). Locks the subscription; writes an `addon_added` event and an audit row."""
    quantity = _clean_quantity(quantity)
    at = at or clock.now()
    _check_addon_available(addon, at)
    with transaction.atomic():
        sub = _lock(subscription)
        _refuse_if_cancelled(sub)
        if addon.billing == AddOn.Billing.RECURRING and sub.addons.filter(addon=addon, ended_at__isnull=True).exists():
            raise NotAllowed(f"Service {sub.username} already has {addon}.", code="addon_already_attached")
        item = SubscriptionAddOn.objects.create(subscription=sub, addon=addon, quantity=quantity, started_at=at)
        _event(sub, "addon_added", at=at, reason=reason, data={"addon": addon.code, "quantity": quantity})
        audit.record(item, AuditEvent.Action.CREATE, verb="add_addon", reason=reason)
    return item


def end_addon(item: SubscriptionAddOn, *, at: dt.datetime | None = None, reason: str = "") -> SubscriptionAddOn:
    """Stop an add-on from `at` (default now). Refused when it has already ended or `at` is before it
    started. Locks the subscription; writes an `addon_ended` event and an audit row."""
    at = at or clock.now()
    with transaction.atomic():
        sub = _lock(item.subscription)
        locked = SubscriptionAddOn.objects.select_related("addon").get(pk=item.pk)
        if locked.ended_at is not None:
            raise NotAllowed(f"{locked.addon} already ended.", code="addon_already_ended")
        if at < locked.started_at:
            raise _field_error("at", "An add-on cannot end before it started.", "end_before_start")
        before = audit.snapshot(locked)
        locked.ended_at = at
        locked.save(update_fields=["ended_at"])
        _event(sub, "addon_ended", at=at, reason=reason, data={"addon": locked.addon.code})
        audit.record(
            locked,
            AuditEvent.Action.UPDATE,
            before=before,
            after=audit.snapshot(locked),
            verb="end_addon",
            reason=reason,
        )
    item.ended_at = locked.ended_at
    return item


def validate_plan_change(subscription: Subscription, new_plan: Plan, *, at: dt.datetime | None = None) -> None:
    """The checks of `change_plan`, without writing: the service is not cancelled, the plan is a
    different one, still sold and priced at `at` (default now)."""
    _refuse_if_cancelled(subscription)
    if subscription.plan_id == new_plan.pk:
        raise NotAllowed(f"Service {subscription.username} is already on {new_plan}.", code="same_plan")
    if not new_plan.is_active:
        raise NotAllowed(f"The plan {new_plan} is no longer sold.", code="plan_not_available")
    plan_price(new_plan, at or clock.now())


def validate_plan_switch(subscription: Subscription, new_plan: Plan, *, at: dt.datetime | None = None) -> None:
    """`validate_plan_change` plus: the new plan is of the same kind (postpaid, prepaid, hotspot);
    moving between kinds is a new service, refused with `plan_kind_mismatch`."""
    validate_plan_change(subscription, new_plan, at=at)
    if new_plan.kind != subscription.plan.kind:
        raise PlanKindMismatch(
            f"{subscription.plan} is a {subscription.plan.get_kind_display().lower()} plan and {new_plan} a "
            f"{new_plan.get_kind_display().lower()} one: switching between postpaid, prepaid and hotspot is not a "
            "plan change; cancel this service and open a new one.",
            fields={"plan": ["a plan of another kind"]},
        )


def change_plan(
    subscription: Subscription,
    new_plan: Plan,
    *,
    reason: str = "",
    at: dt.datetime | None = None,
    data: dict | None = None,
    actor: str | None = None,
) -> Subscription:
    """Move the service to `new_plan` from now on: the primitive switch, without any billing.
    (`billing.plan_changes.change_plan` prorates the current period and calls this.) Refused for a
    cancelled service, the same plan, or a plan no longer sold or without a price. Locks the
    subscription; writes a `plan_changed` event (data: from_plan, to_plan and the caller's `data`,
    which must be JSON-serialisable) and an audit row."""
    at = at or clock.now()
    with _actor_scope(actor), transaction.atomic():
        sub = _lock(subscription)
        validate_plan_change(sub, new_plan, at=at)
        before = audit.snapshot(sub)
        old_plan = sub.plan
        sub.plan = new_plan
        if new_plan.kind != Plan.Kind.POSTPAID:
            sub.billing_anchor_day = None
        sub.updated_at = clock.now()
        sub.save()
        _event(
            sub,
            "plan_changed",
            at=at,
            reason=reason,
            data={"from_plan": old_plan.code, "to_plan": new_plan.code, **(data or {})},
        )
        audit.record(
            sub, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(sub), verb="change_plan", reason=reason
        )
    copy_field_values(subscription, sub)
    return subscription


def change_credentials(
    subscription: Subscription,
    *,
    username: str | None = None,
    regenerate_password: bool = False,
    static_ip=UNSET,
    mac_address=UNSET,
    reason: str = "",
) -> Subscription:
    """Change the network credentials: username, a new random password, static IP (None or "" to
    remove) and MAC address ("" to remove). Only what is passed changes.

    Refused, changing nothing: a cancelled service; a malformed username, IPv4 address or MAC
    address; a username or static IP another service holds (field error; the unique constraints
    back this up under concurrency). Locks the subscription; writes a `credentials_changed`
    event (never the password itself) and an audit row.
    """
    with transaction.atomic():
        sub = _lock(subscription)
        _refuse_if_cancelled(sub)
        changes = {}
        if username is not None and username != sub.username:
            changes["username"] = _clean_username(username, exclude_pk=sub.pk)
        if static_ip is not UNSET:
            ip = _clean_static_ip(static_ip, exclude_pk=sub.pk)
            if ip != sub.static_ip:
                changes["static_ip"] = ip
        if mac_address is not UNSET:
            mac = normalize_mac(mac_address)
            if mac != sub.mac_address:
                changes["mac_address"] = mac
        if regenerate_password:
            changes["password"] = generate_password()
        if not changes:
            copy_field_values(subscription, sub)
            return subscription
        before = audit.snapshot(sub)
        for field, value in changes.items():
            setattr(sub, field, value)
        sub.updated_at = clock.now()
        try:
            with transaction.atomic():
                sub.save()
        except IntegrityError as exc:
            field = "username" if "username" in changes else "static_ip"
            raise _field_error(field, "Another service took this value a moment ago.", f"{field}_taken") from exc
        changed = sorted(changes)
        _event(sub, "credentials_changed", at=clock.now(), reason=reason, data={"changed": changed})
        after = audit.snapshot(sub)
        if regenerate_password:
            before["password_changed"], after["password_changed"] = False, True
        audit.record(
            sub, AuditEvent.Action.UPDATE, before=before, after=after, verb="change_credentials", reason=reason
        )
    copy_field_values(subscription, sub)
    return subscription


def update_subscription(
    subscription: Subscription, *, notes=UNSET, billing_anchor_day=UNSET, auto_renew=UNSET, reason: str = ""
) -> Subscription:
    """Change the service's notes, (postpaid only) its billing day of the month, or whether a
    prepaid service renews from account credit at expiry (`auto_renew`, a boolean). The new billing
    day applies from the next period. Locks the subscription; audited; a no-op writes nothing."""
    if auto_renew is not UNSET and not isinstance(auto_renew, bool):
        raise _field_error("auto_renew", "auto_renew is true or false.", "auto_renew_invalid")
    with transaction.atomic():
        sub = _lock(subscription)
        before = audit.snapshot(sub)
        if notes is not UNSET:
            sub.notes = (notes or "").strip()
        if billing_anchor_day is not UNSET:
            sub.billing_anchor_day = clean_billing_anchor_day(billing_anchor_day, sub.plan)
        if auto_renew is not UNSET:
            sub.auto_renew = auto_renew
        audit.save_if_changed(sub, before, verb="update_subscription", reason=reason)
    copy_field_values(subscription, sub)
    return subscription

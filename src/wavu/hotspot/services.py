"""Hotspot vouchers: issuing batches, noticing first logins, revoking.

- `issue_batch` creates a `VoucherBatch` and, per voucher, one hotspot `Subscription` (username =
  password = the code, status active with no period: the state `billing.prepaid` leaves a
  first-login package in) under the ISP's voucher-stock customer, plus its `Voucher`, a lifecycle
  event and a RADIUS sync request. Set-based: a fixed number of statements per table whatever the
  quantity on PostgreSQL (`core.db` inserts; SQLite in chunks of 64 rows). Codes are random over an
  unambiguous alphabet; uniqueness is the database's (the subscription's case-insensitive unique
  username, then the voucher's unique code): a code a concurrent batch or an existing login already
  holds is skipped by ON CONFLICT DO NOTHING and drawn again, so two batches never share a code.
  A batch sold to a reseller account is invoiced to it (one issued invoice, quantity × price, one
  line); a batch without one has no ledger effect (docs/network.md, "Hotspot vouchers").
- `drain_first_logins` reads new `radacct` rows (a cursor on radacctid) and, for a voucher seen for
  the first time, starts its clock with `billing.prepaid.start_at_first_login` at the session's start
  and, on a MAC-locked batch, records the device's Calling-Station-Id; the projection then emits
  `Calling-Station-Id == <mac>`. Used vouchers whose service expired are marked expired.
- `revoke_vouchers` / `revoke_batch` cancel the vouchers' services (RADIUS: no rows → Reject),
  audited, set-based.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import BigIntegerField
from django.db.models.functions import Cast

from wavu.billing import services as billing
from wavu.billing.models import InvoiceLine
from wavu.billing.prepaid import start_at_first_login
from wavu.catalog.models import Plan
from wavu.catalog.selectors import plan_price
from wavu.core import audit, clock
from wavu.core.db import insert_new_rows, insert_rows
from wavu.core.errors import DomainError, NotAllowed
from wavu.core.identifiers import make_account_number
from wavu.core.models import AuditEvent
from wavu.core.sequences import next_value
from wavu.customers.models import Customer
from wavu.customers.services import ACCOUNT_SEQUENCE, ACCOUNT_SEQUENCE_START
from wavu.network.fields import to_datetime
from wavu.network.models import RadAcct
from wavu.network.signals import request_syncs
from wavu.subscriptions.models import LifecycleEvent, Status, Subscription

from .models import (
    CODE_ALPHABET,
    CODE_LENGTH_DEFAULT,
    CODE_LENGTH_MAX,
    CODE_LENGTH_MIN,
    FirstLoginCursor,
    Voucher,
    VoucherBatch,
    VoucherStock,
)

logger = logging.getLogger(__name__)

MAX_QUANTITY = 50_000
MAX_DEVICE_LIMIT = 100
CODE_ROUNDS = 8  # draws of the codes still missing before giving up (collisions are ~1e-7 per code)
DRAIN_BATCH = 1000
CURSOR_OVERLAP = 100  # radacct ids re-read behind the cursor: a row committed out of id order is not missed
STOCK_NAME = "Hotspot voucher stock"


class CodesExhausted(DomainError):
    code = "codes_exhausted"
    status = 409


# --- codes ---------------------------------------------------------------------------------


def generate_codes(count: int, length: int = CODE_LENGTH_DEFAULT) -> set[str]:
    """`count` distinct random codes of `length` characters from `CODE_ALPHABET` (secrets)."""
    codes: set[str] = set()
    while len(codes) < count:
        codes.add("".join(secrets.choice(CODE_ALPHABET) for _ in range(length)))
    return codes


# --- the stock customer --------------------------------------------------------------------


def stock_customer() -> Customer:
    """The ISP's voucher-stock customer, opened on first use (one per ISP: `VoucherStock` id 1)."""
    stock = VoucherStock.objects.select_related("customer").filter(pk=1).first()
    if stock is not None:
        return stock.customer
    try:
        with transaction.atomic():
            now = clock.now()
            number = make_account_number(next_value(ACCOUNT_SEQUENCE, start=ACCOUNT_SEQUENCE_START))
            customer = Customer.objects.create(
                account_number=number,
                kind=Customer.Kind.INDIVIDUAL,
                name=STOCK_NAME,
                phone="",
                notes="Holds the services of printed hotspot vouchers; never takes payments.",
                created_at=now,
                updated_at=now,
            )
            VoucherStock.objects.create(pk=1, customer=customer)
            audit.record(customer, AuditEvent.Action.CREATE, verb="open_voucher_stock")
            return customer
    except IntegrityError:  # opened meanwhile by a concurrent batch
        return VoucherStock.objects.select_related("customer").get(pk=1).customer


# --- issuing -------------------------------------------------------------------------------


def _int(value, field: str, low: int, high: int, errors: dict) -> int | None:
    try:
        number = int(value)
        if isinstance(value, bool) or str(number) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        errors[field] = ["a whole number"]
        return None
    if not low <= number <= high:
        errors[field] = [f"between {low} and {high}"]
        return None
    return number


def _clean(plan, quantity, price, code_length, sold_by, reseller, note, device_limit, at) -> dict:
    errors: dict[str, list[str]] = {}
    if not isinstance(plan, Plan):
        errors["plan"] = ["choose a hotspot plan"]
    elif plan.kind != Plan.Kind.HOTSPOT:
        errors["plan"] = [f"{plan.name} is not a hotspot plan"]
    elif plan.hotspot_starts != Plan.HotspotStart.FIRST_LOGIN:
        errors["plan"] = [f"{plan.name} starts at purchase; vouchers need a plan that starts at first login"]
    elif not plan.is_active:
        errors["plan"] = [f"{plan.name} is withdrawn"]
    quantity = _int(quantity, "quantity", 1, MAX_QUANTITY, errors)
    code_length = _int(code_length, "code_length", CODE_LENGTH_MIN, CODE_LENGTH_MAX, errors)
    if device_limit is not None:
        device_limit = _int(device_limit, "device_limit", 1, MAX_DEVICE_LIMIT, errors)
    elif isinstance(plan, Plan):
        device_limit = max(plan.devices_allowed, 1)
    if price is not None:
        try:
            price = Decimal(str(price))
            if not price.is_finite() or price < 0 or price != price.quantize(Decimal("0.01")):
                raise InvalidOperation
            price = price.quantize(Decimal("0.01"))
        except (InvalidOperation, ValueError):
            errors["price"] = ["an amount of 0 or more with at most 2 decimals"]
    elif "plan" not in errors:
        price = plan_price(plan, at).amount  # NoPrice (400) when the plan has none
    if len(sold_by or "") > 120:
        errors["sold_by"] = ["at most 120 characters"]
    if len(note or "") > 300:
        errors["note"] = ["at most 300 characters"]
    if reseller is not None and reseller.status == Customer.Status.CLOSED:
        errors["reseller"] = [f"account {reseller.account_number} is closed"]
    if errors:
        raise ValidationError(errors)
    return {"quantity": quantity, "price": price, "code_length": code_length, "device_limit": device_limit}


_SUB_FIELDS = [
    "customer_id",
    "plan_id",
    "status",
    "username",
    "password",
    "mac_address",
    "auto_renew",
    "suspension_cause",
    "notes",
    "activated_at",
    "created_at",
    "updated_at",
]


def _claim_codes(batch: VoucherBatch, customer: Customer, now: dt.datetime) -> dict[str, int]:
    """Create the batch's services, one per fresh code; returns {code: subscription id}. A code
    some login already has (any case) is refused by the unique username and drawn again."""
    claimed: dict[str, int] = {}
    note = f"hotspot voucher, batch {batch.pk}"
    for _round in range(CODE_ROUNDS):
        missing = batch.quantity - len(claimed)
        if not missing:
            return claimed
        codes = sorted(generate_codes(missing, batch.code_length) - set(claimed))
        rows = [
            (customer.pk, batch.plan_id, Status.ACTIVE, code, code, "", False, "", note, now, now, now)
            for code in codes
        ]
        inserted = insert_new_rows(Subscription, _SUB_FIELDS, rows, key=["username"])
        claimed.update({key[0]: pk for key, pk in inserted.items()})
    if len(claimed) < batch.quantity:
        raise CodesExhausted(
            f"Could not draw {batch.quantity} unused codes of {batch.code_length} characters; use longer codes."
        )
    return claimed


def issue_batch(
    *,
    plan: Plan,
    quantity,
    price=None,
    code_length=CODE_LENGTH_DEFAULT,
    sold_by: str = "",
    reseller: Customer | None = None,
    note: str = "",
    mac_lock: bool = False,
    device_limit=None,
    at: dt.datetime | None = None,
) -> VoucherBatch:
    """Issue a batch of `quantity` vouchers for a hotspot plan that starts at first login.

    `price` per voucher defaults to the plan's price now; `device_limit` (Simultaneous-Use) to the
    plan's devices. Each voucher is a service of the voucher-stock customer, active with no period:
    RADIUS accepts the code (username = password) with a Session-Timeout of the package's length,
    and its validity starts at its first login. With `reseller`, the batch is invoiced to that
    account (quantity × price; nothing when the price is 0). Invalid input raises ValidationError
    (or NoPrice) and writes nothing. One transaction; audited."""
    at = at or clock.now()
    cleaned = _clean(plan, quantity, price, code_length, sold_by, reseller, note, device_limit, at)
    actor = audit.current_actor()
    with transaction.atomic():
        customer = stock_customer()
        batch = VoucherBatch.objects.create(
            plan=plan,
            currency=settings.WAVU["CURRENCY"],
            sold_by=(sold_by or "").strip(),
            reseller=reseller,
            note=(note or "").strip(),
            mac_lock=bool(mac_lock),
            created_by=actor.user if getattr(actor.user, "pk", None) else None,
            created_by_label=actor.label[:120],
            created_at=at,
            **cleaned,
        )
        claimed = _claim_codes(batch, customer, at)
        ordered = sorted(claimed.items())
        insert_rows(
            Voucher,
            ["batch_id", "code", "subscription_id", "status", "locked_mac"],
            [(batch.pk, code, sub_id, Voucher.Status.UNUSED, "") for code, sub_id in ordered],
        )
        data = {"starts": "first_login", "voucher_batch": batch.pk, "plan": plan.code}
        insert_rows(
            LifecycleEvent,
            ["subscription_id", "at", "kind", "from_status", "to_status", "reason", "actor_label", "data"],
            [(sub_id, at, "voucher_issued", "", Status.ACTIVE, note_for(batch), actor.label[:120], data)
             for _code, sub_id in ordered],
        )  # fmt: skip
        request_syncs(claimed.values())
        if reseller is not None and batch.price > 0:
            batch.invoice = _invoice_batch(batch, reseller)
            batch.save(update_fields=["invoice"])
        audit.record(batch, AuditEvent.Action.CREATE, verb="issue_voucher_batch")
    return batch


def note_for(batch: VoucherBatch) -> str:
    return f"voucher batch {batch.pk}" + (f" for {batch.sold_by}" if batch.sold_by else "")


def validate_batch(
    *,
    plan,
    quantity,
    price=None,
    code_length=CODE_LENGTH_DEFAULT,
    sold_by="",
    reseller=None,
    note="",
    device_limit=None,
    at=None,
) -> dict:
    """What `issue_batch` checks, without writing (the admin's form uses it)."""
    return _clean(plan, quantity, price, code_length, sold_by, reseller, note, device_limit, at or clock.now())


def _invoice_batch(batch: VoucherBatch, reseller: Customer):
    invoice = billing.create_draft_invoice(reseller, notes=f"Hotspot voucher batch {batch.pk}")
    billing.add_line(
        invoice,
        kind=InvoiceLine.Kind.ONE_OFF,
        description=f"Hotspot vouchers: {batch.plan.name} (batch {batch.pk})"[:200],
        unit_price=batch.price,
        quantity=batch.quantity,
        tax_class=batch.plan.tax_class,
        plan=batch.plan,
    )
    return billing.issue_invoice(invoice)


# --- first logins --------------------------------------------------------------------------


def _cursor() -> FirstLoginCursor:
    FirstLoginCursor.objects.bulk_create([FirstLoginCursor(pk=1)], ignore_conflicts=True)
    return FirstLoginCursor.objects.select_for_update().get(pk=1)


def drain_first_logins(*, limit: int = DRAIN_BATCH) -> int:
    """Read `radacct` rows added since the last call (up to `limit`) and start the vouchers seen in
    them; returns how many new rows were read. Listed in `wavu.schedule.DRAINS`.

    The cursor row is locked, so workers take turns; the last `CURSOR_OVERLAP` ids are read again so
    a row committed after a higher id is still seen. For each unused voucher among the user names:
    `start_at_first_login` at the session's start (idempotent; the service's period, its
    `period_started` event and RADIUS sync follow from it), the voucher becomes active and, on a
    MAC-locked batch, keeps the session's Calling-Station-Id. Then used vouchers whose service has
    expired are marked expired."""
    seen = FirstLoginCursor.objects.filter(pk=1).values_list("last_radacctid", flat=True).first() or 0
    if not RadAcct.objects.filter(radacctid__gt=seen).exists():
        return 0  # idle: two reads, no write
    with transaction.atomic():
        cursor = _cursor()
        since = max(cursor.last_radacctid - CURSOR_OVERLAP, 0)
        rows = _radacct_rows(since, limit + CURSOR_OVERLAP)
        new = [row for row in rows if row[0] > cursor.last_radacctid]
        if not new:
            return 0
        first: dict[str, tuple] = {}
        for row in rows:
            if row[1]:
                first.setdefault(row[1], row)
        unused = Voucher.objects.filter(code__in=list(first), status=Voucher.Status.UNUSED).select_related(
            "batch", "subscription"
        )
        for voucher in unused.order_by("pk"):
            _, _, started, updated, station = first[voucher.code]
            try:
                start_voucher(voucher, at=started or updated or clock.now(), calling_station_id=station or "")
            except DomainError:  # left unused (its own savepoint rolled back); its next session retries it
                logger.exception("voucher %s: first login at %s not recorded", voucher.code, started)
        cursor.last_radacctid = new[-1][0]
        cursor.save(update_fields=["last_radacctid"])
        mark_expired()
    return len(new)


def _radacct_rows(since: int, limit: int) -> list[tuple]:
    """(radacctid, username, start, update, Calling-Station-Id) of radacct rows after id `since`.

    On SQLite the timestamps are Unix seconds in a column declared `datetime`, which the sqlite3
    driver's own converter turns into None; reading them cast to integers avoids it."""
    rows = RadAcct.objects.filter(radacctid__gt=since).order_by("radacctid")
    if connection.vendor == "sqlite":
        rows = rows.annotate(
            start=Cast("acctstarttime", BigIntegerField()), update=Cast("acctupdatetime", BigIntegerField())
        )
        return [
            (pk, user, to_datetime(start), to_datetime(update), station)
            for pk, user, start, update, station in rows.values_list(
                "radacctid", "username", "start", "update", "callingstationid"
            )[:limit]
        ]
    return list(
        rows.values_list("radacctid", "username", "acctstarttime", "acctupdatetime", "callingstationid")[:limit]
    )


def start_voucher(voucher: Voucher, *, at: dt.datetime, calling_station_id: str = "") -> bool:
    """The first login of `voucher` at `at`: its service's clock starts (`start_at_first_login`), the
    voucher becomes active and, on a MAC-locked batch, is locked to `calling_station_id`. Returns
    True when this call started it; a voucher already used or revoked is left alone."""
    with transaction.atomic():
        # the voucher row first, then the service's (the order revoking takes them in)
        if not Voucher.objects.select_for_update().filter(pk=voucher.pk, status=Voucher.Status.UNUSED).exists():
            return False
        start_at_first_login(voucher.subscription, at)
        sub_status = Subscription.objects.filter(pk=voucher.subscription_id).values_list("status", flat=True).get()
        if sub_status != Status.ACTIVE:
            return False
        mac = calling_station_id.strip()[:64] if voucher.batch.mac_lock else ""
        changed = Voucher.objects.filter(pk=voucher.pk, status=Voucher.Status.UNUSED).update(
            status=Voucher.Status.ACTIVE, first_used_at=at, locked_mac=mac
        )
        if changed:
            request_syncs([voucher.subscription_id])  # the projection reads locked_mac
    voucher.refresh_from_db()
    return bool(changed)


def mark_expired() -> int:
    """Used vouchers whose service has expired are expired (one UPDATE)."""
    expired = Subscription.objects.filter(status=Status.EXPIRED).values("pk")
    return Voucher.objects.filter(status=Voucher.Status.ACTIVE, subscription_id__in=expired).update(
        status=Voucher.Status.EXPIRED
    )


# --- revoking ------------------------------------------------------------------------------

_LIVE = (Voucher.Status.UNUSED, Voucher.Status.ACTIVE, Voucher.Status.EXPIRED)


def _revoke(vouchers, *, reason: str, at: dt.datetime) -> list[int]:
    """Revoke the live vouchers among `vouchers` (a queryset) and cancel their services, set-based;
    returns the revoked voucher ids. The caller holds a transaction."""
    locked = list(
        vouchers.select_for_update().filter(status__in=_LIVE).order_by("pk").values_list("pk", "subscription_id")
    )
    if not locked:
        return []
    ids, sub_ids = [pk for pk, _ in locked], [sid for _, sid in locked]
    Voucher.objects.filter(pk__in=ids).update(status=Voucher.Status.REVOKED, revoked_at=at)
    subs = list(
        Subscription.objects.select_for_update()
        .filter(pk__in=sub_ids)
        .exclude(status=Status.CANCELLED)
        .order_by("pk")
        .values_list("pk", "status")
    )
    Subscription.objects.filter(pk__in=[pk for pk, _ in subs]).update(
        status=Status.CANCELLED, cancelled_at=at, updated_at=at
    )
    label = audit.current_actor().label[:120]
    insert_rows(
        LifecycleEvent,
        ["subscription_id", "at", "kind", "from_status", "to_status", "reason", "actor_label", "data"],
        [(pk, at, "cancelled", old, Status.CANCELLED, reason[:300], label, {"voucher_revoked": True})
         for pk, old in subs],
    )  # fmt: skip
    request_syncs(sub_ids)
    return ids


def revoke_voucher(voucher: Voucher, *, reason: str = "") -> Voucher:
    """Revoke one voucher: its service is cancelled, so RADIUS rejects the code. Audited. A voucher
    already revoked is refused (`NotAllowed`, 409), writing nothing."""
    at = clock.now()
    with transaction.atomic():
        before = audit.snapshot(voucher)
        if not _revoke(Voucher.objects.filter(pk=voucher.pk), reason=reason or "voucher revoked", at=at):
            raise NotAllowed(f"Voucher {voucher.code} is already revoked.")
        voucher.refresh_from_db()
        audit.record(
            voucher, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(voucher), verb="revoke_voucher",
            reason=reason,
        )  # fmt: skip
    return voucher


def revoke_batch(batch: VoucherBatch, *, reason: str = "") -> int:
    """Revoke every voucher of `batch` not revoked yet (used or not); returns how many. Audited once
    for the batch. A batch with nothing left to revoke is refused (`NotAllowed`, 409)."""
    at = clock.now()
    with transaction.atomic():
        locked = VoucherBatch.objects.select_for_update().get(pk=batch.pk)
        before = audit.snapshot(locked)
        ids = _revoke(Voucher.objects.filter(batch=locked), reason=reason or f"voucher batch {batch.pk} revoked", at=at)
        if not ids:
            raise NotAllowed(f"Every voucher of batch {batch.pk} is already revoked.")
        locked.revoked_at = at
        locked.save(update_fields=["revoked_at"])
        audit.record(
            locked, AuditEvent.Action.UPDATE, before=before, after=audit.snapshot(locked), verb="revoke_voucher_batch",
            reason=f"{reason} ({len(ids)} vouchers)".strip(),
        )  # fmt: skip
    batch.refresh_from_db()
    return len(ids)

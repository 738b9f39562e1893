"""Seed a believable Kenyan ISP: catalog, customers, services and months of billing history.

Determinism: every random choice comes from one `random.Random(seed)`, drawn in a fixed order, so
the same seed gives the same customers, plans, services, invoices, payments and credit notes.
Dates are anchored to `clock.today()`: the history ends at the start of today, so two runs on the
same day give identical data, and a run on another day gives the same data shifted in time.

How it writes:
- the catalog through the catalog services;
- customers and subscriptions in bulk (about 2,000 customers a second with their services):
  account numbers are reserved as one block of the `customer_account` sequence, every row is
  validated with the customers service's cleaning rules, and each gets the audit row and
  lifecycle events that the services would have written;
- every financial record — invoices, credit notes, payments, allocations, refunds, reversals —
  through the billing and payments services, replayed in time order under a simulated clock, so
  the ledger balances and invoice and credit-note numbers are gap-free exactly as in production.

The history is what costs time (one service call per invoice and per payment): `months` bounds it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from dateutil.relativedelta import relativedelta
from django.db import connection, transaction
from django.db.models import Count, Sum

from wavu.billing import services as billing
from wavu.billing.models import CreditNote, Invoice
from wavu.catalog import services as catalog
from wavu.catalog.models import AddOn, Plan
from wavu.catalog.selectors import plan_validity_end
from wavu.core import audit, clock
from wavu.core.errors import DomainError
from wavu.core.identifiers import make_account_number
from wavu.core.models import AuditEvent
from wavu.core.sequences import next_values
from wavu.core.tax import TaxClass
from wavu.customers.models import Customer
from wavu.customers.services import ACCOUNT_SEQUENCE, ACCOUNT_SEQUENCE_START, clean_customer_data
from wavu.ledger import selectors as ledger_selectors
from wavu.network.signals import request_syncs
from wavu.payments import selectors as payment_selectors
from wavu.payments import services as payments
from wavu.payments.models import Method, Payment, Refund
from wavu.subscriptions.models import LifecycleEvent, Status, Subscription, SubscriptionAddOn
from wavu.subscriptions.periods import next_billing_date, period_for
from wavu.subscriptions.services import PASSWORD_ALPHABET, PASSWORD_LENGTH

from . import data
from .simclock import simulated_clock

ACTOR = "job:seed-demo"
DEFAULT_MONTHS = 6
BULK_BATCH = 1000
STATIC_IP_POOL = ipaddress.IPv4Network("100.64.0.0/10")  # shared address space: demo addresses only

BANKS = ("Equity Bank", "KCB", "Co-operative Bank", "NCBA", "Stanbic", "Absa", "Family Bank", "I&M Bank")


class DatabaseNotEmpty(DomainError):
    code = "database_not_empty"


# --- the catalog ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSpec:
    code: str
    name: str
    kind: str
    technology: str
    price: Decimal
    down: int
    up: int
    unit: str = Plan.ValidityUnit.MONTH
    count: int = 1
    extra: dict = field(default_factory=dict)


PLANS = (
    PlanSpec(
        "home-fibre-10",
        "Home Fibre 10 Mbps",
        Plan.Kind.POSTPAID,
        Plan.Technology.FTTH,
        Decimal("2500"),
        10_000,
        5_000,
        extra={"description": "Unlimited fibre to the home, billed monthly"},
    ),
    PlanSpec(
        "home-fibre-20",
        "Home Fibre 20 Mbps",
        Plan.Kind.POSTPAID,
        Plan.Technology.FTTH,
        Decimal("3500"),
        20_000,
        10_000,
        extra={"description": "Unlimited fibre to the home, billed monthly"},
    ),
    PlanSpec(
        "home-fibre-40",
        "Home Fibre 40 Mbps",
        Plan.Kind.POSTPAID,
        Plan.Technology.FTTH,
        Decimal("5000"),
        40_000,
        20_000,
        extra={"description": "Unlimited fibre to the home, billed monthly", "devices_allowed": 1},
    ),
    PlanSpec(
        "wireless-5",
        "Wireless 5 Mbps (prepaid)",
        Plan.Kind.PREPAID,
        Plan.Technology.FIXED_WIRELESS,
        Decimal("2000"),
        5_000,
        2_000,
        extra={"description": "Fixed wireless, pay before you use, 30 days", "sold_on_portal": True},
    ),
    PlanSpec(
        "wireless-10",
        "Wireless 10 Mbps (prepaid)",
        Plan.Kind.PREPAID,
        Plan.Technology.FIXED_WIRELESS,
        Decimal("3000"),
        10_000,
        4_000,
        extra={
            "description": "Fixed wireless with burst, pay before you use, 30 days",
            "sold_on_portal": True,
            "burst_download_kbps": 15_000,
            "burst_upload_kbps": 6_000,
            "burst_threshold_percent": 75,
            "burst_time_seconds": 16,
        },
    ),
    PlanSpec(
        "hotspot-1h",
        "Hotspot 1 hour",
        Plan.Kind.HOTSPOT,
        Plan.Technology.HOTSPOT,
        Decimal("10"),
        3_000,
        1_000,
        Plan.ValidityUnit.HOUR,
        1,
        {"sold_on_portal": True, "hotspot_starts": Plan.HotspotStart.FIRST_LOGIN},
    ),
    PlanSpec(
        "hotspot-24h",
        "Hotspot 24 hours",
        Plan.Kind.HOTSPOT,
        Plan.Technology.HOTSPOT,
        Decimal("50"),
        3_000,
        1_000,
        Plan.ValidityUnit.HOUR,
        24,
        {"sold_on_portal": True},
    ),
    PlanSpec(
        "hotspot-7d",
        "Hotspot 7 days",
        Plan.Kind.HOTSPOT,
        Plan.Technology.HOTSPOT,
        Decimal("300"),
        5_000,
        2_000,
        Plan.ValidityUnit.DAY,
        7,
        {"sold_on_portal": True, "devices_allowed": 2},
    ),
    PlanSpec(
        "hotspot-30d-10gb",
        "Hotspot 30 days 10 GB",
        Plan.Kind.HOTSPOT,
        Plan.Technology.HOTSPOT,
        Decimal("1000"),
        5_000,
        2_000,
        Plan.ValidityUnit.DAY,
        30,
        {
            "sold_on_portal": True,
            "devices_allowed": 2,
            "data_quota_mb": 10_240,
            "quota_action": Plan.QuotaAction.THROTTLE,
            "fup_download_kbps": 1_000,
            "fup_upload_kbps": 512,
            "description": "10 GB at full speed, then 1 Mbps until the 30 days end",
        },
    ),
)
PLAN_BY_CODE = {p.code: p for p in PLANS}

ADDONS = (
    ("static-ip", "Static IP address", AddOn.Category.STATIC_IP, AddOn.Billing.RECURRING, Decimal("500")),
    ("router-rental", "Wi-Fi router rental", AddOn.Category.EQUIPMENT_RENTAL, AddOn.Billing.RECURRING, Decimal("300")),
    ("installation", "Installation", AddOn.Category.INSTALLATION, AddOn.Billing.ONE_OFF, Decimal("2500")),
)
ADDON_PRICE = {code: price for code, _n, _c, _b, price in ADDONS}

# Final status of services, by kind (weights). Prepaid services mostly lapse into "expired".
POSTPAID_STATUS = ((Status.ACTIVE, 80), (Status.SUSPENDED, 9), (Status.PAUSED, 3), (Status.CANCELLED, 8))
PREPAID_STATUS = (
    (Status.ACTIVE, 68),
    (Status.EXPIRED, 20),
    (Status.SUSPENDED, 3),
    (Status.PAUSED, 3),
    (Status.CANCELLED, 6),
)
SHOWCASE_POSTPAID = (Status.SUSPENDED, Status.PAUSED, Status.CANCELLED)
SHOWCASE_PREPAID = (Status.EXPIRED, Status.SUSPENDED)
# How customers pay a postpaid invoice (weights).
PAYERS = (("prompt", 58), ("late", 16), ("partial", 9), ("advance", 7), ("roundup", 10))

CREDIT_REASONS = (
    ("Outage credit: fibre cut on {estate} backbone, {days} days without service", "outage"),
    ("Outage credit: power failure at the {estate} distribution point, {days} days", "outage"),
    ("Billed after the customer asked to cancel", "full"),
    ("Wrong plan billed: customer had moved to a smaller plan", "half"),
    ("Goodwill credit: slow speeds reported and confirmed ({days} days)", "outage"),
)


# --- what the seed plans before it writes --------------------------------------------------------


@dataclass
class CustomerPlan:
    fields: dict
    joined: dt.datetime
    community: str
    first_name: str
    town: data.Town
    estate: data.Estate
    pk: int | None = None
    account_number: str = ""


@dataclass
class ServicePlan:
    customer: int  # index into customers
    plan: PlanSpec
    status: str
    created: dt.datetime
    activated: dt.datetime | None
    addons: list[str]
    anchor_day: int | None = None
    static_ip: str | None = None
    mac: str = ""
    password: str = ""
    current_start: dt.datetime | None = None
    current_end: dt.datetime | None = None
    ended_at: dt.datetime | None = None  # when it became suspended/paused/cancelled/expired
    events: list[tuple] = field(default_factory=list)  # lifecycle: (at, kind, from, to, reason, add-on codes)
    pk: int | None = None


@dataclass
class Summary:
    customers: int = 0
    businesses: int = 0
    subscriptions: Counter = field(default_factory=Counter)
    plans: int = 0
    addons: int = 0
    invoices: int = 0
    invoiced: Decimal = Decimal("0.00")
    credit_notes: int = 0
    credited: Decimal = Decimal("0.00")
    payments: Counter = field(default_factory=Counter)
    received: Decimal = Decimal("0.00")
    refunds: int = 0
    reversed: int = 0
    unmatched: int = 0
    receivable: Decimal = Decimal("0.00")
    customer_credit: Decimal = Decimal("0.00")
    balanced: bool = False
    history_from: dt.date | None = None
    history_to: dt.date | None = None
    seconds: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        subs = ", ".join(f"{status} {n}" for status, n in sorted(self.subscriptions.items(), key=lambda kv: -kv[1]))
        pays = ", ".join(f"{method} {n}" for method, n in sorted(self.payments.items(), key=lambda kv: -kv[1]))
        timing = ", ".join(f"{step} {secs:.1f} s" for step, secs in self.seconds.items())
        return [
            f"Seeded a demo ISP: history {self.history_from} → {self.history_to}.",
            f"  catalog        {self.plans} plans, {self.addons} add-ons",
            f"  customers      {self.customers} ({self.businesses} businesses)",
            f"  subscriptions  {sum(self.subscriptions.values())} ({subs})",
            f"  invoices       {self.invoices}, KES {self.invoiced:,.2f}",
            f"  credit notes   {self.credit_notes}, KES {self.credited:,.2f}",
            f"  payments       {sum(self.payments.values())} ({pays}), KES {self.received:,.2f}",
            f"                 {self.reversed} reversed (returned cheques), {self.refunds} refund(s), "
            f"{self.unmatched} left unmatched in suspense",
            f"  receivables    KES {self.receivable:,.2f} owed; KES {self.customer_credit:,.2f} customer credit",
            f"  ledger         {'balanced' if self.balanced else 'NOT BALANCED'}",
            f"  time           {timing}",
        ]


# --- helpers -------------------------------------------------------------------------------------


def _weighted(rng: random.Random, pairs):
    values = [v for v, _ in pairs]
    weights = [w for _, w in pairs]
    return rng.choices(values, weights=weights, k=1)[0]


def _ascii(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _round_to(amount: Decimal, step: int, rounding) -> Decimal:
    step_d = Decimal(step)
    return ((amount / step_d).to_integral_value(rounding=rounding) * step_d).quantize(Decimal("0.01"))


def database_is_empty() -> bool:
    return not (
        Customer.objects.exists() or Plan.objects.exists() or Invoice.objects.exists() or Payment.objects.exists()
    )


# --- the seeder ----------------------------------------------------------------------------------


class DemoSeeder:
    """Plans everything with one seeded random generator, then writes it (see the module docstring)."""

    def __init__(
        self,
        *,
        customers: int,
        seed: int,
        months: int,
        progress: Callable[[str], None] | None = None,
        postpaid_only: bool = False,
    ):
        if customers < 1:
            raise ValueError("customers must be at least 1")
        if months < 0:
            raise ValueError("months cannot be negative")
        self.n = customers
        self.seed = seed
        self.months = months
        self.postpaid_only = postpaid_only
        self.rng = random.Random(seed)
        self.progress = progress or (lambda message: None)
        # History ends at the start of today (local): everything up to last midnight has happened,
        # today's billing has not run yet. Runs on the same day therefore give identical data.
        self.today = clock.today()
        self.now = clock.start_of_day(self.today)
        self.history_start = clock.start_of_day(self.today - relativedelta(months=months))
        self.catalog_start = clock.start_of_day(self.today - relativedelta(years=3))
        self.customers: list[CustomerPlan] = []
        self.services: list[ServicePlan] = []
        self.events: list[tuple] = []  # (at, seq, kind, payload)
        self._seq = 0
        self._phones: set[str] = set()
        self._serial = Counter()  # payments planned, per method
        self._showcased = Counter()
        self._receipts = Counter()  # receipt references given out while replaying, per method
        self._next_ip = 10
        self.summary = Summary(history_from=self.history_start.date(), history_to=self.today)

    # -- entry point --

    def run(self) -> Summary:
        if not database_is_empty():
            raise DatabaseNotEmpty(
                "The database already has customers, plans, invoices or payments. seed-demo only fills an empty "
                "database (issued invoices and payments can never be deleted): use a fresh database, e.g. delete "
                "var/wavu.sqlite3 or point DATABASE_URL at a new PostgreSQL database, and run `wavu migrate` first."
            )
        started = time.monotonic()
        self.plan_customers()
        self.plan_services()
        self.plan_suspense_and_refunds()
        self.summary.seconds["planning"] = time.monotonic() - started
        # One transaction: a failure leaves the database empty, never half-seeded (issued records
        # could not be removed afterwards).
        with transaction.atomic(), audit.acting_as(ACTOR), simulated_clock() as sim:
            step = time.monotonic()
            sim.set(self.catalog_start)
            self.plans, self.addons = self.write_catalog()
            self.write_customers()
            self.write_services()
            self.summary.seconds["customers and services"] = time.monotonic() - step
            step = time.monotonic()
            self.replay_history(sim)
            self.summary.seconds["billing history"] = time.monotonic() - step
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # planner statistics for the tables just filled in bulk
        self.summarise()
        self.summary.seconds["total"] = time.monotonic() - started
        return self.summary

    # -- planning: customers --

    def _phone(self) -> str:
        while True:
            prefix = _weighted(self.rng, data.MOBILE_PREFIXES)
            if prefix == "10":
                number = f"010{self.rng.randrange(3)}{self.rng.randrange(10**6):06d}"
            elif prefix == "11":
                number = f"011{self.rng.randrange(6)}{self.rng.randrange(10**6):06d}"
            else:
                number = f"0{prefix}{self.rng.randrange(10**7):07d}"
            msisdn = "254" + number[1:]
            if msisdn not in self._phones:
                self._phones.add(msisdn)
                return number

    def _person(self, community_key: str) -> tuple[str, str, bool]:
        """(full name, first name, is female)."""
        rng = self.rng
        community = data.COMMUNITIES[community_key]
        female = rng.random() < 0.5
        given = rng.choice(community.female if female else community.male)
        surname = rng.choice(community.surnames)
        if surname == given:
            surname = rng.choice(community.surnames)
        if rng.random() < community.english_first:
            first = rng.choice(data.ENGLISH_FEMALE if female else data.ENGLISH_MALE)
            name = f"{first} {given} {surname}" if rng.random() < 0.55 else f"{first} {surname}"
        elif community_key == "somali" and rng.random() < 0.5:
            first = given
            name = f"{given} {rng.choice(community.male)} {surname}"
        else:
            first = given
            name = f"{given} {surname}"
        return name, first, female

    def _kra_pin(self, letter: str) -> str:
        return f"{letter}{self.rng.randrange(10**9):09d}{self.rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}"

    def _joined(self) -> dt.datetime:
        """When the customer signed up: 60 % before the history window (up to 3 years), 40 % inside it."""
        rng = self.rng
        window_days = (self.today - self.history_start.date()).days
        if window_days > 0 and rng.random() < 0.4:
            day = self.history_start.date() + dt.timedelta(days=rng.randrange(window_days))
        else:
            span = max((self.history_start.date() - self.catalog_start.date()).days - 1, 1)
            day = self.catalog_start.date() + dt.timedelta(days=1 + rng.randrange(span))
        return clock.start_of_day(day) + dt.timedelta(hours=8, minutes=rng.randrange(10 * 60))

    def plan_customers(self) -> None:
        rng = self.rng
        towns = data.TOWNS
        town_weights = [t.weight for t in towns]
        for _ in range(self.n):
            town = rng.choices(towns, weights=town_weights, k=1)[0]
            estate = rng.choice(town.estates)
            community = _weighted(rng, town.communities)
            name, first, _female = self._person(community)
            business = rng.random() < 0.05
            surname = name.split()[-1]
            lat = Decimal(estate.latitude) + Decimal(rng.randrange(-500, 501)) / Decimal(100_000)
            lon = Decimal(estate.longitude) + Decimal(rng.randrange(-500, 501)) / Decimal(100_000)
            house = rng.choice(("House", "Apt", "Plot", "Hse", "Block")) + f" {rng.randrange(1, 120)}"
            if rng.random() < 0.3:
                house += rng.choice("ABCDEFG")
            fields = {
                "kind": Customer.Kind.INDIVIDUAL,
                "name": name,
                "phone": self._phone(),
                "alt_phone": self._phone() if rng.random() < 0.15 else "",
                "email": "",
                "kra_pin": self._kra_pin("A") if rng.random() < 0.1 else "",
                "national_id": str(rng.randrange(10_000_000, 39_999_999)),
                "county": town.county,
                "town": town.name,
                "address": f"{estate.name}, {house}",
                "latitude": lat.quantize(Decimal("0.000001")),
                "longitude": lon.quantize(Decimal("0.000001")),
                "language": Customer.Language.KISWAHILI
                if rng.random() < data.COMMUNITIES[community].language_sw
                else Customer.Language.ENGLISH,
            }
            if rng.random() < 0.45:
                fields["email"] = (
                    f"{_ascii(first)}.{_ascii(surname)}{rng.randrange(1, 99)}@{rng.choice(data.EMAIL_DOMAINS)}"
                )
            if business:
                pattern = rng.choice(data.BUSINESS_PATTERNS)
                business_name = pattern.format(surname=surname, estate=estate.name)
                fields.update(
                    kind=Customer.Kind.BUSINESS,
                    name=business_name,
                    contact_person=name,
                    kra_pin=self._kra_pin("P"),
                    national_id="",
                    email=f"info@{_ascii(business_name)[:20]}.co.ke",
                    language=Customer.Language.ENGLISH,
                )
            self.customers.append(CustomerPlan(fields, self._joined(), community, first, town, estate))
        # Older customers get lower account numbers, as they would have.
        self.customers.sort(key=lambda c: c.joined)

    # -- planning: services and their history --

    def _password(self) -> str:
        return "".join(self.rng.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))

    def _event(self, at: dt.datetime, kind: str, payload: tuple) -> None:
        self._seq += 1
        self.events.append((at, self._seq, kind, payload))

    def _static_ip(self) -> str:
        address = str(STATIC_IP_POOL.network_address + self._next_ip)
        self._next_ip += 1 if self._next_ip % 256 != 254 else 12  # hosts .10–.254 of each /24
        return address

    def plan_services(self) -> None:
        rng = self.rng
        for index, customer in enumerate(self.customers):
            business = customer.fields["kind"] == Customer.Kind.BUSINESS
            fibre = customer.town.fibre
            roll = rng.random()
            if self.postpaid_only:  # benchmarks: every service is a monthly postpaid one
                code = _weighted(rng, (("home-fibre-10", 50), ("home-fibre-20", 35), ("home-fibre-40", 15)))
            elif business:
                code = rng.choice(("home-fibre-20", "home-fibre-40", "home-fibre-40")) if fibre else "wireless-10"
            elif fibre and roll < 0.62:
                code = _weighted(rng, (("home-fibre-10", 50), ("home-fibre-20", 35), ("home-fibre-40", 15)))
            elif roll < (0.80 if fibre else 0.70):
                code = _weighted(rng, (("wireless-5", 60), ("wireless-10", 40)))
            else:
                code = _weighted(
                    rng, (("hotspot-1h", 25), ("hotspot-24h", 35), ("hotspot-7d", 25), ("hotspot-30d-10gb", 15))
                )
            spec = PLAN_BY_CODE[code]
            if spec.kind == Plan.Kind.HOTSPOT:
                self._plan_hotspot(index, customer, spec)
            else:
                self._plan_recurring(index, customer, spec, business)

    def _plan_recurring(self, index: int, customer: CustomerPlan, spec: PlanSpec, business: bool) -> None:
        rng = self.rng
        postpaid = spec.kind == Plan.Kind.POSTPAID
        status = _weighted(rng, POSTPAID_STATUS if postpaid else PREPAID_STATUS)
        # The oldest services take each status once, so that even a small demo shows them all.
        showcase = SHOWCASE_POSTPAID if postpaid else SHOWCASE_PREPAID
        seen = self._showcased[spec.kind]
        if seen < len(showcase):
            status = showcase[seen]
            self._showcased[spec.kind] += 1
        created = customer.joined + dt.timedelta(minutes=rng.randrange(5, 90))
        if created >= self.now - dt.timedelta(days=10) and rng.random() < 0.6:
            status = Status.PENDING  # signed up in the last days, waiting for installation
        in_window = created >= self.history_start
        addons = []
        if (business and postpaid and rng.random() < 0.7) or (not business and rng.random() < 0.03):
            addons.append("static-ip")
        if rng.random() < (0.35 if postpaid else 0.5):
            addons.append("router-rental")
        if in_window or status == Status.PENDING:
            addons.append("installation")
        service = ServicePlan(
            customer=index,
            plan=spec,
            status=status,
            created=min(created, self.now - dt.timedelta(minutes=30)),
            activated=None,
            addons=addons,
            password=self._password(),
            static_ip=self._static_ip() if "static-ip" in addons else None,
        )
        self.services.append(service)
        number = len(self.services) - 1
        service.events.append((service.created, "created", "", Status.PENDING, "", addons))
        if status == Status.PENDING:
            return  # nothing billed before installation
        activated = service.created + dt.timedelta(days=rng.randrange(1, 5), hours=rng.randrange(0, 6))
        if activated >= self.now:
            activated = service.created + dt.timedelta(minutes=20)
        service.activated = activated
        if postpaid:
            service.anchor_day = clock.local(activated).day
        service.events.append((activated, "activated", Status.PENDING, Status.ACTIVE, "installed and tested", None))
        payer = _weighted(rng, PAYERS)
        method = self._payment_method(business)
        periods = []
        start = activated
        stub = self._plan_stub(spec)
        jump = self.history_start - dt.timedelta(days=100)
        if activated < jump:
            # Long-standing service: its periods before the history window are never looked at, so
            # start counting shortly before it (a postpaid period starts on the billing day; a prepaid
            # one at the customer's usual time of day).
            if postpaid:
                start = next_billing_date(jump, service.anchor_day)
            else:
                local = clock.local(activated)
                start = clock.start_of_day(clock.local(jump).date()) + dt.timedelta(
                    hours=local.hour, minutes=local.minute
                )
        while start < self.now:
            start, end = period_for(stub, start, service.anchor_day)
            periods.append((start, end))
            start = end
        stopped = status != Status.ACTIVE
        if stopped and len(periods) < 2:
            status = service.status = Status.ACTIVE  # too new to have stopped
            stopped = False
        billed = periods[: rng.randrange(max(len(periods) - 3, 1), len(periods))] if stopped else periods
        service.current_start, service.current_end = billed[-1]
        for period_number, (p_start, p_end) in enumerate(billed):
            if p_start < self.history_start:
                continue  # before the history window
            last = period_number == len(billed) - 1
            if postpaid:
                self._plan_postpaid_period(index, number, period_number, p_start, p_end, payer, method, last=last)
            else:
                self._plan_prepaid_period(index, number, period_number, p_start, p_end, method)
        if stopped:
            self._plan_stop(service, status, billed[-1])

    @staticmethod
    def _plan_stub(spec: PlanSpec) -> Plan:
        return Plan(kind=spec.kind, validity_unit=spec.unit, validity_count=spec.count)

    def _payment_method(self, business: bool) -> str:
        # Manual channels only for now. When the M-Pesa channel exists, most individuals and every hotspot
        # purchase should pay through it (paybill with the account number), as they do in Kenya.
        if business:
            return _weighted(self.rng, ((Method.BANK_TRANSFER, 55), (Method.CHEQUE, 40), (Method.CASH, 5)))
        return _weighted(self.rng, ((Method.BANK_TRANSFER, 40), (Method.CASH, 52), (Method.CHEQUE, 8)))

    def _expected_total(self, service: ServicePlan, first: bool) -> Decimal:
        total = service.plan.price
        for code in service.addons:
            if code != "installation" or first:
                total += ADDON_PRICE[code]
        return total

    def _plan_prepaid_period(self, index, number, period_number, p_start, p_end, method) -> None:
        """Prepaid: the customer pays first; the renewal is invoiced and paid from that credit."""
        rng = self.rng
        service = self.services[number]
        expected = self._expected_total(service, period_number == 0)
        pay_at = p_start - dt.timedelta(hours=rng.randrange(1, 30))
        issue_at = p_start + dt.timedelta(minutes=rng.randrange(1, 30))
        if pay_at < max(self.history_start, service.created):
            pay_at, issue_at = p_start + dt.timedelta(minutes=5), p_start + dt.timedelta(minutes=15)
        if issue_at >= self.now:
            return
        amount = expected if rng.random() < 0.85 else _round_to(expected, 500, ROUND_CEILING) + 500
        self._plan_payment(index, method, ("fixed", amount), pay_at)
        self._event(issue_at, "invoice", (number, p_start, p_end, ("inv", number, period_number)))

    def _plan_postpaid_period(self, index, number, period_number, p_start, p_end, payer, method, *, last) -> None:
        """Postpaid: invoiced at the start of the period (billing run in the morning), paid as the customer pays."""
        rng = self.rng
        service = self.services[number]
        key = ("inv", number, period_number)
        issue_at = p_start + dt.timedelta(hours=6, minutes=rng.randrange(0, 50), seconds=rng.randrange(60))
        if issue_at >= self.now:
            return
        self._event(issue_at, "invoice", (number, p_start, p_end, key))
        if service.status == Status.SUSPENDED and last:
            return  # the unpaid invoice that got the service suspended
        if payer == "advance":
            if period_number % 3 == 0:
                pay_at = issue_at + dt.timedelta(days=rng.randrange(0, 4), hours=rng.randrange(1, 9))
                self._plan_payment(index, method, ("invoice", key, 3), pay_at)
            return
        low, high = {"prompt": (0, 6), "late": (8, 26), "partial": (2, 15), "roundup": (0, 8)}[payer]
        pay_at = issue_at + dt.timedelta(days=rng.randrange(low, high), hours=rng.randrange(1, 9))
        if payer == "partial":
            spec = ("invoice", key, Decimal(rng.randrange(55, 125)) / 100)
        elif payer == "roundup":
            spec = ("roundup", key, 1000)
        else:
            spec = ("invoice", key, 1)
        self._plan_payment(index, method, spec, pay_at)
        if rng.random() < 0.025:
            self._plan_credit(key, issue_at)

    def _payment_notes(self, method: str, rng: random.Random) -> tuple[str, tuple]:
        """(notes, key) of a payment being planned; its reference is given when it is recorded."""
        self._serial[method] += 1
        if method == Method.BANK_TRANSFER:
            notes = f"{rng.choice(BANKS)} transfer"
        elif method == Method.CHEQUE:
            notes = f"{rng.choice(BANKS)} cheque"
        else:
            notes = "Cash at the " + rng.choice(("Nairobi office", "branch office", "agent shop"))
        return notes, ("pay", method, self._serial[method])

    def _receipt_reference(self, method: str) -> str:
        """The next receipt reference of a method, in the order money arrives (receipt books, bank
        statement lines and cheque registers run in time order)."""
        self._receipts[method] += 1
        serial = self._receipts[method]
        local = clock.local(clock.now())
        if method == Method.BANK_TRANSFER:
            return f"FT{local:%y}{local.timetuple().tm_yday:03d}{serial:06d}"
        if method == Method.CHEQUE:
            return f"CHQ{serial:06d}"
        return f"RCT-{serial:06d}"

    def _plan_payment(self, index: int, method: str, amount_spec: tuple, at: dt.datetime) -> None:
        if at >= self.now:
            return
        rng = self.rng
        notes, pay_key = self._payment_notes(method, rng)
        self._event(at, "payment", (index, method, amount_spec, notes, pay_key))
        if method == Method.CHEQUE and rng.random() < 0.06:
            bounce_at = at + dt.timedelta(days=rng.randrange(3, 8))
            if bounce_at < self.now:
                self._event(bounce_at, "reverse", (pay_key, "Cheque returned unpaid: insufficient funds"))

    def _plan_credit(self, key: tuple, issue_at: dt.datetime) -> None:
        rng = self.rng
        template, mode = rng.choice(CREDIT_REASONS)
        days = rng.randrange(2, 6)
        service = self.services[key[1]]
        estate = self.customers[service.customer].estate.name
        at = issue_at + dt.timedelta(days=rng.randrange(3, 20), hours=rng.randrange(1, 6))
        if at < self.now:
            self._event(at, "credit", (key, mode, days, template.format(estate=estate, days=days)))

    def _plan_stop(self, service: ServicePlan, status: str, last_period: tuple) -> None:
        rng = self.rng
        p_start, p_end = last_period
        latest = self.now - dt.timedelta(hours=1)
        prepaid = service.plan.kind != Plan.Kind.POSTPAID
        if status == Status.SUSPENDED:
            if prepaid:
                at = min(p_start + dt.timedelta(days=rng.randrange(3, 20)), latest)
                reason = "suspected account sharing: under review"
            else:
                due = clock.local(p_start).date() + dt.timedelta(days=7)
                at = min(clock.start_of_day(due + dt.timedelta(days=3)) + dt.timedelta(hours=9), latest)
                reason = "invoice overdue"
            change = ("suspended", Status.SUSPENDED, reason)
        elif status == Status.PAUSED:
            reason = rng.choice(("customer travelling", "relocating, will resume", "house renovation"))
            at = min(p_end if not prepaid else p_start + dt.timedelta(days=rng.randrange(2, 20)), latest)
            change = ("paused", Status.PAUSED, reason)
        elif status == Status.CANCELLED:
            reason = rng.choice(
                ("moved out of coverage", "switched provider", "closed the business", "no longer needed")
            )
            at = min(p_end, latest)
            change = ("cancelled", Status.CANCELLED, reason)
        else:
            at = min(p_end, latest)
            change = ("expired", Status.EXPIRED, "period ended without renewal")
        at = max(at, service.activated + dt.timedelta(minutes=1))
        service.events.append((at, change[0], Status.ACTIVE, change[1], change[2], None))
        service.ended_at = at
        refund_at = at + dt.timedelta(days=3, hours=2)
        if status == Status.CANCELLED and not prepaid and rng.random() < 0.5 and refund_at < self.now:
            self._event(refund_at, "refund", (service.customer,))

    def _plan_hotspot(self, index: int, customer: CustomerPlan, spec: PlanSpec) -> None:
        """A hotspot user: buys the same package again and again (cash at the shop until M-Pesa arrives)."""
        rng = self.rng
        created = min(
            max(customer.joined, self.history_start - dt.timedelta(days=rng.randrange(0, 60))),
            self.now - dt.timedelta(hours=2),
        )
        service = ServicePlan(
            customer=index,
            plan=spec,
            status=Status.ACTIVE,
            created=created,
            activated=created + dt.timedelta(minutes=2),
            addons=[],
            password=self._password(),
            mac=":".join(f"{rng.randrange(256):02X}" for _ in range(6)),
        )
        self.services.append(service)
        number = len(self.services) - 1
        service.events.append((created, "created", "", Status.PENDING, "bought on the captive portal", []))
        service.events.append((service.activated, "activated", Status.PENDING, Status.ACTIVE, "first package", None))
        stub = self._plan_stub(spec)
        service.current_start = service.activated
        service.current_end = plan_validity_end(stub, service.activated)
        low, high = {"hotspot-1h": (5, 15), "hotspot-24h": (4, 12), "hotspot-7d": (2, 10), "hotspot-30d-10gb": (0, 5)}[
            spec.code
        ]
        start = max(service.activated, self.history_start + dt.timedelta(hours=rng.randrange(8, 200)))
        purchase = 0
        while self.months and start < self.now and purchase < 4 * self.months:
            end = plan_validity_end(stub, start)
            self._plan_payment(
                index, Method.CASH, ("fixed", spec.price), start - dt.timedelta(minutes=rng.randrange(2, 15))
            )
            self._event(start, "invoice", (number, start, end, ("inv", number, purchase)))
            service.current_start, service.current_end = start, end
            purchase += 1
            start = end + dt.timedelta(
                days=rng.randrange(low, high), hours=rng.randrange(0, 12), minutes=rng.randrange(60)
            )
        if service.current_end <= self.now:
            service.status = Status.EXPIRED
            service.ended_at = service.current_end
            service.events.append(
                (service.current_end, "expired", Status.ACTIVE, Status.EXPIRED, "package used up", None)
            )

    def plan_suspense_and_refunds(self) -> None:
        """A few bank transfers nobody could match, most of them matched by staff days later. Drawn from a
        second generator so that they do not shift the main sequence; deterministic for the seed all the same."""
        if self.months == 0:
            return
        rng = random.Random(self.seed * 7919 + 17)
        window = max(int((self.now - self.history_start).total_seconds()) - 3600, 3600)
        for _ in range(max(1, self.n // 60)):
            at = self.history_start + dt.timedelta(seconds=rng.randrange(window))
            index = rng.randrange(len(self.customers))
            customer = self.customers[index]
            notes, pay_key = self._payment_notes(Method.BANK_TRANSFER, rng)
            typed = rng.choice(
                (
                    "SCHOOL FEES",
                    "0" + customer.fields["phone"][-9:],
                    customer.first_name.upper(),
                    "INTERNET",
                    customer.account_number[:-1],
                )
            )
            amount = Decimal(rng.choice((1000, 2500, 3500, 5000)))
            self._event(at, "suspense", (index, amount, typed, notes + ", account reference not recognised", pay_key))
            match_at = at + dt.timedelta(days=rng.randrange(1, 10), hours=rng.randrange(1, 8))
            if match_at < self.now and rng.random() < 0.7:
                self._event(match_at, "match", (pay_key, index, "customer called with the bank slip"))

    # -- writing: catalog, customers, services --

    def write_catalog(self) -> tuple[dict[str, Plan], dict[str, AddOn]]:
        plans = {}
        for spec in PLANS:
            fields = {
                "code": spec.code,
                "name": spec.name,
                "kind": spec.kind,
                "technology": spec.technology,
                "validity_unit": spec.unit,
                "validity_count": spec.count,
                "download_kbps": spec.down,
                "upload_kbps": spec.up,
                "tax_class": TaxClass.INTERNET,
                **spec.extra,
            }
            plans[spec.code] = catalog.create_plan(price=spec.price, price_valid_from=self.catalog_start, **fields)
        addons = {}
        for code, name, category, billing_kind, price in ADDONS:
            addons[code] = catalog.create_addon(
                code=code,
                name=name,
                category=category,
                billing=billing_kind,
                tax_class=TaxClass.STANDARD,
                price=price,
                price_valid_from=self.catalog_start,
            )
        self.summary.plans, self.summary.addons = len(plans), len(addons)
        return plans, addons

    def write_customers(self) -> None:
        self.progress(f"writing {len(self.customers)} customers…")
        live = set()
        for service in self.services:
            if service.status != Status.CANCELLED:
                live.add(service.customer)
        numbers = next_values(ACCOUNT_SEQUENCE, len(self.customers), start=ACCOUNT_SEQUENCE_START)
        rows = []
        for index, (customer, value) in enumerate(zip(self.customers, numbers, strict=True)):
            cleaned = clean_customer_data(customer.fields)  # the customers service's own validation
            customer.account_number = make_account_number(value)
            rows.append(
                Customer(
                    account_number=customer.account_number,
                    created_at=customer.joined,
                    updated_at=customer.joined,
                    status=Customer.Status.ACTIVE if index in live else Customer.Status.INACTIVE,
                    **cleaned,
                )
            )
        Customer.objects.bulk_create(rows, batch_size=BULK_BATCH)
        if rows and rows[0].pk is None:  # a backend without RETURNING: read the ids back
            ids = dict(Customer.objects.values_list("account_number", "pk"))
            for row in rows:
                row.pk = ids[row.account_number]
        for customer, row in zip(self.customers, rows, strict=True):
            customer.pk = row.pk
        self._bulk_audit(rows, "create_customer", lambda row: row.created_at)
        self.summary.customers = len(rows)
        self.summary.businesses = sum(1 for r in rows if r.kind == Customer.Kind.BUSINESS)

    def write_services(self) -> None:
        self.progress(f"writing {len(self.services)} subscriptions…")
        rows = []
        for service in self.services:
            customer = self.customers[service.customer]
            active_since = service.activated
            rows.append(
                Subscription(
                    customer_id=customer.pk,
                    plan=self.plans[service.plan.code],
                    status=service.status,
                    username=customer.account_number,  # the services' convention for a first service
                    password=service.password,
                    static_ip=service.static_ip if service.status != Status.CANCELLED else None,
                    mac_address=service.mac,
                    billing_anchor_day=service.anchor_day,
                    scheduled_start=active_since or service.created + dt.timedelta(days=3),
                    activated_at=active_since,
                    current_period_start=service.current_start if active_since else None,
                    current_period_end=service.current_end if active_since else None,
                    # postpaid: the current period is invoiced; the billing run bills the next one
                    next_bill_at=service.current_end
                    if active_since and service.plan.kind == Plan.Kind.POSTPAID and service.status != Status.CANCELLED
                    else None,
                    paused_at=service.ended_at if service.status == Status.PAUSED else None,
                    cancelled_at=service.ended_at if service.status == Status.CANCELLED else None,
                    created_at=service.created,
                    updated_at=service.ended_at or active_since or service.created,
                )
            )
        Subscription.objects.bulk_create(rows, batch_size=BULK_BATCH)
        if rows and rows[0].pk is None:
            ids = dict(Subscription.objects.values_list("username", "pk"))
            for row in rows:
                row.pk = ids[row.username]
        addon_rows, events = [], []
        for service, row in zip(self.services, rows, strict=True):
            service.pk = row.pk
            for code in service.addons:
                ends = service.status == Status.CANCELLED and code != "installation"
                addon_rows.append(
                    SubscriptionAddOn(
                        subscription_id=row.pk,
                        addon=self.addons[code],
                        quantity=1,
                        started_at=service.activated or service.created,
                        ended_at=service.ended_at if ends else None,
                    )
                )
            for at, kind, from_status, to_status, reason, addon_codes in service.events:
                events.append(
                    LifecycleEvent(
                        subscription_id=row.pk,
                        at=at,
                        kind=kind,
                        from_status=from_status,
                        to_status=to_status,
                        reason=reason,
                        actor_label=ACTOR,
                        data={"plan": service.plan.code, "addons": addon_codes} if kind == "created" else {},
                    )
                )
        SubscriptionAddOn.objects.bulk_create(addon_rows, batch_size=BULK_BATCH)
        LifecycleEvent.objects.bulk_create(events, batch_size=BULK_BATCH)
        request_syncs(row.pk for row in rows)  # bulk_create sends no signals: RADIUS is asked here
        self._bulk_audit(rows, "create_subscription", lambda row: row.created_at)
        self.summary.subscriptions = Counter(row.status for row in rows)

    def _bulk_audit(self, rows, verb: str, at) -> None:
        """The audit rows the services write for a creation, in bulk."""
        AuditEvent.objects.bulk_create(
            [
                AuditEvent(
                    at=at(row),
                    actor_label=ACTOR,
                    action=AuditEvent.Action.CREATE,
                    verb=verb,
                    object_type=row._meta.label_lower,
                    object_id=str(row.pk),
                    object_repr=(row.username if isinstance(row, Subscription) else str(row))[:200],
                    after=audit.snapshot(row),
                    reason="demo data",
                )
                for row in rows
            ],
            batch_size=BULK_BATCH,
        )

    # -- writing: the billing history, through the services --

    def replay_history(self, sim) -> None:
        self.events.sort(key=lambda e: (e[0], e[1]))
        total = len(self.events)
        self.progress(f"replaying {total} billing events through the billing and payments services…")
        self.invoices: dict[tuple, tuple[int, Decimal]] = {}
        self.payment_ids: dict[tuple, int] = {}
        handlers = {
            "invoice": self._do_invoice,
            "payment": self._do_payment,
            "credit": self._do_credit,
            "reverse": self._do_reverse,
            "suspense": self._do_suspense,
            "match": self._do_match,
            "refund": self._do_refund,
        }
        report_every = max(total // 10, 1)
        started = time.monotonic()
        for done, (at, _seq, kind, payload) in enumerate(self.events, start=1):
            sim.set(at)
            handlers[kind](*payload)
            if done % report_every == 0 and done < total:
                self.progress(f"  {done}/{total} events ({time.monotonic() - started:.0f} s)")

    def _do_invoice(self, number: int, start, end, key) -> None:
        invoice = billing.invoice_subscription_period(Subscription(pk=self.services[number].pk), start, end)
        self.invoices[key] = (invoice.pk, invoice.total)

    def _amount(self, spec: tuple) -> Decimal | None:
        if spec[0] == "fixed":
            return spec[1]
        found = self.invoices.get(spec[1])
        if found is None:
            return None
        total = found[1]
        if spec[0] == "roundup":
            return _round_to(total, spec[2], ROUND_CEILING)
        return max(_round_to(total * spec[2], 50, ROUND_FLOOR), Decimal("50.00"))

    def _do_payment(self, index: int, method: str, amount_spec: tuple, notes: str, key) -> None:
        amount = self._amount(amount_spec)
        if amount is None:
            return
        customer = self.customers[index]
        payment, _created = payments.record_manual_payment(
            method=method,
            reference=self._receipt_reference(method),
            amount=amount,
            customer=Customer(pk=customer.pk),
            received_at=clock.now(),
            payer_name=customer.fields.get("contact_person") or customer.fields["name"],
            account_reference=customer.account_number,
            notes=notes,
        )
        self.payment_ids[key] = payment.pk

    def _do_suspense(self, index: int, amount: Decimal, typed: str, notes: str, key) -> None:
        payment, _created = payments.record_manual_payment(
            method=Method.BANK_TRANSFER,
            reference=self._receipt_reference(Method.BANK_TRANSFER),
            amount=amount,
            customer=None,
            received_at=clock.now(),
            payer_name=self.customers[index].fields["name"].upper(),
            account_reference=typed,
            notes=notes,
        )
        self.payment_ids[key] = payment.pk

    def _do_match(self, key, index: int, reason: str) -> None:
        payment = Payment.objects.get(pk=self.payment_ids[key])
        payments.match_payment(payment, Customer(pk=self.customers[index].pk), reason=reason)

    def _do_credit(self, key, mode: str, days: int, reason: str) -> None:
        found = self.invoices.get(key)
        if found is None:
            return
        invoice_id, total = found
        if mode == "full":
            amount = None
        elif mode == "half":
            amount = (total / 2).quantize(Decimal("0.01"))
        else:
            amount = (total * days / 30).quantize(Decimal("0.01"))
        billing.issue_credit_note(Invoice(pk=invoice_id), reason=reason, amount=amount)

    def _do_reverse(self, key, reason: str) -> None:
        payment_id = self.payment_ids.get(key)
        if payment_id is None:
            return
        payment = Payment.objects.get(pk=payment_id)
        if payment.status == Payment.Status.RECEIVED and payment.amount_refunded == 0:
            payments.reverse_payment(payment, reason=reason)

    def _do_refund(self, index: int) -> None:
        """A customer who cancelled gets unused credit back, if they have any."""
        for payment in payment_selectors.payments_with_credit(self.customers[index].pk):
            self._receipts["refund"] += 1
            payments.refund_payment(
                payment,
                amount=payment.unallocated,
                method=Method.BANK_TRANSFER,
                reference=f"RF{self._receipts['refund']:06d}",
                reason="Service cancelled: unused credit paid back",
            )

    # -- the summary --

    def summarise(self) -> None:
        s = self.summary
        issued = Invoice.objects.exclude(status=Invoice.Status.DRAFT)
        s.invoices = issued.count()
        s.invoiced = issued.aggregate(t=Sum("total"))["t"] or Decimal("0.00")
        s.credit_notes = CreditNote.objects.count()
        s.credited = CreditNote.objects.aggregate(t=Sum("total"))["t"] or Decimal("0.00")
        s.payments = Counter(dict(Payment.objects.values_list("method").annotate(n=Count("id"))))
        s.received = Payment.objects.exclude(status=Payment.Status.REVERSED).aggregate(t=Sum("amount"))["t"] or 0
        s.reversed = Payment.objects.filter(status=Payment.Status.REVERSED).count()
        s.unmatched = Payment.objects.filter(status=Payment.Status.UNMATCHED).count()
        s.refunds = Refund.objects.count()
        balances = dict(
            (code, amount) for code, amount in ((a.code, b) for a, b in ledger_selectors.account_balances())
        )
        s.receivable = balances.get("1100", Decimal("0.00"))
        s.customer_credit = -balances.get("2200", Decimal("0.00"))
        s.balanced = ledger_selectors.trial_balance()["balanced"]


def seed_demo(
    *,
    customers: int,
    seed: int = 2024,
    months: int = DEFAULT_MONTHS,
    progress: Callable[[str], None] | None = None,
    postpaid_only: bool = False,
) -> Summary:
    """Fill an EMPTY database with a demo ISP (see the module docstring). Raises `DatabaseNotEmpty`
    (writing nothing) when customers, plans, invoices or payments already exist. `postpaid_only`
    gives every customer a monthly postpaid service (the billing-run benchmark's population)."""
    return DemoSeeder(
        customers=customers, seed=seed, months=months, progress=progress, postpaid_only=postpaid_only
    ).run()


def demo_digest() -> str:
    """A fingerprint of the seeded business data (names, numbers, amounts, statuses; not row ids or
    timestamps), to check that a seed reproduces the same ISP."""
    h = hashlib.sha256()

    def feed(rows):
        for row in rows:
            h.update(repr(tuple(str(v) for v in row)).encode())

    feed(
        Customer.objects.order_by("account_number").values_list(
            "account_number", "kind", "name", "phone", "kra_pin", "town", "address", "status"
        )
    )
    feed(Subscription.objects.order_by("username").values_list("username", "plan__code", "status", "static_ip"))
    feed(
        Invoice.objects.order_by("number").values_list(
            "number",
            "buyer_account_number",
            "total",
            "vat_total",
            "excise_total",
            "amount_paid",
            "amount_credited",
            "status",
        )
    )
    feed(CreditNote.objects.order_by("number").values_list("number", "invoice__number", "total"))
    feed(
        Payment.objects.order_by("method", "reference").values_list(
            "method", "reference", "customer__account_number", "amount", "amount_allocated", "amount_refunded", "status"
        )
    )
    return h.hexdigest()


__all__ = [
    "DEFAULT_MONTHS",
    "DatabaseNotEmpty",
    "DemoSeeder",
    "Summary",
    "database_is_empty",
    "demo_digest",
    "seed_demo",
]

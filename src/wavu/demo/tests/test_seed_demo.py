"""The demo ISP: `wavu seed-demo` builds the same believable ISP for the same seed, through the real
billing and payments services (balanced books, gap-free numbers), and `wavu demo` prepares a login."""

import datetime as dt
import sys
from collections import defaultdict
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import Sum
from rest_framework.authtoken.models import Token

from wavu.billing.models import CreditNote, Invoice
from wavu.catalog.models import AddOn, Plan
from wavu.catalog.selectors import addon_price, plan_price
from wavu.core import clock
from wavu.core.models import AuditEvent
from wavu.customers.models import Customer
from wavu.demo.management.commands.demo import DEMO_PASSWORD, DEMO_USERNAME
from wavu.demo.management.commands.demo import Command as DemoCommand
from wavu.demo.processes import ChildProcess, Supervisor
from wavu.demo.seed import demo_digest, seed_demo
from wavu.ledger import selectors as ledger_selectors
from wavu.payments.models import Allocation, Payment, Refund
from wavu.subscriptions.models import Subscription
from wavu.testing.factories import CustomerFactory

pytestmark = pytest.mark.django_db

FROZEN = dt.datetime(2026, 11, 24, 10, 30, tzinfo=dt.UTC)


def _seed_and_fingerprint(seed: int, customers: int = 30, months: int = 2):
    """Seed inside a transaction that is rolled back afterwards, so every run starts from an empty database."""
    with transaction.atomic():
        summary = seed_demo(customers=customers, seed=seed, months=months)
        fingerprint = (
            demo_digest(),
            Customer.objects.count(),
            Invoice.objects.count(),
            Payment.objects.count(),
            CreditNote.objects.count(),
            list(Customer.objects.order_by("account_number").values_list("name", flat=True)[:10]),
            str(Invoice.objects.aggregate(t=Sum("total"))["t"]),
        )
        transaction.set_rollback(True)
    return summary, fingerprint


def test_the_same_seed_builds_the_same_isp_and_another_seed_a_different_one():
    with time_machine.travel(FROZEN, tick=False):
        _, first = _seed_and_fingerprint(seed=11)
        assert not Customer.objects.exists()  # rolled back: the next run starts empty
        _, second = _seed_and_fingerprint(seed=11)
        _, other = _seed_and_fingerprint(seed=12)
    assert first == second
    assert first[1] == 30 and first[2] > 0 and first[3] > 0
    assert other[0] != first[0]


def test_seeding_the_same_day_at_another_hour_gives_the_same_isp():
    with time_machine.travel(FROZEN, tick=False):
        _, morning = _seed_and_fingerprint(seed=5, customers=20)
    with time_machine.travel(FROZEN + dt.timedelta(hours=8), tick=False):
        _, evening = _seed_and_fingerprint(seed=5, customers=20)
    assert morning == evening


@pytest.fixture
def seeded():
    with time_machine.travel(FROZEN, tick=False):
        summary = seed_demo(customers=40, seed=3, months=3)
    return summary


def test_after_seeding_the_ledger_balances_and_numbers_have_no_gaps(seeded):
    assert seeded.balanced
    assert ledger_selectors.trial_balance()["balanced"]
    numbers = sorted(int(n.split("-")[1]) for n in Invoice.objects.values_list("number", flat=True))
    assert numbers == list(range(1, len(numbers) + 1))
    notes = sorted(int(n.split("-")[1]) for n in CreditNote.objects.values_list("number", flat=True))
    assert notes == list(range(1, len(notes) + 1))
    # Numbers were given in time order, as a real billing office would have.
    by_number = list(Invoice.objects.order_by("number").values_list("issued_at", flat=True))
    assert by_number == sorted(by_number)


def test_after_seeding_every_payment_and_invoice_agrees_with_its_allocations_and_the_books(seeded):
    allocated_to_invoice = defaultdict(Decimal)
    allocated_from_payment = defaultdict(Decimal)
    for payment_id, invoice_id, amount in Allocation.objects.values_list("payment_id", "invoice_id", "amount"):
        allocated_to_invoice[invoice_id] += amount
        allocated_from_payment[payment_id] += amount
    for invoice in Invoice.objects.all():
        assert invoice.amount_paid == allocated_to_invoice[invoice.pk]
    unapplied = defaultdict(Decimal)
    for payment in Payment.objects.all():
        assert payment.amount_allocated == allocated_from_payment[payment.pk]
        if payment.status == Payment.Status.RECEIVED:
            unapplied[payment.customer_id] += payment.amount - payment.amount_allocated - payment.amount_refunded
    for customer in Customer.objects.all():
        assert ledger_selectors.customer_credit(customer.pk) == unapplied[customer.pk]
        outstanding = sum((i.outstanding for i in Invoice.objects.filter(customer=customer)), Decimal(0))
        assert ledger_selectors.customer_balance(customer.pk) == outstanding - unapplied[customer.pk]


def test_the_demo_isp_sells_the_advertised_plans_at_their_prices(seeded):
    at = clock.start_of_day(FROZEN.date())
    prices = {plan.code: plan_price(plan, at).amount for plan in Plan.objects.all()}
    assert prices["home-fibre-10"] == Decimal("2500.00")
    assert prices["home-fibre-20"] == Decimal("3500.00")
    assert prices["home-fibre-40"] == Decimal("5000.00")
    assert {prices[c] for c in ("hotspot-1h", "hotspot-24h", "hotspot-7d", "hotspot-30d-10gb")} == {
        Decimal("10.00"),
        Decimal("50.00"),
        Decimal("300.00"),
        Decimal("1000.00"),
    }
    assert Plan.objects.filter(kind=Plan.Kind.PREPAID, technology=Plan.Technology.FIXED_WIRELESS).count() == 2
    big = Plan.objects.get(code="hotspot-30d-10gb")
    assert big.data_quota_mb == 10_240 and big.quota_action == Plan.QuotaAction.THROTTLE and big.sold_on_portal
    addons = {a.code: (a.billing, a.tax_class, addon_price(a, at).amount) for a in AddOn.objects.all()}
    assert addons == {
        "static-ip": ("recurring", "standard", Decimal("500.00")),
        "router-rental": ("recurring", "standard", Decimal("300.00")),
        "installation": ("one_off", "standard", Decimal("2500.00")),
    }


def test_the_demo_customers_look_kenyan_and_their_services_are_in_many_states(seeded):
    customers = list(Customer.objects.all())
    assert len(customers) == 40
    assert all(c.phone.startswith(("2547", "2541")) and len(c.phone) == 12 for c in customers)
    assert len({c.phone for c in customers}) == 40
    assert len({c.account_number for c in customers}) == 40
    for business in (c for c in customers if c.kind == Customer.Kind.BUSINESS):
        assert business.kra_pin.startswith("P")
    assert {"Nairobi"} <= {c.county for c in customers}
    statuses = set(Subscription.objects.values_list("status", flat=True))
    assert {"active", "expired"} <= statuses and len(statuses) >= 4
    assert Invoice.objects.filter(status=Invoice.Status.PAID).exists()
    assert Invoice.objects.filter(status__in=[Invoice.Status.ISSUED, Invoice.Status.PARTIALLY_PAID]).exists()
    # Every customer and service has its creation in the audit trail, attributed to the seed.
    assert AuditEvent.objects.filter(verb="create_customer", actor_label="job:seed-demo").count() == 40
    assert AuditEvent.objects.filter(verb="create_subscription").count() == Subscription.objects.count()


def test_seed_demo_refuses_a_database_that_already_has_customers_and_writes_nothing():
    CustomerFactory()
    with pytest.raises(CommandError, match="fresh database"):
        call_command("seed_demo", customers=5, months=1, verbosity=0)
    assert Customer.objects.count() == 1
    assert not Plan.objects.exists() and not Invoice.objects.exists() and not Payment.objects.exists()


def test_seed_demo_with_no_history_writes_customers_and_services_but_no_money():
    with time_machine.travel(FROZEN, tick=False):
        summary = seed_demo(customers=15, seed=1, months=0)
    assert Customer.objects.count() == 15 and Subscription.objects.count() == 15
    assert not Invoice.objects.exists() and not Payment.objects.exists() and not Refund.objects.exists()
    assert summary.balanced


def test_the_demo_command_creates_its_admin_and_token_once_and_seeds_only_an_empty_database(capsys):
    command = DemoCommand()
    token = command.ensure_demo_user()
    admin = get_user_model().objects.get(username=DEMO_USERNAME)
    assert admin.is_superuser and admin.is_staff and admin.check_password(DEMO_PASSWORD)
    assert Token.objects.get(user=admin).key == token
    admin.set_password("changed-by-the-operator")
    admin.save()
    assert command.ensure_demo_user() == token  # no second user, no new token, password kept
    assert get_user_model().objects.get(username=DEMO_USERNAME).check_password("changed-by-the-operator")

    with time_machine.travel(FROZEN, tick=False):
        command.seed_if_empty(customers=10, seed=1, months=1)
        assert Customer.objects.count() == 10
        command.seed_if_empty(customers=10, seed=2, months=1)
    assert Customer.objects.count() == 10  # not seeded twice


def test_the_supervisor_stops_every_child_when_one_of_them_exits():
    quick = ChildProcess("quick", [sys.executable, "-c", "import sys; sys.exit(3)"])
    stubborn = ChildProcess(
        "stubborn",
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
    )
    code = Supervisor([stubborn, quick], grace_seconds=0.5, poll_seconds=0.05, log=lambda message: None).run()
    assert code == 3
    assert stubborn.returncode is not None  # terminated, or killed after the grace time

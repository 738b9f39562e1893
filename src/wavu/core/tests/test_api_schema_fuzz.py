"""Schemathesis over the whole OpenAPI schema: every operation, called in-process through the WSGI
application as a staff user with a token, answers without a server error, with a documented status
code and content type, and with a body that matches the schema (errors included: `core.schema`).

The schema is the one `/api/schema/` serves. Cases are generated from a fixed seed and derandomized, so
a run is deterministic: the coverage phase (boundary values, wrong types, missing and unexpected
fields, unsupported methods and content types) and a few fuzzed examples per operation. Checks that a
schema cannot satisfy for this API are off: `positive_data_acceptance` (the services refuse
schema-valid values for business reasons: unknown ids, phone formats, dates in the past…) and
`negative_data_rejection` (DRF and django-filter ignore unknown query parameters and fall back to the
default page size, on purpose).

Path ids resolve: every generated integer id is mapped onto a record of a small world built once for
the module (each operation then runs in its own savepoint, rolled back afterwards). The operations that
call Daraja (STK push, M-Pesa refunds, C2B URL registration) run against a Daraja that cannot be
reached, so they answer their documented 502/503 error (never anything else of the 5xx kind).
Set WAVU_FUZZ_LOG=/some/file to get one JSON line per case (operation, status, seconds).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from decimal import Decimal

import pytest
import schemathesis
import time_machine
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token

FROZEN = dt.datetime(2026, 3, 10, 7, 30, tzinfo=dt.UTC)
TOKEN = "9f1c" * 10
DARAJA_OPERATIONS = r"^/api/v1/(payment-requests/|refund-requests/|payment-channels/\{id\}/register-c2b-urls/)$"

CONFIG = schemathesis.Config.from_str(
    f"""
seed = 20260310

[generation]
max-examples = 10
deterministic = true
with-security-parameters = false

[checks]
positive_data_acceptance.enabled = false
negative_data_rejection.enabled = false

[phases.coverage]
enabled = true

[phases.stateful]
enabled = false

[[operations]]
include-path-regex = "/pdf/$"
phases.coverage.enabled = false
generation.max-examples = 3

[[operations]]
include-path-regex = '{DARAJA_OPERATIONS}'
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", 502, 503]
"""
)

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), config=CONFIG)


@contextlib.contextmanager
def _connections_kept_across_requests():
    """The WSGI handler closes connections that are not in autocommit mode when a request starts and
    ends, which inside a test's transaction is the test's data (Django's test client disconnects the
    same handler)."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """The records path ids resolve to, built once; rolled back when the module is done."""
    from wavu.mpesa import daraja

    class UnreachableDaraja(daraja.DarajaClient):
        def access_token(self):
            raise daraja.DarajaUnavailable("Cannot reach Daraja (test: nothing listens).")

    with (
        _connections_kept_across_requests(),
        pytest.MonkeyPatch.context() as patch,
        django_db_blocker.unblock(),
        time_machine.travel(FROZEN, tick=True),
        transaction.atomic(),
    ):
        patch.setattr(daraja, "DarajaClient", UnreachableDaraja)
        yield build_world()
        transaction.set_rollback(True)


def build_world() -> dict[str, list]:
    """A few of each kind of record the API names in its paths, in varied states; {path prefix: ids}."""
    from wavu.billing import services as billing
    from wavu.billing.models import BillingRun, DunningNotice, PaymentPromise
    from wavu.catalog import services as catalog
    from wavu.core import clock
    from wavu.core.reference_data import install_tax_rates
    from wavu.customers import services as customers
    from wavu.hotspot import services as hotspot
    from wavu.ledger.models import Account, JournalEntry
    from wavu.ledger.services import install_chart_of_accounts
    from wavu.mpesa import channels
    from wavu.mpesa.models import RefundRequest, StkRequest
    from wavu.network import services as network
    from wavu.payments import services as payments
    from wavu.subscriptions import services as subscriptions
    from wavu.subscriptions.models import LifecycleEvent

    install_tax_rates()
    install_chart_of_accounts()
    user = get_user_model().objects.create_user("fuzz", password="x", is_staff=True)
    Token.objects.create(key=TOKEN, user=user)
    now, today = clock.now(), clock.today()
    long_ago = now - dt.timedelta(days=400)

    wanjiku = customers.create_customer(name="Wanjiku Kamau", phone="0712345678", county="Nairobi")
    otieno = customers.create_customer(name="Otieno Ltd", phone="0722000111", kind="business", kra_pin="P051234567X")
    speeds = {"download_kbps": 10_000, "upload_kbps": 5_000, "validity_count": 1, "price_valid_from": long_ago}
    postpaid = catalog.create_plan(
        code="home-10",
        name="Home 10",
        kind="postpaid",
        validity_unit="month",
        technology="ftth",
        price="2500.00",
        **speeds,
    )
    prepaid = catalog.create_plan(
        code="pre-5",
        name="Prepaid 5",
        kind="prepaid",
        validity_unit="month",
        technology="fixed_wireless",
        price="1500.00",
        **speeds,
    )
    hotspot_plan = catalog.create_plan(
        code="hot-3h",
        name="3 Hours",
        kind="hotspot",
        validity_unit="hour",
        technology="hotspot",
        devices_allowed=1,
        hotspot_starts="first_login",
        price="50.00",
        **{**speeds, "validity_count": 3},
    )
    static_ip = catalog.create_addon(
        code="static-ip", name="Static IP", category="static_ip", billing="recurring", price="500.00"
    )

    active = subscriptions.create_subscription(wanjiku, postpaid, addons=[(static_ip, 1)])
    subscriptions.activate(active, at=now - dt.timedelta(days=40))
    pending_prepaid = subscriptions.create_subscription(otieno, prepaid)
    pending_postpaid = subscriptions.create_subscription(otieno, postpaid)

    draft = billing.create_draft_invoice(wanjiku, notes="draft")
    billing.add_one_off_line(draft, description="Router", unit_price="3000.00", tax_class="standard")
    issued = billing.create_draft_invoice(otieno)
    billing.add_one_off_line(issued, description="Installation", unit_price="5000.00", tax_class="standard")
    billing.issue_invoice(issued, issue_date=today - dt.timedelta(days=30))
    issued_today = billing.create_draft_invoice(wanjiku)
    billing.add_one_off_line(issued_today, description="Cable", unit_price="1000.00", tax_class="standard")
    billing.issue_invoice(issued_today)
    note = billing.issue_credit_note(issued, reason="goodwill", amount="100.00")

    cash, _ = payments.record_manual_payment(method="cash", reference="RCPT-1", amount="800.00", customer=wanjiku)
    suspense, _ = payments.record_manual_payment(method="bank_transfer", reference="BT-9", amount="300.00")

    paybill = channels.create_channel(name="Main paybill", kind="paybill", shortcode="600638")
    push = StkRequest.objects.create(
        channel=paybill,
        purpose="invoice",
        customer=otieno,
        invoice=issued,
        phone="254722000111",
        amount=Decimal("100"),
        account_reference=otieno.account_number,
        description="Invoice",
        created_at=now,
    )
    refund = RefundRequest.objects.create(
        channel=paybill,
        kind="b2c",
        customer=wanjiku,
        amount=Decimal("100"),
        phone="254712345678",
        reason="overpaid",
        status="timed_out",
        requested_by="fuzz",
        created_at=now,
    )
    nas = network.create_nas(address="10.20.0.1", shortname="core-1", secret="s" * 20, type="mikrotik")
    batch = hotspot.issue_batch(plan=hotspot_plan, quantity=3)
    run = BillingRun.objects.create(run_date=today - dt.timedelta(days=1), started_at=now, started_by="fuzz")
    notice = DunningNotice.objects.create(invoice=issued, stage="reminder", offset_days=3, created_at=now)
    promise = PaymentPromise.objects.create(
        subscription=active,
        period_start=now - dt.timedelta(days=10),
        until=today + dt.timedelta(days=3),
        reason="salary",
        granted_by="fuzz",
        created_at=now,
    )

    def ids(*records):
        return [record.pk for record in records]

    return {
        "customers": ids(wanjiku, otieno),
        "plans": ids(postpaid, prepaid, hotspot_plan),
        "addons": ids(static_ip),
        "subscriptions": ids(active, pending_prepaid, pending_postpaid),
        "lifecycle-events": list(LifecycleEvent.objects.values_list("pk", flat=True)),
        "invoices": ids(draft, issued, issued_today),
        "credit-notes": ids(note),
        "payments": ids(cash, suspense),
        "payment-channels": ids(paybill),
        "payment-requests": ids(push),
        "refund-requests": ids(refund),
        "nas": ids(nas),
        "voucher-batches": ids(batch),
        "vouchers": list(batch.vouchers.values_list("pk", flat=True)),
        "billing-runs": ids(run),
        "dunning-notices": ids(notice),
        "payment-promises": ids(promise),
        "ledger/entries": list(JournalEntry.objects.values_list("pk", flat=True)),
        "ledger/accounts": list(Account.objects.values_list("code", flat=True)),
    }


def resolve_path_ids(case, world: dict[str, list]) -> None:
    """Point a generated id (any integer, also as a string of digits as the coverage phase sends it; a
    code: any string) at one of the world's records."""
    if not case.path_parameters:
        return
    records = world.get(case.path.removeprefix("/api/v1/").split("/{")[0])
    if not records:
        return
    params = dict(case.path_parameters)
    for name, value in params.items():
        if isinstance(value, str) and value.isdigit() and name != "code":
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            params[name] = records[abs(value) % len(records)]
        elif name == "code" and isinstance(value, str):
            params[name] = records[len(value) % len(records)]
    case.path_parameters = params


def _log(case, status: int | None, seconds: float) -> None:
    path = os.environ.get("WAVU_FUZZ_LOG")
    if path:
        phase = case.meta.phase.name.value if case.meta else None
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"operation": case.operation.label, "phase": phase, "status": status, "s": seconds}))
            log.write("\n")


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_every_operation_answers_as_documented_and_never_with_a_server_error(case, world, db):
    resolve_path_ids(case, world)
    started, status = time.perf_counter(), None
    try:
        status = case.call_and_validate(headers={"Authorization": f"Token {TOKEN}"}).status_code
    finally:
        _log(case, status, time.perf_counter() - started)

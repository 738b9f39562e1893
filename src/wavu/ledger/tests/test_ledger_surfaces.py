"""Reading the books: the ledger API, the `wavu trial-balance` command and the read-only admin."""

import io
import json
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from wavu.cli import normalize_command_name
from wavu.ledger import accounts
from wavu.ledger import services as ledger
from wavu.ledger.models import JournalEntry, Posting
from wavu.payments import services as payments
from wavu.payments.tests.factories import issued_invoice
from wavu.testing.api import staff_client
from wavu.testing.factories import CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return staff_client("finance")


@pytest.fixture
def books():
    """One customer invoiced 2,500 who paid 3,000 cash; one unmatched M-Pesa payment of 100."""
    customer = CustomerFactory()
    issued_invoice(customer, "2500")
    payments.record_manual_payment(method="cash", reference="R-1", amount="3000", customer=customer)
    payments.record_payment(method="mpesa", source="paybill:1", reference="SGH1", amount="100")
    return customer


def test_accounts_show_their_balances(api, books):
    response = api.get("/api/v1/ledger/accounts/")

    assert response.status_code == 200
    balances = {row["code"]: Decimal(row["balance"]) for row in response.json()["results"]}
    assert balances[accounts.CASH] == Decimal("3000.00")
    assert balances[accounts.MPESA_CLEARING] == Decimal("100.00")
    assert balances[accounts.ACCOUNTS_RECEIVABLE] == Decimal("0.00")
    assert balances[accounts.CUSTOMER_CREDIT] == Decimal("-500.00")
    assert balances[accounts.SUSPENSE] == Decimal("-100.00")
    assert sum(balances.values()) == 0
    one = api.get(f"/api/v1/ledger/accounts/{accounts.CASH}/")
    assert one.status_code == 200 and one.json()["name"] == "Cash on hand"


def test_entries_come_with_their_postings_and_filter_by_kind_and_customer(api, books):
    response = api.get("/api/v1/ledger/entries/?kind=payment")
    entries = response.json()["results"]
    assert response.status_code == 200 and len(entries) == 2
    for entry in entries:
        assert sum(Decimal(p["amount"]) for p in entry["postings"]) == 0

    mine = api.get(f"/api/v1/ledger/entries/?customer={books.pk}").json()["results"]
    assert sorted(e["kind"] for e in mine) == ["allocation", "invoice", "payment"]
    by_account = api.get(f"/api/v1/ledger/entries/?account={accounts.SUSPENSE}").json()["results"]
    assert [e["kind"] for e in by_account] == ["payment"]
    assert api.get("/api/v1/ledger/entries/?posted_before=2000-01-01T00:00:00Z").json()["count"] == 0


def test_the_trial_balance_endpoint_balances(api, books):
    body = api.get("/api/v1/ledger/trial-balance/").json()

    assert body["balanced"] is True
    assert Decimal(body["debit"]) == Decimal(body["credit"]) == Decimal("3100.00")
    assert {r["code"] for r in body["rows"]} >= {accounts.CASH, accounts.SUSPENSE}


def test_the_ledger_cannot_be_written_through_the_api(api, books):
    assert api.post("/api/v1/ledger/entries/", {"kind": "adjustment"}, format="json").status_code == 405
    entry = JournalEntry.objects.first()
    assert api.delete(f"/api/v1/ledger/entries/{entry.pk}/").status_code == 405
    assert api.post("/api/v1/ledger/trial-balance/", {}).status_code == 405


def test_wavu_trial_balance_prints_the_totals(books):
    out = io.StringIO()
    call_command("trial_balance", stdout=out)
    text = out.getvalue()
    assert "Cash on hand" in text and "3,000.00" in text and "is balanced" in text
    assert "Card clearing" not in text  # zero balances are left out unless --all

    out = io.StringIO()
    call_command("trial_balance", "--json", stdout=out)
    payload = json.loads(out.getvalue())
    assert payload["balanced"] is True and payload["debit"] == "3100.00"


def test_wavu_trial_balance_fails_loudly_when_the_books_do_not_balance(books, monkeypatch):
    from wavu.ledger.management.commands import trial_balance

    monkeypatch.setattr(
        trial_balance,
        "trial_balance",
        lambda: {"rows": [], "debit": Decimal("1.00"), "credit": Decimal("0.00"), "balanced": False},
    )
    with pytest.raises(CommandError):
        call_command("trial_balance", stdout=io.StringIO())


def test_hyphenated_command_names_map_to_django_commands():
    assert normalize_command_name(["wavu", "trial-balance", "--json"]) == ["wavu", "trial_balance", "--json"]
    assert normalize_command_name(["wavu", "help", "billing-run"]) == ["wavu", "help", "billing_run"]
    assert normalize_command_name(["wavu", "drf_create_token", "a-b"]) == ["wavu", "drf_create_token", "a-b"]
    assert normalize_command_name(["wavu", "--version"]) == ["wavu", "--version"]
    assert normalize_command_name(["wavu"]) == ["wavu"]


def test_an_unbalanced_entry_is_refused_and_nothing_is_written(books):
    customer = books
    before = JournalEntry.objects.count()
    with pytest.raises(ledger.UnbalancedEntry):
        ledger.post_entry(
            kind="adjustment",
            source=customer,
            lines=[ledger.debit(accounts.CASH, Decimal("1")), ledger.credit(accounts.BANK, Decimal("0.99"))],
            memo="typo",
        )
    assert JournalEntry.objects.count() == before


def test_postings_cannot_be_edited(books):
    with pytest.raises(IntegrityError), transaction.atomic():
        Posting.objects.filter(account__code=accounts.CASH).update(amount=Decimal("1.00"))


def test_the_admin_shows_the_books_read_only(client, books):
    admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "x")
    client.force_login(admin_user)
    entry = JournalEntry.objects.filter(kind="payment").first()

    assert client.get("/admin/ledger/journalentry/").status_code == 200
    page = client.get(f"/admin/ledger/journalentry/{entry.pk}/change/")
    assert page.status_code == 200
    assert b"1010 Cash on hand" in page.content and b"3000.00" in page.content
    assert client.get("/admin/ledger/account/").status_code == 200
    assert client.get("/admin/ledger/journalentry/add/").status_code == 403
    assert client.post(f"/admin/ledger/journalentry/{entry.pk}/delete/").status_code == 403

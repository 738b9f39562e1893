"""Whose money is it? A paybill payment is matched by what the payer typed as the account: the
account number (forgiving how people type it, strict on the check digit), an invoice number, the
customer's registered phone, or a service username. The payer's MSISDN never decides: Safaricom
sends it masked or hashed."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

import pytest
from django.test import Client

from wavu.billing.models import Invoice
from wavu.core import clock
from wavu.ledger import accounts
from wavu.ledger import services as ledger
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import trial_balance
from wavu.mpesa import selectors
from wavu.mpesa.models import InboundCallback
from wavu.payments.models import Payment
from wavu.testing.factories import CustomerFactory, SubscriptionFactory

from .test_c2b_hooks import c2b_payload, make_channel, pay_by_paybill

pytestmark = pytest.mark.django_db


@pytest.fixture
def wanjiku():
    return CustomerFactory(name="Wanjiku Kamau", account_number="10008", phone="254712345678")


@pytest.fixture
def otieno():
    return CustomerFactory(name="Otieno Odhiambo", account_number="10019", phone="254733000111")


def issued_invoice(customer, number: str, total: str) -> Invoice:
    """An issued invoice numbered like billing numbers them (INV-000123), booked in the ledger."""
    today = clock.today()
    invoice = Invoice.objects.create(
        customer=customer,
        series="INV",
        number=number,
        status=Invoice.Status.ISSUED,
        issue_date=today,
        issued_at=clock.start_of_day(today),
        due_date=today + dt.timedelta(days=7),
        buyer_name=customer.name,
        buyer_account_number=customer.account_number,
        net_total=Decimal(total),
        total=Decimal(total),
        created_at=clock.now(),
    )
    ledger.post_entry(
        kind=JournalEntry.Kind.INVOICE,
        source=invoice,
        lines=[
            ledger.debit(accounts.ACCOUNTS_RECEIVABLE, Decimal(total), customer.pk),
            ledger.credit(accounts.REVENUE_INTERNET, Decimal(total)),
        ],
        memo=f"Invoice {number}",
    )
    return invoice


def paid_by_paybill(reference: str, capture, *, msisdn: str = "25470****149", trans_id: str = "RKTQDM7W6S") -> Payment:
    channel = make_channel()
    payload = c2b_payload(BillRefNumber=reference, MSISDN=msisdn, TransID=trans_id, TransAmount="1000.00")
    response = pay_by_paybill(Client(), channel, capture, payload)
    assert response.status_code == 200
    return Payment.objects.get(reference=trans_id)


# --- account numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["10008", "#10008", " 1000-8 ", "1 0 0 0 8", "# 10008"])
def test_an_account_number_typed_with_spaces_dashes_or_a_hash_is_matched(
    typed, wanjiku, otieno, django_capture_on_commit_callbacks
):
    payment = paid_by_paybill(typed, django_capture_on_commit_callbacks)

    assert payment.customer == wanjiku and payment.status == "received"
    assert payment.account_reference == typed.strip()
    assert "account number 10008" in InboundCallback.objects.get().outcome


@pytest.mark.parametrize("typed", ["10009", "10080", "01008", "1008", "100088"])
def test_a_one_digit_typo_or_a_swap_matches_nobody_and_waits_in_suspense(
    typed, wanjiku, otieno, django_capture_on_commit_callbacks
):
    payment = paid_by_paybill(typed, django_capture_on_commit_callbacks)
    assert payment.customer is None and payment.status == "unmatched"


# --- invoice numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["INV-000123", "inv-000123", "INV000123", "inv 123", "Inv-123", "#INV-0123"])
def test_an_invoice_number_in_any_case_with_or_without_dash_and_zeros_pays_its_customer(
    typed, wanjiku, otieno, django_capture_on_commit_callbacks
):
    invoice = issued_invoice(otieno, "INV-000123", "1000.00")

    payment = paid_by_paybill(typed, django_capture_on_commit_callbacks)

    assert payment.customer == otieno
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.amount_paid == Decimal("1000.00")
    assert "invoice INV-000123" in InboundCallback.objects.get().outcome
    assert trial_balance()["balanced"]


def test_an_invoice_number_that_does_not_exist_matches_nobody(wanjiku, django_capture_on_commit_callbacks):
    issued_invoice(wanjiku, "INV-000123", "1000.00")
    assert paid_by_paybill("INV-000124", django_capture_on_commit_callbacks).customer is None


# --- registered phone -----------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["0712345678", "0712 345 678", "0712-345-678", "254712345678", "+254712345678"])
def test_a_customers_registered_phone_typed_as_the_account_is_matched(
    typed, wanjiku, otieno, django_capture_on_commit_callbacks
):
    payment = paid_by_paybill(typed, django_capture_on_commit_callbacks)
    assert payment.customer == wanjiku
    assert "registered phone" in InboundCallback.objects.get().outcome


def test_the_alternative_phone_is_a_registered_phone_too(django_capture_on_commit_callbacks):
    customer = CustomerFactory(phone="254700000001", alt_phone="254711222333")
    assert paid_by_paybill("0711222333", django_capture_on_commit_callbacks).customer == customer


def test_a_phone_shared_by_two_customers_matches_neither(django_capture_on_commit_callbacks):
    CustomerFactory(phone="254722000222")
    CustomerFactory(phone="254722000222")
    payment = paid_by_paybill("0722000222", django_capture_on_commit_callbacks)
    assert payment.customer is None
    assert "more than one customer" in InboundCallback.objects.get().outcome


def test_a_short_number_is_not_read_as_a_phone(wanjiku):
    # 712345678 without 0/254 could be an account number with a typo; it is not taken as a phone
    assert selectors.match_account_reference("712345678").customer is None


# --- service usernames ------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["kamau.home", "KAMAU.HOME", " kamau.home "])
def test_a_service_username_pays_the_services_customer(typed, wanjiku, otieno, django_capture_on_commit_callbacks):
    SubscriptionFactory(customer=otieno, username="kamau.home")
    payment = paid_by_paybill(typed, django_capture_on_commit_callbacks)
    assert payment.customer == otieno
    assert "service username kamau.home" in InboundCallback.objects.get().outcome


def test_an_account_number_wins_over_a_username_that_looks_the_same(wanjiku, otieno):
    SubscriptionFactory(customer=otieno, username="10008")
    match = selectors.match_account_reference("10008")
    assert (match.customer, match.rule) == (wanjiku, "account_number")


def test_the_rules_are_tried_in_order_and_say_which_one_matched(wanjiku, otieno):
    issued_invoice(otieno, "INV-000007", "100.00")
    SubscriptionFactory(customer=otieno, username="shop-otieno")
    assert selectors.match_account_reference("#10008").rule == "account_number"
    assert selectors.match_account_reference("inv 7").rule == "invoice_number"
    assert selectors.match_account_reference("0733 000 111").rule == "phone"
    assert selectors.match_account_reference("SHOP-OTIENO").rule == "username"
    nobody = selectors.match_account_reference("")
    assert nobody.customer is None and nobody.rule == "" and "no account reference" in nobody.detail


# --- the MSISDN is opaque ----------------------------------------------------------------------------------


HASHED = hashlib.sha256(b"254712345678").hexdigest()


@pytest.mark.parametrize("msisdn", ["2547 ***** 149", "25471****678", HASHED, "254712345678"])
def test_the_payers_msisdn_never_matches_a_customer_and_is_kept_exactly_as_sent(
    msisdn, wanjiku, django_capture_on_commit_callbacks
):
    payment = paid_by_paybill("no-such-account", django_capture_on_commit_callbacks, msisdn=msisdn)

    assert payment.customer is None and payment.status == "unmatched"  # even the clear number of Wanjiku's phone
    assert payment.payer_phone == msisdn


def test_a_hashed_msisdn_does_not_stop_a_payment_matched_by_its_account(wanjiku, django_capture_on_commit_callbacks):
    payment = paid_by_paybill("10008", django_capture_on_commit_callbacks, msisdn=HASHED)
    assert payment.customer == wanjiku and payment.payer_phone == HASHED

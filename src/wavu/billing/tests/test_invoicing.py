"""Invoicing: drafts, itemised lines with their taxes, issuing, numbering and the books."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wavu.billing import services
from wavu.billing.models import Invoice, InvoiceLine
from wavu.catalog.models import AddOn, PlanPrice
from wavu.core.models import Sequence
from wavu.core.tax import TaxClass
from wavu.ledger import accounts
from wavu.ledger.models import JournalEntry, Posting
from wavu.ledger.selectors import customer_balance, customer_credit, trial_balance
from wavu.payments.services import record_manual_payment
from wavu.testing.factories import CustomerFactory, SubscriptionFactory

from .conftest import at, attach_addon

pytestmark = pytest.mark.django_db

DEC_1, DEC_31 = dt.date(2026, 12, 1), dt.date(2026, 12, 31)


def invoice_entries(invoice):
    return JournalEntry.objects.filter(source_type="billing.invoice", source_id=str(invoice.pk))


def postings_by_account(entry):
    sums: dict[str, Decimal] = {}
    for posting in entry.postings.select_related("account"):
        sums[posting.account.code] = sums.get(posting.account.code, Decimal(0)) + posting.amount
    return sums


def test_a_kes_2999_home_fibre_month_is_invoiced_with_the_worked_example_split(december, subscription):
    invoice = services.invoice_subscription_period(subscription, DEC_1, DEC_31)

    (line,) = invoice.lines.all()
    assert line.description == "Home Fibre 20 Mbps, 1 Dec 2026 – 31 Dec 2026"
    assert line.kind == InvoiceLine.Kind.SUBSCRIPTION
    assert (line.quantity, line.unit_price, line.gross) == (Decimal("1"), Decimal("2999.00"), Decimal("2999.00"))
    assert (line.net, line.excise, line.vat) == (Decimal("2248.12"), Decimal("337.22"), Decimal("413.66"))
    assert (line.tax_band, line.vat_rate, line.excise_rate) == ("B", Decimal("0.16"), Decimal("0.15"))
    assert line.period_start == at(DEC_1, dt.time.min) and line.period_end == at(dt.date(2027, 1, 1), dt.time.min)

    assert invoice.number == "INV-000001"
    assert invoice.status == Invoice.Status.ISSUED
    assert (invoice.net_total, invoice.excise_total, invoice.vat_total, invoice.total) == (
        Decimal("2248.12"),
        Decimal("337.22"),
        Decimal("413.66"),
        Decimal("2999.00"),
    )
    assert invoice.issue_date == DEC_1 and invoice.due_date == dt.date(2026, 12, 8)  # INVOICE_DUE_DAYS = 7
    assert invoice.subscription == subscription and invoice.period_start == line.period_start


def test_the_buyer_is_frozen_on_the_invoice_when_it_is_issued(december, subscription, customer):
    invoice = services.invoice_subscription_period(subscription, DEC_1, DEC_31)
    customer.name, customer.kra_pin = "Wanjiku Kamau Enterprises", "P000111222Q"
    customer.save()

    invoice.refresh_from_db()
    assert invoice.buyer_name == "Wanjiku Kamau"
    assert invoice.buyer_pin == "A012345678Z"
    assert invoice.buyer_address == "Kileleshwa, Othaya Rd, Hse 4, Nairobi, Nairobi"
    assert invoice.buyer_account_number == customer.account_number


def test_a_buyer_without_a_kra_pin_gets_an_invoice_without_one(december, plan):
    walk_in = CustomerFactory(name="Otieno Odhiambo")
    invoice = services.invoice_subscription_period(SubscriptionFactory(customer=walk_in, plan=plan), DEC_1, DEC_31)
    assert invoice.buyer_pin == "" and invoice.buyer_address == ""


def test_issuing_writes_one_balanced_entry_and_the_customer_owes_the_total(december, subscription, customer):
    invoice = services.invoice_subscription_period(subscription, DEC_1, DEC_31)

    (entry,) = invoice_entries(invoice)
    assert entry.kind == JournalEntry.Kind.INVOICE
    assert postings_by_account(entry) == {
        accounts.ACCOUNTS_RECEIVABLE: Decimal("2999.00"),
        accounts.REVENUE_INTERNET: Decimal("-2248.12"),
        accounts.EXCISE_PAYABLE: Decimal("-337.22"),
        accounts.VAT_PAYABLE: Decimal("-413.66"),
    }
    receivable = entry.postings.get(account__code=accounts.ACCOUNTS_RECEIVABLE)
    assert receivable.customer_id == customer.pk
    assert customer_balance(customer.pk) == Decimal("2999.00")
    assert trial_balance()["balanced"]


def test_revenue_is_booked_by_tax_class(december, subscription, customer):
    draft = services.create_draft_invoice(customer, notes="New connection")
    services.add_subscription_period_line(draft, subscription, DEC_1, DEC_31)
    services.add_one_off_line(draft, description="Installation", unit_price="1160.00", tax_class=TaxClass.STANDARD)
    services.add_one_off_line(draft, description="Insurance levy", unit_price="100", tax_class=TaxClass.EXEMPT)
    invoice = services.issue_invoice(draft)

    assert [line.position for line in invoice.lines.all()] == [1, 2, 3]
    install = invoice.lines.get(description="Installation")
    assert (install.net, install.excise, install.vat, install.tax_band) == (
        Decimal("1000.00"),
        Decimal("0.00"),
        Decimal("160.00"),
        "B",
    )
    assert invoice.total == Decimal("4259.00")
    assert postings_by_account(invoice_entries(invoice).get()) == {
        accounts.ACCOUNTS_RECEIVABLE: Decimal("4259.00"),
        accounts.REVENUE_INTERNET: Decimal("-2248.12"),
        accounts.REVENUE_STANDARD: Decimal("-1000.00"),
        accounts.REVENUE_EXEMPT: Decimal("-100.00"),
        accounts.EXCISE_PAYABLE: Decimal("-337.22"),
        accounts.VAT_PAYABLE: Decimal("-573.66"),
    }
    # the caller's draft object now shows the issued invoice
    assert draft.number == invoice.number and draft.status == Invoice.Status.ISSUED


def test_quantity_times_unit_price_is_rounded_once_and_the_parts_add_up(december, customer):
    draft = services.create_draft_invoice(customer)
    line = services.add_one_off_line(
        draft, description="Patch cable (m)", unit_price="99.99", quantity="1.5", tax_class=TaxClass.STANDARD
    )
    assert line.gross == Decimal("149.99")  # 149.985 rounded half-up, once
    assert line.net + line.excise + line.vat == line.gross


def test_a_recurring_addon_is_billed_every_period_and_a_one_off_addon_only_once(december, subscription):
    static_ip = attach_addon(subscription, name="Static IP", price="580.00", tax_class=TaxClass.STANDARD)
    install = attach_addon(
        subscription,
        name="Installation",
        billing=AddOn.Billing.ONE_OFF,
        category=AddOn.Category.INSTALLATION,
        price="2320.00",
        tax_class=TaxClass.STANDARD,
    )

    december_invoice = services.invoice_subscription_period(subscription, DEC_1, DEC_31)
    with time_machine.travel(at(dt.date(2027, 1, 1)), tick=False):
        january_invoice = services.invoice_subscription_period(subscription, dt.date(2027, 1, 1), dt.date(2027, 1, 31))

    assert [line.description for line in december_invoice.lines.all()] == [
        "Home Fibre 20 Mbps, 1 Dec 2026 – 31 Dec 2026",
        "Static IP, 1 Dec 2026 – 31 Dec 2026",
        "Installation",
    ]
    assert [line.description for line in january_invoice.lines.all()] == [
        "Home Fibre 20 Mbps, 1 Jan 2027 – 31 Jan 2027",
        "Static IP, 1 Jan 2027 – 31 Jan 2027",
    ]
    install.refresh_from_db()
    assert install.billed_on_line == december_invoice.lines.get(description="Installation")
    assert december_invoice.total == Decimal("2999.00") + Decimal("580.00") + Decimal("2320.00")
    static_ip.refresh_from_db()
    assert static_ip.billed_on_line is None


def test_a_one_off_addon_cannot_be_put_on_a_second_invoice(december, subscription, customer):
    install = attach_addon(subscription, name="Installation", billing=AddOn.Billing.ONE_OFF, price="2320.00")
    first = services.create_draft_invoice(customer)
    services.add_addon_line(first, install)
    second = services.create_draft_invoice(customer)

    with pytest.raises(services.AddOnAlreadyBilled):
        services.add_addon_line(second, install)
    assert not second.lines.exists()


def test_discarding_a_draft_makes_its_one_off_addon_billable_again(december, subscription, customer):
    install = attach_addon(subscription, name="Installation", billing=AddOn.Billing.ONE_OFF, price="2320.00")
    draft = services.create_draft_invoice(customer)
    services.add_addon_line(draft, install)

    services.discard_draft_invoice(draft)

    assert not Invoice.objects.filter(pk=draft.pk).exists() and not InvoiceLine.objects.exists()
    install.refresh_from_db()
    assert install.billed_on_line is None
    again = services.create_draft_invoice(customer)
    assert services.add_addon_line(again, install).gross == Decimal("2320.00")


def test_a_recurring_addon_not_attached_during_the_period_is_refused(december, subscription, customer):
    removed = attach_addon(subscription, ended_at=at(dt.date(2026, 11, 20)))
    draft = services.create_draft_invoice(customer)
    with pytest.raises(ValidationError):
        services.add_addon_line(draft, removed, DEC_1, DEC_31)
    assert not draft.lines.exists()


def test_invoice_numbers_follow_each_other_and_a_rolled_back_issue_gives_its_number_back(december, customer):
    def draft_of(amount):
        draft = services.create_draft_invoice(customer)
        services.add_one_off_line(draft, description="Call-out", unit_price=amount, tax_class=TaxClass.STANDARD)
        return draft

    first = services.issue_invoice(draft_of("100"))
    doomed = draft_of("200")
    with pytest.raises(RuntimeError), transaction.atomic():
        services.issue_invoice(doomed)
        raise RuntimeError("the caller failed after issuing")
    doomed.refresh_from_db()
    assert doomed.status == Invoice.Status.DRAFT and doomed.number is None
    assert not invoice_entries(doomed).exists()
    second = services.issue_invoice(draft_of("300"))
    third = services.issue_invoice(doomed)

    assert [first.number, second.number, third.number] == ["INV-000001", "INV-000002", "INV-000003"]


def test_an_empty_invoice_cannot_be_issued_and_uses_no_number(december, customer):
    draft = services.create_draft_invoice(customer)
    with pytest.raises(services.EmptyInvoice):
        services.issue_invoice(draft)
    free = services.create_draft_invoice(customer)
    services.add_one_off_line(free, description="Free router", unit_price="0", tax_class=TaxClass.STANDARD)
    with pytest.raises(services.EmptyInvoice):
        services.issue_invoice(free)

    assert Invoice.objects.filter(status=Invoice.Status.DRAFT).count() == 2
    assert not Sequence.objects.filter(name="invoice:INV").exists()
    assert not JournalEntry.objects.exists()


def test_an_issued_invoice_cannot_be_issued_again_or_given_more_lines(december, subscription):
    invoice = services.invoice_subscription_period(subscription, DEC_1, DEC_31)

    with pytest.raises(services.InvoiceNotDraft):
        services.issue_invoice(invoice)
    with pytest.raises(services.InvoiceNotDraft):
        services.add_one_off_line(invoice, description="Extra", unit_price="10", tax_class=TaxClass.STANDARD)
    with pytest.raises(services.InvoiceNotDraft):
        services.discard_draft_invoice(invoice)

    assert invoice.lines.count() == 1 and invoice_entries(invoice).count() == 1
    assert Sequence.objects.get(name="invoice:INV").next_value == 2


def test_a_subscription_is_invoiced_once_per_period(december, subscription):
    first = services.invoice_subscription_period(subscription, DEC_1, DEC_31)

    with pytest.raises(services.AlreadyInvoiced) as refused:
        services.invoice_subscription_period(subscription, DEC_1, DEC_31)

    assert refused.value.existing_invoice_id == first.pk
    assert Invoice.objects.count() == 1 and JournalEntry.objects.count() == 1
    assert Sequence.objects.get(name="invoice:INV").next_value == 2


def test_a_price_change_after_issue_does_not_change_the_issued_invoice(december, subscription, plan):
    invoice = services.invoice_subscription_period(subscription, DEC_1, DEC_31)
    PlanPrice.objects.create(
        plan=plan, amount=Decimal("3499.00"), valid_from=at(DEC_1, dt.time(12)), created_at=at(DEC_1)
    )

    invoice.refresh_from_db()
    assert invoice.total == Decimal("2999.00") and invoice.lines.get().unit_price == Decimal("2999.00")
    with time_machine.travel(at(dt.date(2027, 1, 1)), tick=False):
        january = services.invoice_subscription_period(subscription, dt.date(2027, 1, 1), dt.date(2027, 1, 31))
    assert january.total == Decimal("3499.00")


def test_a_line_keeps_the_excise_rate_in_force_when_its_period_started(customer, subscription):
    with time_machine.travel(at(dt.date(2022, 3, 1)), tick=False):  # Finance Act 2021: excise 20 %
        invoice = services.invoice_subscription_period(subscription, dt.date(2022, 3, 1), dt.date(2022, 3, 31))
    line = invoice.lines.get()
    assert line.excise_rate == Decimal("0.20")
    assert (line.net, line.excise, line.vat) == (Decimal("2154.45"), Decimal("430.89"), Decimal("413.66"))


def test_existing_customer_credit_pays_a_new_invoice_when_it_is_issued(december, subscription, customer):
    record_manual_payment(method="cash", reference="RCPT-001", amount="1000.00", customer=customer)
    assert customer_credit(customer.pk) == Decimal("1000.00")

    invoice = services.invoice_subscription_period(subscription, DEC_1, DEC_31)

    assert invoice.amount_paid == Decimal("1000.00") and invoice.status == Invoice.Status.PARTIALLY_PAID
    assert invoice.outstanding == Decimal("1999.00")
    assert customer_credit(customer.pk) == Decimal("0.00")
    assert customer_balance(customer.pk) == Decimal("1999.00")
    assert invoice_entries(invoice).count() == 1


def test_an_invoice_cannot_be_dated_in_the_future(december, customer):
    draft = services.create_draft_invoice(customer)
    services.add_one_off_line(draft, description="Call-out", unit_price="500", tax_class=TaxClass.STANDARD)
    with pytest.raises(ValidationError):
        services.issue_invoice(draft, issue_date=dt.date(2026, 12, 2))
    draft.refresh_from_db()
    assert draft.status == Invoice.Status.DRAFT and not JournalEntry.objects.exists()


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("unit_price", {"unit_price": "-1.00"}),
        ("unit_price", {"unit_price": "10.005"}),
        ("unit_price", {"unit_price": "ten"}),
        ("unit_price", {"unit_price": 10.5}),
        ("quantity", {"quantity": "0"}),
        ("quantity", {"quantity": "1.0001"}),
        ("tax_class", {"tax_class": "luxury"}),
        ("description", {"description": "   "}),
    ],
)
def test_a_bad_one_off_charge_is_refused_field_by_field_and_adds_nothing(december, customer, field, kwargs):
    draft = services.create_draft_invoice(customer)
    charge = {"description": "Call-out", "unit_price": "500", "tax_class": TaxClass.STANDARD} | kwargs
    with pytest.raises(ValidationError) as refused:
        services.add_one_off_line(draft, **charge)
    assert field in refused.value.message_dict
    assert not draft.lines.exists()


def test_a_line_for_another_customers_subscription_is_refused(december, customer, plan):
    someone_else = SubscriptionFactory(plan=plan)
    draft = services.create_draft_invoice(customer)
    with pytest.raises(ValidationError):
        services.add_subscription_period_line(draft, someone_else, DEC_1, DEC_31)
    with pytest.raises(ValidationError):
        services.create_draft_invoice(customer, subscription=someone_else)
    assert not InvoiceLine.objects.exists()


def test_a_period_given_as_instants_reads_as_local_days(december, subscription, customer):
    draft = services.create_draft_invoice(customer)
    line = services.add_subscription_period_line(
        draft, subscription, at(DEC_1, dt.time.min), at(dt.date(2027, 1, 1), dt.time.min)
    )
    assert line.description == "Home Fibre 20 Mbps, 1 Dec 2026 – 31 Dec 2026"
    with pytest.raises(ValidationError):
        services.add_subscription_period_line(draft, subscription, DEC_31, DEC_1)


def test_the_invoice_balance_shows_in_the_ledger_until_it_is_paid(december, subscription, customer):
    invoice = services.invoice_subscription_period(subscription, DEC_1, DEC_31)
    assert customer_balance(customer.pk) == invoice.total

    record_manual_payment(method="cash", reference="RCPT-002", amount="2999.00", customer=customer)

    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID and invoice.outstanding == 0
    assert customer_balance(customer.pk) == Decimal("0.00")
    assert Posting.objects.filter(customer=customer).count() >= 3


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    unit_price=st.decimals(min_value="0.01", max_value="999999.99", places=2),
    quantity=st.decimals(min_value="0.001", max_value="100", places=3),
    tax_class=st.sampled_from(TaxClass.values),
)
def test_any_price_and_quantity_make_a_line_whose_parts_add_up_and_an_entry_that_balances(
    december, customer, unit_price, quantity, tax_class
):
    with transaction.atomic():
        draft = services.create_draft_invoice(customer)
        line = services.add_one_off_line(
            draft, description="Charge", unit_price=unit_price, quantity=quantity, tax_class=tax_class
        )
        assert line.gross == (unit_price * quantity).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        assert line.net + line.excise + line.vat == line.gross
        if line.gross > 0:
            invoice = services.issue_invoice(draft)
            entry = invoice_entries(invoice).get()
            assert sum(p.amount for p in entry.postings.all()) == 0
            assert customer_balance(customer.pk) == line.gross
        transaction.set_rollback(True)

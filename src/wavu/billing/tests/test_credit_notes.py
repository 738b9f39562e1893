"""Credit notes: they reference one invoice at most 12 months old, never credit more than is left,
split each line at the rates the invoice charged, book one entry, and turn paid money into credit."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wavu.billing import services
from wavu.billing.models import CreditNote, CreditNoteLine, Invoice
from wavu.core.models import Sequence
from wavu.core.money import Money
from wavu.core.tax import Rates, TaxClass, split_gross
from wavu.ledger import accounts
from wavu.ledger.models import JournalEntry
from wavu.ledger.selectors import customer_balance, customer_credit, trial_balance
from wavu.payments.models import Allocation, Payment
from wavu.payments.services import record_manual_payment

from .conftest import at

pytestmark = pytest.mark.django_db

DEC_1, DEC_31 = dt.date(2026, 12, 1), dt.date(2026, 12, 31)


@pytest.fixture
def invoice(december, subscription, customer):
    """KES 2,999 of fibre (excise + VAT) and a KES 1,160 installation (VAT only): KES 4,159."""
    draft = services.create_draft_invoice(customer, subscription=subscription)
    services.add_subscription_period_line(draft, subscription, DEC_1, DEC_31)
    services.add_one_off_line(draft, description="Installation", unit_price="1160.00", tax_class=TaxClass.STANDARD)
    return services.issue_invoice(draft)


def note_entries(note):
    return JournalEntry.objects.filter(source_type="billing.creditnote", source_id=str(note.pk))


def postings_by_account(entry):
    sums: dict[str, Decimal] = {}
    for posting in entry.postings.select_related("account"):
        sums[posting.account.code] = sums.get(posting.account.code, Decimal(0)) + posting.amount
    return sums


def nothing_was_credited(invoice, before_status):
    invoice.refresh_from_db()
    return (
        not CreditNote.objects.exists()
        and not JournalEntry.objects.filter(kind=JournalEntry.Kind.CREDIT_NOTE).exists()
        and not Sequence.objects.filter(name="credit_note:CN").exists()
        and invoice.amount_credited == 0
        and invoice.status == before_status
    )


def test_a_partial_credit_is_shared_over_the_lines_and_booked_once(invoice, customer):
    note = services.issue_credit_note(invoice, reason="Outage 3–5 Dec", amount="1000.00")

    assert note.number == "CN-000001" and note.invoice == invoice and note.issue_date == DEC_1
    fibre, install = note.lines.order_by("invoice_line__position")
    # 1000 × 2999/4159 = 721.09 and 1000 × 1160/4159 = 278.91
    assert (fibre.gross, install.gross) == (Decimal("721.09"), Decimal("278.91"))
    for line in (fibre, install):
        assert line.net + line.excise + line.vat == line.gross
    assert install.excise == 0
    assert note.total == Decimal("1000.00") == note.net_total + note.excise_total + note.vat_total

    (entry,) = note_entries(note)
    assert entry.kind == JournalEntry.Kind.CREDIT_NOTE
    booked = postings_by_account(entry)
    assert booked[accounts.ACCOUNTS_RECEIVABLE] == Decimal("-1000.00")
    assert booked[accounts.REVENUE_INTERNET] == fibre.net and booked[accounts.REVENUE_STANDARD] == install.net
    assert booked[accounts.EXCISE_PAYABLE] == note.excise_total and booked[accounts.VAT_PAYABLE] == note.vat_total
    assert sum(booked.values()) == 0

    invoice.refresh_from_db()
    assert invoice.amount_credited == Decimal("1000.00") and invoice.status == Invoice.Status.PARTIALLY_PAID
    assert customer_balance(customer.pk) == Decimal("3159.00")


def test_a_full_credit_note_voids_the_invoice_and_reverses_exactly_its_taxes(invoice, customer):
    note = services.void_invoice(invoice, "Customer cancelled before installation")

    assert note.total == invoice.total
    assert (note.net_total, note.excise_total, note.vat_total) == (
        invoice.net_total,
        invoice.excise_total,
        invoice.vat_total,
    )
    for cn_line in note.lines.select_related("invoice_line"):
        source = cn_line.invoice_line
        assert (cn_line.gross, cn_line.net, cn_line.excise, cn_line.vat) == (
            source.gross,
            source.net,
            source.excise,
            source.vat,
        )
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VOID and invoice.outstanding == 0
    assert customer_balance(customer.pk) == Decimal("0.00")
    assert trial_balance()["balanced"]
    with pytest.raises(services.CreditNotAllowed):
        services.issue_credit_note(invoice, reason="again", amount="1.00")


def test_several_partial_credits_then_the_rest_reverse_exactly_what_was_charged(invoice):
    services.issue_credit_note(invoice, reason="Outage", amount="333.33")
    services.issue_credit_note(invoice, reason="Goodwill", amount="0.01")
    last = services.issue_credit_note(invoice, reason="Cancelled")

    assert last.total == Decimal("4159.00") - Decimal("333.34")
    for line in invoice.lines.all():
        credited = CreditNoteLine.objects.filter(invoice_line=line)
        assert sum(c.net for c in credited) == line.net
        assert sum(c.excise for c in credited) == line.excise
        assert sum(c.vat for c in credited) == line.vat
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VOID
    assert list(CreditNote.objects.order_by("id").values_list("number", flat=True)) == [
        "CN-000001",
        "CN-000002",
        "CN-000003",
    ]


def test_a_line_can_be_credited_on_its_own(invoice):
    install = invoice.lines.get(description="Installation")
    note = services.issue_credit_note(invoice, reason="Installation waived", lines={install.pk: None})

    (cn_line,) = note.lines.all()
    assert (cn_line.invoice_line, cn_line.gross, cn_line.net, cn_line.vat) == (
        install,
        Decimal("1160.00"),
        Decimal("1000.00"),
        Decimal("160.00"),
    )
    with pytest.raises(ValidationError):
        services.issue_credit_note(invoice, reason="twice", lines=[{"line": install.pk, "amount": "0.01"}])
    assert CreditNote.objects.count() == 1


def test_a_credit_note_uses_the_rates_the_invoice_charged_not_todays(customer, subscription):
    with time_machine.travel(at(dt.date(2023, 6, 1)), tick=False):  # excise 20 % until 30 Jun 2023
        invoice = services.invoice_subscription_period(subscription, dt.date(2023, 6, 1), dt.date(2023, 6, 30))
    with time_machine.travel(at(dt.date(2023, 8, 1)), tick=False):  # excise back to 15 %
        note = services.issue_credit_note(invoice, reason="Half month outage", amount="1499.50")

    expected = split_gross(Money.of("1499.50"), Rates(TaxClass.INTERNET, Decimal("0.16"), Decimal("0.20"), "B"))
    (cn_line,) = note.lines.all()
    assert (cn_line.net, cn_line.excise, cn_line.vat) == (
        expected.net.amount,
        expected.excise.amount,
        expected.vat.amount,
    )
    assert cn_line.excise == Decimal("215.44")  # at 15 % it would have been 168.61


def test_a_credit_note_for_an_invoice_older_than_twelve_months_is_refused(customer, subscription):
    with time_machine.travel(at(dt.date(2026, 1, 5)), tick=False):
        invoice = services.invoice_subscription_period(subscription, dt.date(2026, 1, 5), dt.date(2026, 2, 4))
    with time_machine.travel(at(dt.date(2027, 1, 6)), tick=False), pytest.raises(services.CreditWindowClosed):
        services.issue_credit_note(invoice, reason="Late complaint", amount="100.00")
    assert nothing_was_credited(invoice, Invoice.Status.ISSUED)

    with time_machine.travel(at(dt.date(2027, 1, 5)), tick=False):  # exactly 365 days: still allowed
        assert services.issue_credit_note(invoice, reason="Complaint", amount="100.00").total == Decimal("100.00")


def test_a_credit_larger_than_what_is_left_is_refused_and_changes_nothing(invoice, customer):
    with pytest.raises(services.CreditExceedsInvoice):
        services.issue_credit_note(invoice, reason="Too much", amount="4159.01")
    assert nothing_was_credited(invoice, Invoice.Status.ISSUED)
    assert customer_balance(customer.pk) == Decimal("4159.00")

    services.issue_credit_note(invoice, reason="Outage", amount="4000.00")
    with pytest.raises(services.CreditExceedsInvoice):
        services.issue_credit_note(invoice, reason="Too much now", amount="159.01")
    assert CreditNote.objects.count() == 1
    assert JournalEntry.objects.filter(kind=JournalEntry.Kind.CREDIT_NOTE).count() == 1


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"reason": "  ", "amount": "10"}, "reason"),
        ({"reason": "x", "amount": "0"}, "amount"),
        ({"reason": "x", "amount": "-5"}, "amount"),
        ({"reason": "x", "amount": "1.001"}, "amount"),
        ({"reason": "x", "amount": "lots"}, "amount"),
        ({"reason": "x", "amount": "10", "lines": {}}, "amount"),
        ({"reason": "x", "lines": {999999: "1.00"}}, "lines"),
        ({"reason": "x", "lines": "everything"}, "lines"),
    ],
)
def test_bad_credit_note_input_is_refused_field_by_field(invoice, kwargs, field):
    with pytest.raises(ValidationError) as refusal:
        services.issue_credit_note(invoice, **kwargs)
    assert field in refusal.value.message_dict
    assert nothing_was_credited(invoice, Invoice.Status.ISSUED)


def test_a_draft_cannot_be_credited(december, customer):
    draft = services.create_draft_invoice(customer)
    services.add_one_off_line(draft, description="Call-out", unit_price="500", tax_class=TaxClass.STANDARD)
    with pytest.raises(services.CreditNotAllowed):
        services.issue_credit_note(draft, reason="nothing to credit")
    assert not CreditNote.objects.exists()


def test_crediting_a_paid_invoice_turns_the_paid_money_into_customer_credit(invoice, customer):
    payment, _ = record_manual_payment(method="cash", reference="RCPT-100", amount="4159.00", customer=customer)
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID

    services.issue_credit_note(invoice, reason="Outage", amount="1000.00")

    invoice.refresh_from_db()
    payment.refresh_from_db()
    assert (invoice.amount_paid, invoice.amount_credited, invoice.status) == (
        Decimal("3159.00"),
        Decimal("1000.00"),
        Invoice.Status.PAID,
    )
    assert payment.amount_allocated == Decimal("3159.00")
    assert Allocation.objects.filter(invoice=invoice, amount__lt=0).get().amount == Decimal("-1000.00")
    assert customer_credit(customer.pk) == Decimal("1000.00")
    assert customer_balance(customer.pk) == Decimal("-1000.00")
    assert trial_balance()["balanced"]


def test_voiding_a_partly_paid_invoice_gives_back_what_was_paid(invoice, customer):
    record_manual_payment(method="cash", reference="RCPT-101", amount="1500.00", customer=customer)

    services.void_invoice(invoice, "Wrong customer")

    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid, invoice.amount_credited) == (
        Invoice.Status.VOID,
        Decimal("0.00"),
        Decimal("4159.00"),
    )
    assert customer_credit(customer.pk) == Decimal("1500.00")
    assert customer_balance(customer.pk) == Decimal("-1500.00")


def test_money_released_by_a_credit_note_pays_the_customers_next_open_invoice(invoice, customer):
    record_manual_payment(method="cash", reference="RCPT-102", amount="4159.00", customer=customer)
    with time_machine.travel(at(dt.date(2026, 12, 2)), tick=False):
        second = services.create_draft_invoice(customer)
        services.add_one_off_line(second, description="Router", unit_price="3000.00", tax_class=TaxClass.STANDARD)
        second = services.issue_invoice(second)
        assert second.amount_paid == 0

        services.void_invoice(invoice, "Billed to the wrong account")

    second.refresh_from_db()
    assert second.status == Invoice.Status.PAID
    assert customer_credit(customer.pk) == Decimal("1159.00")
    assert Payment.objects.get().amount_allocated == Decimal("3000.00")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prices=st.lists(st.decimals(min_value="0.01", max_value="99999.99", places=2), min_size=1, max_size=4),
    classes=st.lists(st.sampled_from([TaxClass.INTERNET, TaxClass.STANDARD, TaxClass.EXEMPT]), min_size=4, max_size=4),
    shares=st.lists(st.integers(min_value=1, max_value=99), max_size=5),
)
@example(prices=[Decimal("0.81")], classes=[TaxClass.INTERNET] * 4, shares=[76, 19, 71])  # once drifted by a cent
def test_any_sequence_of_credits_adds_up_per_line_and_ends_exactly_at_the_invoice(
    december, customer, prices, classes, shares
):
    with transaction.atomic():
        draft = services.create_draft_invoice(customer)
        for price, tax_class in zip(prices, classes, strict=False):
            services.add_one_off_line(draft, description="Charge", unit_price=price, tax_class=tax_class)
        invoice = services.issue_invoice(draft)
        for share in shares:
            left = invoice.total - invoice.amount_credited
            amount = (left * share / 100).quantize(Decimal("0.01"))
            if amount > 0:
                services.issue_credit_note(invoice, reason="part", amount=amount)
        if invoice.status != Invoice.Status.VOID:  # small invoices may already be fully credited
            services.void_invoice(invoice, "rest")

        for line in invoice.lines.all():
            pieces = list(CreditNoteLine.objects.filter(invoice_line=line))
            assert all(p.net + p.excise + p.vat == p.gross for p in pieces)
            assert all(min(p.net, p.excise, p.vat) >= 0 for p in pieces)
            assert sum(p.gross for p in pieces) == line.gross
            assert (sum(p.net for p in pieces), sum(p.excise for p in pieces), sum(p.vat for p in pieces)) == (
                line.net,
                line.excise,
                line.vat,
            )
        assert invoice.status == Invoice.Status.VOID
        assert customer_balance(customer.pk) == 0
        transaction.set_rollback(True)

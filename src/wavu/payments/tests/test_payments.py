"""Recording money, applying it to invoices, and correcting mistakes: the business rules."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from wavu.billing import services as billing
from wavu.billing.models import Invoice
from wavu.core.errors import NotAllowed
from wavu.core.models import AuditEvent
from wavu.core.tax import TaxClass
from wavu.ledger import accounts
from wavu.ledger.models import JournalEntry, Posting
from wavu.ledger.selectors import customer_balance, customer_credit, trial_balance
from wavu.payments import selectors, services
from wavu.payments.models import Allocation, Payment, Refund
from wavu.testing.factories import CustomerFactory

from .factories import issued_invoice

pytestmark = pytest.mark.django_db

D = Decimal


def cash(reference, amount, customer=None, **kwargs):
    return services.record_manual_payment(
        method="cash", reference=reference, amount=amount, customer=customer, **kwargs
    )


def payment_entries(payment):
    return JournalEntry.objects.filter(source_type="payments.payment", source_id=str(payment.pk))


def refresh(*objs):
    for obj in objs:
        obj.refresh_from_db()


# --- idempotency ------------------------------------------------------------------------------


def test_a_manual_payment_recorded_twice_with_the_same_reference_is_credited_once():
    customer = CustomerFactory()
    first, created = cash("RCPT-001", "2500", customer)
    again, created_again = cash(" RCPT-001 ", D("2500.00"), customer)

    assert created is True and created_again is False
    assert again.pk == first.pk
    assert Payment.objects.count() == 1
    assert payment_entries(first).filter(kind="payment").count() == 1
    assert customer_balance(customer.pk) == D("-2500.00")
    assert customer_credit(customer.pk) == D("2500.00")


def test_the_same_reference_on_another_method_is_a_different_payment():
    customer = CustomerFactory()
    by_cash, _ = cash("0042", "1000", customer)
    by_cheque, created = services.record_manual_payment(
        method="cheque", reference="0042", amount="1000", customer=customer
    )

    assert created is True and by_cheque.pk != by_cash.pk
    assert customer_credit(customer.pk) == D("2000.00")


def test_the_same_receipt_on_two_paybills_is_two_payments_but_on_one_paybill_is_one():
    customer = CustomerFactory()
    a, _ = services.record_payment(
        method="mpesa", source="paybill:111111", reference="SGH7X1", amount="50", customer=customer
    )
    b, created_b = services.record_payment(
        method="mpesa", source="paybill:222222", reference="SGH7X1", amount="50", customer=customer
    )
    again, created_again = services.record_payment(
        method="mpesa", source="paybill:111111", reference="SGH7X1", amount="50"
    )

    assert created_b and a.pk != b.pk
    assert not created_again and again.pk == a.pk
    assert Payment.objects.count() == 2


def test_a_copy_of_a_receipt_with_another_amount_is_refused_and_changes_nothing():
    customer = CustomerFactory()
    original, _ = cash("RCPT-7", "1000", customer)
    entries, events = JournalEntry.objects.count(), AuditEvent.objects.count()

    with pytest.raises(services.DuplicateReferenceMismatch) as refused:
        cash("RCPT-7", "1500", customer)

    assert refused.value.code == "duplicate_reference_mismatch"
    assert "1000.00" in refused.value.message and "1500.00" in refused.value.message
    assert Payment.objects.count() == 1
    assert (JournalEntry.objects.count(), AuditEvent.objects.count()) == (entries, events)
    assert customer_credit(customer.pk) == D("1000.00")


def test_a_copy_of_a_receipt_naming_another_customer_is_refused():
    first, second = CustomerFactory(), CustomerFactory()
    cash("RCPT-8", "1000", first)

    with pytest.raises(services.DuplicateReferenceMismatch):
        cash("RCPT-8", "1000", second)
    assert customer_credit(second.pk) == 0


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "says"),
    [
        ("-100", "more than zero"),
        ("0", "more than zero"),
        ("abc", "not a number"),
        (2500.5, "not float"),
        ("10.005", "at most 2 decimal places"),
        ("1000000000", "largest accepted"),
        ("NaN", "finite"),
        (None, "cannot use NoneType"),
    ],
)
def test_a_bad_amount_gets_a_clear_error_and_changes_nothing(amount, says):
    customer = CustomerFactory()

    with pytest.raises(ValidationError) as refused:
        cash("RCPT-BAD", amount, customer)

    assert says in " ".join(refused.value.message_dict["amount"])
    assert not Payment.objects.exists()
    assert not JournalEntry.objects.exists()
    assert not AuditEvent.objects.filter(object_type="payments.payment").exists()


@pytest.mark.parametrize("reference", ["", "   ", None, "X" * 61])
def test_a_payment_needs_a_reference_of_sensible_length(reference):
    with pytest.raises(ValidationError) as refused:
        cash(reference, "100", CustomerFactory())
    assert "reference" in refused.value.message_dict
    assert not Payment.objects.exists()


def test_manual_entry_is_only_for_cash_bank_transfers_and_cheques():
    with pytest.raises(ValidationError) as refused:
        services.record_manual_payment(method="mpesa", reference="SGH7X1", amount="100", customer=CustomerFactory())
    assert "method" in refused.value.message_dict
    assert not Payment.objects.exists()


def test_a_payment_cannot_be_received_in_the_future_or_for_an_unknown_customer():
    from wavu.core import clock

    with pytest.raises(ValidationError) as future:
        cash("R1", "100", CustomerFactory(), received_at=clock.now() + dt.timedelta(days=1))
    assert "received_at" in future.value.message_dict
    with pytest.raises(ValidationError) as unknown:
        cash("R2", "100", 987654)
    assert "customer" in unknown.value.message_dict
    assert not Payment.objects.exists()


# --- allocation ---------------------------------------------------------------------------------


def test_a_payment_pays_the_oldest_invoice_first_and_the_rest_waits_as_credit():
    customer = CustomerFactory()
    newer = issued_invoice(customer, "2999", issued_on=dt.date(2026, 2, 1))
    older = issued_invoice(customer, "2999", issued_on=dt.date(2026, 1, 1))

    payment, _ = cash("RCPT-100", "4000", customer)
    refresh(older, newer, payment)

    assert (older.status, older.amount_paid) == (Invoice.Status.PAID, D("2999.00"))
    assert (newer.status, newer.amount_paid) == (Invoice.Status.PARTIALLY_PAID, D("1001.00"))
    assert payment.amount_allocated == D("4000.00")
    assert list(Allocation.objects.order_by("pk").values_list("invoice_id", "amount")) == [
        (older.pk, D("2999.00")),
        (newer.pk, D("1001.00")),
    ]
    assert JournalEntry.objects.filter(kind="allocation").count() == 2
    assert customer_balance(customer.pk) == D("1998.00")
    assert customer_credit(customer.pk) == 0


def issue(customer, amount):
    """An invoice issued the way billing issues it (which lets existing credit pay it)."""
    draft = billing.create_draft_invoice(customer)
    billing.add_one_off_line(draft, description="Home Fibre 20 Mbps", unit_price=amount, tax_class=TaxClass.INTERNET)
    return billing.issue_invoice(draft)


def test_an_overpayment_becomes_credit_that_the_next_issued_invoice_consumes():
    customer = CustomerFactory()
    issue(customer, "2500")
    payment, _ = cash("RCPT-200", "3000", customer)
    assert customer_credit(customer.pk) == D("500.00")
    assert list(selectors.payments_with_credit(customer.pk)) == [payment]

    next_month = issue(customer, "2500")
    payment.refresh_from_db()

    assert (next_month.amount_paid, next_month.status) == (D("500.00"), Invoice.Status.PARTIALLY_PAID)
    assert payment.unallocated == 0
    assert customer_credit(customer.pk) == 0
    assert customer_balance(customer.pk) == D("2000.00")
    assert services.apply_customer_credit(customer.pk) == []  # nothing left: calling again writes nothing
    assert trial_balance()["balanced"]


def test_crediting_a_paid_invoice_gives_the_money_back_as_credit_for_the_next_invoice():
    customer = CustomerFactory()
    wrong = issue(customer, "2999")
    payment, _ = cash("RCPT-201", "2999", customer)

    billing.issue_credit_note(wrong, reason="billed the wrong plan")
    payment.refresh_from_db()
    assert payment.amount_allocated == 0 and customer_credit(customer.pk) == D("2999.00")
    assert customer_balance(customer.pk) == D("-2999.00")

    right = issue(customer, "1999")
    assert right.status == Invoice.Status.PAID
    assert customer_credit(customer.pk) == D("1000.00")
    assert trial_balance()["balanced"]


def test_credit_is_applied_from_the_oldest_payment_first():
    customer = CustomerFactory()
    old, _ = cash("R-OLD", "300", customer, received_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    new, _ = cash("R-NEW", "300", customer, received_at=dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    invoice = issued_invoice(customer, "400")

    services.apply_customer_credit(customer.pk)
    refresh(old, new, invoice)

    assert (old.amount_allocated, new.amount_allocated) == (D("300.00"), D("100.00"))
    assert invoice.status == Invoice.Status.PAID


# --- reversal -----------------------------------------------------------------------------------


def test_reversing_a_payment_reopens_its_invoices_and_restores_the_balance():
    customer = CustomerFactory()
    invoice = issued_invoice(customer, "2500")
    payment, _ = cash("RCPT-300", "3000", customer)
    assert customer_balance(customer.pk) == D("-500.00")

    services.reverse_payment(payment, reason="cashier keyed the wrong account")
    refresh(invoice, payment)

    assert payment.status == Payment.Status.REVERSED and payment.reversed_at is not None
    assert payment.amount_allocated == 0
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.ISSUED, 0)
    assert customer_balance(customer.pk) == D("2500.00")
    assert customer_credit(customer.pk) == 0
    undo = Allocation.objects.get(amount__lt=0)
    assert undo.amount == D("-2500.00") and undo.reverses.amount == D("2500.00")
    reversal = JournalEntry.objects.get(kind="reversal")
    assert reversal.reverses == payment_entries(payment).get(kind="payment")
    cash_account = Posting.objects.filter(account__code=accounts.CASH).values_list("amount", flat=True)
    assert sum(cash_account) == 0
    assert trial_balance()["balanced"]
    assert AuditEvent.objects.filter(verb="reverse_payment", reason="cashier keyed the wrong account").exists()


def test_a_payment_is_reversed_exactly_once():
    customer = CustomerFactory()
    payment, _ = cash("RCPT-301", "1000", customer)
    services.reverse_payment(payment, reason="duplicate slip")
    entries = JournalEntry.objects.count()

    with pytest.raises(NotAllowed) as refused:
        services.reverse_payment(payment, reason="again")
    assert refused.value.code == "payment_already_reversed"
    assert JournalEntry.objects.count() == entries


def test_a_reversed_receipt_arriving_again_is_not_credited_again():
    customer = CustomerFactory()
    payment, _ = cash("RCPT-302", "1000", customer)
    services.reverse_payment(payment, reason="bounced")

    again, created = cash("RCPT-302", "1000", customer)
    assert not created and again.status == Payment.Status.REVERSED
    assert customer_balance(customer.pk) == 0


def test_a_reversal_needs_a_reason():
    payment, _ = cash("RCPT-303", "1000", CustomerFactory())
    with pytest.raises(ValidationError):
        services.reverse_payment(payment, reason="  ")
    payment.refresh_from_db()
    assert payment.status == Payment.Status.RECEIVED


# --- refunds ------------------------------------------------------------------------------------


def test_unapplied_credit_can_be_refunded_and_is_booked_out_of_the_till():
    customer = CustomerFactory()
    issued_invoice(customer, "2500")
    payment, _ = cash("RCPT-400", "3000", customer)

    refund = services.refund_payment(payment, amount="500", method="cash", reference="RF-1", reason="overpaid")
    payment.refresh_from_db()

    assert refund.amount == D("500.00") and refund.customer == customer
    assert payment.amount_refunded == D("500.00") and payment.unallocated == 0
    assert customer_credit(customer.pk) == 0 and customer_balance(customer.pk) == 0
    entry = JournalEntry.objects.get(kind="refund")
    assert sorted((p.account.code, p.amount) for p in entry.postings.all()) == [
        (accounts.CASH, D("-500.00")),
        (accounts.CUSTOMER_CREDIT, D("500.00")),
    ]
    # the same refund entered twice is one refund
    assert services.refund_payment(payment, amount="500", method="cash", reference="RF-1", reason="x") == refund
    assert Refund.objects.count() == 1


def test_money_already_applied_to_invoices_cannot_be_refunded():
    customer = CustomerFactory()
    issued_invoice(customer, "2500")
    payment, _ = cash("RCPT-401", "3000", customer)

    with pytest.raises(NotAllowed) as refused:
        services.refund_payment(payment, amount="600", method="cash", reference="RF-2", reason="asked")
    assert refused.value.code == "refund_exceeds_credit"
    assert not Refund.objects.exists() and not JournalEntry.objects.filter(kind="refund").exists()


def test_a_refunded_payment_cannot_be_reversed():
    customer = CustomerFactory()
    payment, _ = cash("RCPT-402", "1000", customer)
    services.refund_payment(payment, amount="100", method="mpesa", reference="B2C-1", reason="asked")

    with pytest.raises(NotAllowed) as refused:
        services.reverse_payment(payment, reason="mistake")
    assert refused.value.code == "payment_refunded"
    payment.refresh_from_db()
    assert payment.status == Payment.Status.RECEIVED


# --- suspense -----------------------------------------------------------------------------------


def test_a_payment_nobody_claims_waits_in_suspense_until_staff_match_it():
    customer = CustomerFactory()
    invoice = issued_invoice(customer, "1500")
    payment, _ = services.record_manual_payment(
        method="bank_transfer", reference="FT2601", amount="2000", account_reference="wrong-acc"
    )
    assert payment.status == Payment.Status.UNMATCHED
    assert list(selectors.suspense_queue()) == [payment]
    suspense = Posting.objects.filter(account__code=accounts.SUSPENSE)
    assert sum(p.amount for p in suspense) == D("-2000.00")
    assert customer_balance(customer.pk) == D("1500.00")

    services.match_payment(payment, customer, reason="payer called with the slip")
    refresh(payment, invoice)

    assert payment.status == Payment.Status.RECEIVED and payment.customer == customer
    assert invoice.status == Invoice.Status.PAID
    assert sum(p.amount for p in suspense.all()) == 0
    assert customer_credit(customer.pk) == D("500.00")
    assert not selectors.suspense_queue().exists()
    assert AuditEvent.objects.filter(verb="match_payment").exists()

    with pytest.raises(NotAllowed):
        services.match_payment(payment, CustomerFactory(), reason="oops")


def test_a_matched_suspense_payment_can_still_be_reversed():
    customer = CustomerFactory()
    invoice = issued_invoice(customer, "1500")
    payment, _ = services.record_manual_payment(method="bank_transfer", reference="FT2602", amount="1500")
    services.match_payment(payment, customer, reason="slip")

    services.reverse_payment(payment, reason="the transfer was recalled by the bank")
    invoice.refresh_from_db()

    assert invoice.status == Invoice.Status.ISSUED
    assert customer_balance(customer.pk) == D("1500.00")
    assert JournalEntry.objects.filter(kind="reversal").count() == 2
    assert all(
        sum(Posting.objects.filter(account__code=code).values_list("amount", flat=True)) == 0
        for code in (accounts.BANK, accounts.SUSPENSE, accounts.CUSTOMER_CREDIT)
    )


def test_a_mistaken_suspense_payment_is_reversed_without_a_customer():
    payment, _ = services.record_manual_payment(method="cash", reference="TYPO-1", amount="100")
    services.reverse_payment(payment, reason="keyed twice")
    payment.refresh_from_db()
    assert payment.status == Payment.Status.REVERSED and payment.customer_id is None
    assert not selectors.suspense_queue().exists()
    assert trial_balance()["debit"] == 0


# --- credit notes release paid money ------------------------------------------------------------


def test_releasing_paid_money_from_an_invoice_turns_it_back_into_credit_newest_payment_first():
    customer = CustomerFactory()
    invoice = issued_invoice(customer, "1000")
    first, _ = cash("R-A", "600", customer)
    second, _ = cash("R-B", "400", customer)

    services.release_allocations(invoice, D("500"))
    refresh(invoice, first, second)

    assert invoice.amount_paid == D("500.00") and invoice.status == Invoice.Status.PARTIALLY_PAID
    assert (first.amount_allocated, second.amount_allocated) == (D("500.00"), D("0.00"))
    assert customer_credit(customer.pk) == D("500.00")
    assert customer_balance(customer.pk) == D("0.00")

    with pytest.raises(Exception, match="only 500.00 was paid"):
        services.release_allocations(invoice, D("501"))


# --- reading ------------------------------------------------------------------------------------


def test_a_customer_statement_shows_invoices_and_payments_with_a_running_balance():
    customer = CustomerFactory()
    issued_invoice(customer, "2500")
    cash("RCPT-500", "3000", customer)

    lines = selectors.customer_statement(customer.pk)

    assert [(ln.kind, ln.debit, ln.credit, ln.balance) for ln in lines] == [
        ("Invoice", D("2500.00"), D("0.00"), D("2500.00")),
        ("Payment", D("0.00"), D("3000.00"), D("-500.00")),
    ]
    assert list(selectors.payments_for_customer(customer.pk).values_list("reference", flat=True)) == ["RCPT-500"]


def test_recording_a_payment_is_audited():
    payment, _ = cash("RCPT-600", "100", CustomerFactory())
    event = AuditEvent.objects.get(object_type="payments.payment", object_id=str(payment.pk))
    assert event.verb == "record_payment" and event.after["amount"] == "100.00"

"""The books stay right whatever happens, in whatever order.

A hypothesis state machine issues invoices, records payments (including duplicates and copies
with the wrong amount), credits invoices partly or fully, applies credit, matches suspense
payments, reverses and refunds payments. After every step:
- the ledger balances: every journal entry sums to zero, so the trial balance does too;
- every record is booked exactly once (one payment entry per payment, one allocation entry per
  allocation, one refund entry per refund);
- each invoice's amount_paid equals the sum of its allocations; each payment's amount_allocated
  and amount_refunded equal the sums of its allocations and refunds;
- each customer's balance equals the sum of their postings, and equals what their open invoices
  still owe minus their unapplied credit; their 2200 balance is minus that credit;
- suspense holds exactly the unmatched payments, and each till/clearing account holds exactly the
  money received on it minus what was reversed or refunded from it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from wavu.billing import services as billing
from wavu.billing.models import Invoice
from wavu.core.errors import DomainError, NotAllowed
from wavu.core.tax import TaxClass
from wavu.ledger import accounts
from wavu.ledger.models import JournalEntry, Posting
from wavu.ledger.selectors import customer_balance, customer_credit, trial_balance
from wavu.payments import services
from wavu.payments.models import Allocation, Payment, Refund
from wavu.testing.factories import CustomerFactory

ZERO = Decimal("0.00")
CENT = Decimal("0.01")


def _kes(low: int, high: int):
    return st.integers(min_value=low * 100, max_value=high * 100).map(lambda cents: Decimal(cents).scaleb(-2))


amounts = _kes(1, 3_000)  # invoice totals
# Payments: often a round sum (so copies of a receipt tend to agree), sometimes more than is owed.
payment_amounts = st.one_of(
    st.sampled_from([Decimal("1000.00"), Decimal("2999.00"), Decimal("5000.00")]), _kes(1, 6_000)
)
fractions = st.sampled_from([Decimal("0.01"), Decimal("0.25"), Decimal("0.5"), Decimal("0.99"), Decimal("1")])
references = st.sampled_from(["QK1", "QK2", "QK3", "QK4", "QK5", "QK6"])
channels = st.sampled_from([("cash", ""), ("bank_transfer", ""), ("mpesa", "paybill:123456")])


def _sum(queryset, field="amount") -> Decimal:
    return (queryset.aggregate(s=Sum(field))["s"] or ZERO).quantize(CENT)


class PaymentsAndInvoices(RuleBasedStateMachine):
    invoices = Bundle("invoices")
    payments = Bundle("payments")

    def __init__(self):
        super().__init__()
        # Each run lives in a savepoint of the test's transaction and is rolled back at teardown.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.customers = [CustomerFactory().pk, CustomerFactory().pk]
        self.refund_numbers = iter(range(1, 10_000))

    def teardown(self):
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- things that happen -------------------------------------------------------------------

    @initialize(target=invoices, customer=st.sampled_from([0, 1]), amount=amounts)
    def first_invoice(self, customer, amount):
        return self._issue(customer, amount, TaxClass.INTERNET)

    @rule(
        target=invoices,
        customer=st.sampled_from([0, 1]),
        amount=amounts,
        tax_class=st.sampled_from([TaxClass.INTERNET, TaxClass.STANDARD]),
    )
    def issue_invoice(self, customer, amount, tax_class):
        return self._issue(customer, amount, tax_class)

    def _issue(self, customer, amount, tax_class):
        from wavu.customers.models import Customer

        draft = billing.create_draft_invoice(Customer.objects.get(pk=self.customers[customer]))
        billing.add_one_off_line(draft, description="Service", unit_price=amount, tax_class=tax_class)
        return billing.issue_invoice(draft).pk

    @rule(
        target=payments,
        customer=st.sampled_from([0, 1, None]),
        channel=channels,
        reference=references,
        amount=payment_amounts,
    )
    def receive_payment(self, customer, channel, reference, amount):
        method, source = channel
        customer_id = None if customer is None else self.customers[customer]
        known = Payment.objects.filter(method=method, source=source, reference=reference).first()
        entries = JournalEntry.objects.count()
        if known is None:
            payment, created = services.record_payment(
                method=method, source=source, reference=reference, amount=amount, customer=customer_id
            )
            assert created and payment.amount == amount
            event("new payment")
            assert payment.status == (Payment.Status.RECEIVED if customer_id else Payment.Status.UNMATCHED)
            return payment.pk
        compatible = known.amount == amount and (
            customer_id is None or known.customer_id is None or known.customer_id == customer_id
        )
        if compatible:
            payment, created = services.record_payment(
                method=method, source=source, reference=reference, amount=amount, customer=customer_id
            )
            assert not created and payment.pk == known.pk
            event("duplicate receipt: already processed")
        else:
            event("duplicate receipt: mismatch refused")
            with pytest.raises(services.DuplicateReferenceMismatch):
                services.record_payment(
                    method=method, source=source, reference=reference, amount=amount, customer=customer_id
                )
        assert JournalEntry.objects.count() == entries  # a copy of a receipt books nothing
        return known.pk

    @rule(payment=payments)
    def the_same_receipt_arrives_again(self, payment):
        known = Payment.objects.get(pk=payment)
        entries, allocations = JournalEntry.objects.count(), Allocation.objects.count()
        again, created = services.record_payment(
            method=known.method, source=known.source, reference=known.reference, amount=known.amount
        )
        assert not created and again.pk == known.pk
        assert (JournalEntry.objects.count(), Allocation.objects.count()) == (entries, allocations)

    @rule(invoice=invoices, fraction=fractions)
    def credit_invoice(self, invoice, fraction):
        invoice = Invoice.objects.get(pk=invoice)
        left = invoice.total - invoice.amount_credited
        if invoice.status == Invoice.Status.VOID:
            with pytest.raises(DomainError):
                billing.issue_credit_note(invoice, reason="test", amount=None)
            return
        amount = None if fraction == 1 else max(CENT, (left * fraction).quantize(CENT))
        paid_before = invoice.amount_paid
        note = billing.issue_credit_note(invoice, reason="customer complaint", amount=amount)
        invoice.refresh_from_db()
        event("credit note " + ("releasing paid money" if invoice.amount_paid < paid_before else "within outstanding"))
        assert note.total == (left if amount is None else amount)

    @rule(payment=payments, customer=st.sampled_from([0, 1]))
    def match_from_suspense(self, payment, customer):
        payment = Payment.objects.get(pk=payment)
        customer_id = self.customers[customer]
        if payment.status == Payment.Status.UNMATCHED:
            matched = services.match_payment(payment, customer_id, reason="payer called")
            assert matched.customer_id == customer_id and matched.status == Payment.Status.RECEIVED
            event("matched from suspense")
        elif payment.status == Payment.Status.RECEIVED and payment.customer_id == customer_id:
            services.match_payment(payment, customer_id, reason="again")  # a no-op
        else:
            with pytest.raises(NotAllowed):
                services.match_payment(payment, customer_id, reason="wrong")

    @rule(payment=payments)
    def reverse_payment(self, payment):
        payment = Payment.objects.get(pk=payment)
        if payment.status == Payment.Status.REVERSED or payment.amount_refunded > 0:
            entries = JournalEntry.objects.count()
            with pytest.raises(NotAllowed):
                services.reverse_payment(payment, reason="mistake")
            assert JournalEntry.objects.count() == entries
            return
        event("reversed " + ("with allocations" if payment.amount_allocated else "without allocations"))
        services.reverse_payment(payment, reason="mistake")
        payment.refresh_from_db()
        assert payment.status == Payment.Status.REVERSED and payment.amount_allocated == 0

    @rule(payment=payments, fraction=fractions)
    def refund_credit(self, payment, fraction):
        payment = Payment.objects.get(pk=payment)
        available = payment.unallocated
        reference = f"RF-{next(self.refund_numbers)}"
        if payment.status != Payment.Status.RECEIVED or available <= 0:
            with pytest.raises((NotAllowed, ValidationError)):
                services.refund_payment(
                    payment, amount=max(CENT, available), method="cash", reference=reference, reason="asked"
                )
            return
        amount = max(CENT, (available * fraction).quantize(CENT))
        services.refund_payment(payment, amount=amount, method="mpesa", reference=reference, reason="asked")
        event("refunded")

    @rule(customer=st.sampled_from([0, 1]))
    def apply_credit(self, customer):
        services.apply_customer_credit(self.customers[customer])

    # --- what must always hold ------------------------------------------------------------------
    # One read of the books per step (a handful of queries), then every check in exact Decimal arithmetic.

    @invariant()
    def the_books_are_right(self):
        books = Books.read()
        self.the_ledger_balances(books)
        self.every_record_is_booked_once(books)
        self.settlement_columns_equal_their_allocations(books)
        self.customer_balances_are_what_they_owe_minus_their_credit(books)
        self.money_accounts_hold_what_was_received_and_kept(books)
        self.invoice_status_follows_its_settlement(books)

    def the_ledger_balances(self, books):
        assert trial_balance()["balanced"]
        per_entry: dict[int, Decimal] = defaultdict(Decimal)
        for entry_id, _, _, amount in books.postings:
            per_entry[entry_id] += amount
        assert set(per_entry) == {e["id"] for e in books.entries}
        assert all(total == 0 for total in per_entry.values())

    def every_record_is_booked_once(self, books):
        booked = Counter((e["kind"], e["source_type"]) for e in books.entries)
        assert booked["payment", "payments.payment"] == len(books.payments)
        assert booked["allocation", "payments.allocation"] == len(books.allocations)
        assert booked["refund", "payments.refund"] == len(books.refunds)
        reversed_count = sum(1 for p in books.payments if p.status == Payment.Status.REVERSED)
        assert booked["reversal", "payments.payment"] == reversed_count

    def settlement_columns_equal_their_allocations(self, books):
        paid: dict[int, Decimal] = defaultdict(Decimal)
        allocated: dict[int, Decimal] = defaultdict(Decimal)
        refunded: dict[int, Decimal] = defaultdict(Decimal)
        for invoice_id, payment_id, amount in books.allocations:
            paid[invoice_id] += amount
            allocated[payment_id] += amount
        for payment_id, amount in books.refunds:
            refunded[payment_id] += amount
        for invoice in books.invoices:
            assert invoice.amount_paid == paid[invoice.pk]
            assert ZERO <= invoice.amount_paid + invoice.amount_credited <= invoice.total
        for payment in books.payments:
            assert payment.amount_allocated == allocated[payment.pk]
            assert payment.amount_refunded == refunded[payment.pk]
            assert ZERO <= payment.amount_allocated + payment.amount_refunded <= payment.amount
            if payment.status != Payment.Status.RECEIVED:
                assert payment.amount_allocated == 0

    def customer_balances_are_what_they_owe_minus_their_credit(self, books):
        customer_accounts = (accounts.ACCOUNTS_RECEIVABLE, accounts.CUSTOMER_CREDIT)
        for customer_id in self.customers:
            postings = sum(
                (a for _, code, c, a in books.postings if c == customer_id and code in customer_accounts), ZERO
            )
            owed = sum((i.outstanding for i in books.invoices if i.customer_id == customer_id), ZERO)
            credit = sum(
                (p.unallocated for p in books.payments if p.customer_id == customer_id and p.status == "received"),
                ZERO,
            )
            in_2200 = sum(
                (a for _, code, c, a in books.postings if c == customer_id and code == accounts.CUSTOMER_CREDIT), ZERO
            )
            assert customer_balance(customer_id) == postings == owed - credit
            assert customer_credit(customer_id) == -in_2200 == credit

    def money_accounts_hold_what_was_received_and_kept(self, books):
        balance: dict[str, Decimal] = defaultdict(Decimal)
        for _, code, _, amount in books.postings:
            balance[code] += amount
        expected: dict[str, Decimal] = defaultdict(Decimal)
        for payment in books.payments:
            if payment.status == Payment.Status.UNMATCHED:
                expected[accounts.SUSPENSE] -= payment.amount
            if payment.status != Payment.Status.REVERSED:
                expected[services.METHOD_ACCOUNT[payment.method]] += payment.amount
        for refund in Refund.objects.all():
            expected[services.METHOD_ACCOUNT[refund.method]] -= refund.amount
        for code in (*set(services.METHOD_ACCOUNT.values()), accounts.SUSPENSE):
            assert balance[code] == expected[code], code

    def invoice_status_follows_its_settlement(self, books):
        for invoice in books.invoices:
            if invoice.amount_credited == invoice.total:
                assert invoice.status == Invoice.Status.VOID
            elif invoice.outstanding == 0:
                assert invoice.status == Invoice.Status.PAID
            elif invoice.amount_paid + invoice.amount_credited > 0:
                assert invoice.status == Invoice.Status.PARTIALLY_PAID
            else:
                assert invoice.status == Invoice.Status.ISSUED


@dataclass
class Books:
    postings: list  # (entry id, account code, customer id, amount)
    entries: list
    invoices: list
    payments: list
    allocations: list  # (invoice id, payment id, amount)
    refunds: list  # (payment id, amount)

    @classmethod
    def read(cls) -> Books:
        return cls(
            postings=list(Posting.objects.values_list("entry_id", "account__code", "customer_id", "amount")),
            entries=list(JournalEntry.objects.values("id", "kind", "source_type")),
            invoices=list(Invoice.objects.exclude(status=Invoice.Status.DRAFT)),
            payments=list(Payment.objects.all()),
            allocations=list(Allocation.objects.values_list("invoice_id", "payment_id", "amount")),
            refunds=list(Refund.objects.values_list("payment_id", "amount")),
        )


@pytest.mark.django_db
def test_the_books_stay_balanced_through_any_mix_of_invoices_payments_credits_reversals_and_refunds():
    run_state_machine_as_test(
        PaymentsAndInvoices,
        settings=settings(
            max_examples=30,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )

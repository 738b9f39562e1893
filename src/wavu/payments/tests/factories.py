"""Set-up helpers for payment tests.

`issued_invoice` stands in for billing's issue flow where a test only needs "an open invoice of
KES X": it writes an issued invoice and its journal entry (Dr 1100 receivables / Cr revenue) the
way billing books one, so the ledger stays balanced. Scenario tests that involve credit notes use
`wavu.billing.services` itself.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from wavu.billing.models import Invoice
from wavu.core import clock
from wavu.ledger import accounts
from wavu.ledger import services as ledger
from wavu.ledger.models import JournalEntry

_numbers = itertools.count(1)


def issued_invoice(customer, total, *, issued_on: dt.date | None = None) -> Invoice:
    total = Decimal(str(total))
    issued_on = issued_on or clock.today()
    invoice = Invoice.objects.create(
        customer=customer,
        series="TST",
        number=f"TST-{next(_numbers):06d}",
        status=Invoice.Status.ISSUED,
        issue_date=issued_on,
        issued_at=clock.start_of_day(issued_on),
        due_date=issued_on + dt.timedelta(days=14),
        buyer_name=customer.name,
        buyer_account_number=customer.account_number,
        net_total=total,
        total=total,
        created_at=clock.now(),
    )
    ledger.post_entry(
        kind=JournalEntry.Kind.INVOICE,
        source=invoice,
        lines=[
            ledger.debit(accounts.ACCOUNTS_RECEIVABLE, total, customer.pk),
            ledger.credit(accounts.REVENUE_INTERNET, total),
        ],
        memo=f"Invoice {invoice.number}",
    )
    return invoice

"""Immutability is enforced by the database, whatever code path tries to rewrite the books."""

import pytest
from django.db import IntegrityError, connection, transaction

from wavu.core import audit
from wavu.core.db import declared_row_protections, drop_row_protections, install_row_protections
from wavu.core.models import AuditEvent
from wavu.ledger import accounts
from wavu.ledger.models import JournalEntry, Posting
from wavu.ledger.services import credit, debit, post_entry
from wavu.testing.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _trigger_names():
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        else:
            cursor.execute("SELECT DISTINCT trigger_name FROM information_schema.triggers")
        return {row[0] for row in cursor.fetchall()}


def test_every_declared_protection_is_installed_after_migrate():
    declared = {p.name for p in declared_row_protections()}
    assert {"invoice_issued_frozen", "payment_receipt_frozen", "ledger_posting_no_update"} <= declared
    assert {"audit_event_no_update", "audit_event_no_delete"} <= declared
    assert declared <= _trigger_names()


def test_reinstalling_protections_is_idempotent():
    drop_row_protections()
    assert not ({p.name for p in declared_row_protections()} & _trigger_names())
    install_row_protections()
    install_row_protections()
    assert {p.name for p in declared_row_protections()} <= _trigger_names()


def test_a_journal_entry_cannot_be_edited_or_deleted_even_with_raw_queryset_updates():
    customer = CustomerFactory()
    entry = post_entry(
        kind=JournalEntry.Kind.ADJUSTMENT,
        source=customer,
        memo="opening balance",
        lines=[debit(accounts.ACCOUNTS_RECEIVABLE, 100, customer.pk), credit(accounts.REVENUE_INTERNET, 100)],
    )
    for attempt in (
        lambda: Posting.objects.filter(entry=entry).update(amount=1),
        lambda: JournalEntry.objects.filter(pk=entry.pk).update(memo="edited"),
        lambda: Posting.objects.filter(entry=entry).delete(),
    ):
        with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
            attempt()
    assert sorted(Posting.objects.filter(entry=entry).values_list("amount", flat=True)) == [-100, 100]
    assert JournalEntry.objects.get(pk=entry.pk).memo == "opening balance"


def test_an_unbalanced_entry_is_refused_and_nothing_is_written():
    from wavu.ledger.services import UnbalancedEntry

    customer = CustomerFactory()
    with pytest.raises(UnbalancedEntry):
        post_entry(
            kind=JournalEntry.Kind.ADJUSTMENT,
            source=customer,
            memo="wrong",
            lines=[debit(accounts.ACCOUNTS_RECEIVABLE, 100, customer.pk), credit(accounts.REVENUE_INTERNET, 99)],
        )
    assert not JournalEntry.objects.exists() and not Posting.objects.exists()


def test_the_audit_trail_refuses_raw_sql_updates_and_deletes_and_keeps_the_event_as_written():
    customer = CustomerFactory()
    with audit.acting_as("job:test"):
        event = audit.record(customer, AuditEvent.Action.UPDATE, before={"name": "Old"}, after={"name": "New"})
    for sql in (
        "UPDATE core_auditevent SET actor_label = 'someone else', after = NULL WHERE id = %s",
        "DELETE FROM core_auditevent WHERE id = %s",
    ):
        refused = pytest.raises(IntegrityError, match="immutable: the audit trail is append-only")
        with refused, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [event.pk])
    kept = AuditEvent.objects.get(pk=event.pk)
    assert (kept.actor_label, kept.before, kept.after) == ("job:test", {"name": "Old"}, {"name": "New"})


def test_the_audit_trail_refuses_queryset_updates_and_deletes_too():
    with audit.acting_as("job:test"):
        audit.record(CustomerFactory(), AuditEvent.Action.CREATE)
    for attempt in (lambda: AuditEvent.objects.update(reason="edited"), lambda: AuditEvent.objects.all().delete()):
        with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
            attempt()
    assert AuditEvent.objects.filter(reason="").count() == AuditEvent.objects.count() >= 1

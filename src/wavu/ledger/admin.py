"""Admin for the ledger: the chart of accounts and the journal, read-only (entries are append-only)."""

from django.contrib import admin

from wavu.core.admin import ReadOnlyAdmin, ReadOnlyInline

from .models import Account, JournalEntry, Posting


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("code", "name", "type", "is_customer_subledger")
    list_filter = ("type", "is_customer_subledger")
    search_fields = ("code", "name")
    readonly_fields = ("code", "name", "type", "is_customer_subledger")


class PostingInline(ReadOnlyInline):
    model = Posting
    fields = ("account", "customer", "amount")
    readonly_fields = fields


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "posted_at", "kind", "memo", "source_type", "source_id", "actor_label")
    list_filter = ("kind", "source_type")
    search_fields = ("memo", "source_id", "actor_label")
    date_hierarchy = "posted_at"
    readonly_fields = [f.name for f in JournalEntry._meta.fields]
    inlines = [PostingInline]

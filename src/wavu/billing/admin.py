"""Admin for invoices and credit notes: records are read-only here; changes go through the services.

Drafts are built through the API (or the billing run); the admin can issue or discard selected
drafts (calling `issue_invoice` / `discard_draft_invoice`) and shows each document's PDF.
Issued invoices and credit notes are never added, changed or deleted in the admin. Billing runs
(with the services they flagged), dunning notices and promises to pay are read-only records of
what the jobs and staff did; a promise is granted through the API (`grant_promise_to_pay`).
"""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from wavu.core.admin import ReadOnlyAdmin, ReadOnlyInline
from wavu.core.errors import DomainError

from . import services
from .models import (
    BillingRun,
    BillingRunFlag,
    CreditNote,
    CreditNoteLine,
    DunningNotice,
    Invoice,
    InvoiceLine,
    PaymentPromise,
)
from .pdf import render_credit_note_pdf, render_invoice_pdf


def _message(exc) -> str:
    return getattr(exc, "message", None) or "; ".join(getattr(exc, "messages", [str(exc)]))


class InvoiceLineInline(ReadOnlyInline):
    model = InvoiceLine
    fields = (
        "position",
        "kind",
        "description",
        "quantity",
        "unit_price",
        "net",
        "excise",
        "vat",
        "gross",
        "tax_band",
        "vat_rate",
        "excise_rate",
    )
    readonly_fields = fields


class CreditNoteLineInline(ReadOnlyInline):
    model = CreditNoteLine
    fields = ("invoice_line", "description", "net", "excise", "vat", "gross")
    readonly_fields = fields


class CreditNoteOfInvoiceInline(ReadOnlyInline):
    model = CreditNote
    fields = ("number", "issue_date", "reason", "total")
    readonly_fields = fields
    show_change_link = True


class PdfLinkMixin:
    """A read-only "PDF" column and the admin URL that serves it."""

    pdf_renderer = None

    def get_urls(self):
        opts = self.model._meta
        own = [
            path(
                "<int:object_id>/pdf/",
                self.admin_site.admin_view(self.pdf_view),
                name=f"{opts.app_label}_{opts.model_name}_pdf",
            )
        ]
        return own + super().get_urls()

    def pdf_view(self, request, object_id):
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        obj = get_object_or_404(self.model, pk=object_id)
        response = HttpResponse(type(self).pdf_renderer(obj), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{obj.number or f"draft-{obj.pk}"}.pdf"'
        return response

    @admin.display(description="PDF")
    def pdf_link(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        opts = self.model._meta
        return format_html(
            '<a href="{}">PDF</a>', reverse(f"admin:{opts.app_label}_{opts.model_name}_pdf", args=[obj.pk])
        )


@admin.register(Invoice)
class InvoiceAdmin(PdfLinkMixin, admin.ModelAdmin):
    pdf_renderer = render_invoice_pdf
    list_display = (
        "__str__",
        "customer",
        "status",
        "issue_date",
        "due_date",
        "total",
        "amount_paid",
        "amount_credited",
        "outstanding_amount",
        "pdf_link",
    )
    list_filter = ("status", "series", "currency", "issue_date")
    search_fields = ("number", "customer__name", "customer__account_number", "buyer_name", "buyer_pin")
    date_hierarchy = "issue_date"
    list_select_related = ("customer",)
    readonly_fields = [f.name for f in Invoice._meta.fields] + ["outstanding_amount", "pdf_link"]
    inlines = [InvoiceLineInline, CreditNoteOfInvoiceInline]
    actions = ["issue_selected", "discard_selected"]

    @admin.display(description="Outstanding")
    def outstanding_amount(self, obj):
        return obj.outstanding

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # drafts change through the API and services; issued invoices never change

    def has_delete_permission(self, request, obj=None):
        return False  # drafts are discarded with the action below (through the service)

    def _for_each(self, request, queryset, service, done_text):
        done = 0
        for invoice in queryset.order_by("pk"):
            try:
                service(invoice)
                done += 1
            except (DomainError, ValidationError) as exc:
                self.message_user(request, f"{invoice}: {_message(exc)}", level=messages.ERROR)
        if done:
            self.message_user(request, done_text.format(done), level=messages.SUCCESS)

    def has_issue_permission(self, request):
        return request.user.has_perm("billing.change_invoice")

    def has_discard_permission(self, request):
        return request.user.has_perm("billing.delete_invoice")

    @admin.action(description="Issue selected drafts", permissions=["issue"])
    def issue_selected(self, request, queryset):
        self._for_each(request, queryset, services.issue_invoice, "Issued {} invoice(s).")

    @admin.action(description="Discard selected drafts", permissions=["discard"])
    def discard_selected(self, request, queryset):
        self._for_each(request, queryset, services.discard_draft_invoice, "Discarded {} draft(s).")


@admin.register(CreditNote)
class CreditNoteAdmin(PdfLinkMixin, admin.ModelAdmin):
    pdf_renderer = render_credit_note_pdf
    list_display = ("number", "invoice", "customer", "issue_date", "total", "reason", "pdf_link")
    list_filter = ("issue_date", "currency")
    search_fields = ("number", "invoice__number", "customer__name", "customer__account_number", "reason")
    date_hierarchy = "issue_date"
    list_select_related = ("invoice", "customer")
    readonly_fields = [f.name for f in CreditNote._meta.fields] + ["pdf_link"]
    inlines = [CreditNoteLineInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class BillingRunFlagInline(ReadOnlyInline):
    model = BillingRunFlag
    fields = ("subscription", "code", "reason", "created_at")
    readonly_fields = fields


@admin.register(BillingRun)
class BillingRunAdmin(ReadOnlyAdmin):
    list_display = (
        "run_date",
        "status",
        "billed_count",
        "skipped_count",
        "flagged_count",
        "total_amount",
        "attempts",
        "started_at",
        "finished_at",
    )
    list_filter = ("status",)
    date_hierarchy = "run_date"
    readonly_fields = [f.name for f in BillingRun._meta.fields]
    inlines = [BillingRunFlagInline]


@admin.register(DunningNotice)
class DunningNoticeAdmin(ReadOnlyAdmin):
    list_display = ("invoice", "customer", "stage", "offset_days", "created_at")
    list_filter = ("stage", "offset_days")
    search_fields = ("invoice__number", "invoice__customer__name", "invoice__customer__account_number")
    date_hierarchy = "created_at"
    list_select_related = ("invoice__customer",)
    readonly_fields = [f.name for f in DunningNotice._meta.fields]

    @admin.display(description="Customer")
    def customer(self, obj):
        return obj.invoice.customer


@admin.register(PaymentPromise)
class PaymentPromiseAdmin(ReadOnlyAdmin):
    """Read-only: a promise is granted through the API, which applies the rules (`grant_promise_to_pay`)."""

    list_display = ("subscription", "period_start", "until", "granted_by", "created_at", "reason")
    list_filter = ("until",)
    search_fields = ("subscription__username", "subscription__customer__account_number", "reason", "granted_by")
    date_hierarchy = "created_at"
    list_select_related = ("subscription__plan",)
    readonly_fields = [f.name for f in PaymentPromise._meta.fields]

"""Admin for payments: the records are read-only; staff corrections go through the services.

Reversing is offered as an admin action that asks for a reason and calls
`services.reverse_payment` for each selected payment.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse

from wavu.core.admin import ReadOnlyAdmin, ReadOnlyInline
from wavu.core.errors import DomainError

from . import services
from .models import Allocation, Payment, Refund


class AllocationInline(ReadOnlyInline):
    model = Allocation
    fk_name = "payment"
    fields = ("invoice", "amount", "created_at", "reverses")
    readonly_fields = fields


class RefundInline(ReadOnlyInline):
    model = Refund
    fields = ("amount", "method", "reference", "refunded_at", "reason", "recorded_by")
    readonly_fields = fields


class ReverseForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.TextInput(attrs={"size": 80}))


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "received_at",
        "method",
        "source",
        "reference",
        "customer",
        "amount",
        "amount_allocated",
        "amount_refunded",
        "status",
    )
    list_filter = ("status", "method", "currency")
    search_fields = ("reference", "payer_name", "payer_phone", "account_reference", "customer__account_number")
    date_hierarchy = "received_at"
    list_select_related = ("customer",)
    readonly_fields = [f.name for f in Payment._meta.fields]
    inlines = [AllocationInline, RefundInline]
    actions = ["reverse_selected"]

    @admin.action(description="Reverse selected payments (asks for a reason)")
    def reverse_selected(self, request, queryset):
        if "apply" in request.POST:
            form = ReverseForm(request.POST)
            if form.is_valid():
                done = 0
                for payment in queryset.order_by("pk"):
                    try:
                        services.reverse_payment(payment, reason=form.cleaned_data["reason"])
                        done += 1
                    except (DomainError, ValidationError) as exc:
                        message = getattr(exc, "message", None) or "; ".join(exc.messages)
                        self.message_user(request, f"{payment}: {message}", level=messages.ERROR)
                if done:
                    self.message_user(request, f"Reversed {done} payment(s).", level=messages.SUCCESS)
                return None
        else:
            form = ReverseForm()
        return TemplateResponse(
            request,
            "admin/payments/reverse_payments.html",
            {
                **self.admin_site.each_context(request),
                "title": "Reverse payments",
                "payments": queryset,
                "form": form,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


@admin.register(Allocation)
class AllocationAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "payment", "invoice", "amount", "reverses")
    search_fields = ("payment__reference", "invoice__number")
    list_select_related = ("payment", "invoice")
    readonly_fields = [f.name for f in Allocation._meta.fields]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("refunded_at", "reference", "method", "customer", "payment", "amount", "reason")
    list_filter = ("method",)
    search_fields = ("reference", "payment__reference", "customer__account_number", "reason")
    list_select_related = ("customer", "payment")
    readonly_fields = [f.name for f in Refund._meta.fields]

"""Admin for hotspot vouchers: issue a batch (through `hotspot.services.issue_batch`), print it or
export it as CSV, revoke batches or single vouchers (audited). Issued batches and vouchers are
otherwise read-only: their services and RADIUS rows follow from them."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from wavu.catalog.models import Plan
from wavu.core import audit
from wavu.core.db import copy_field_values
from wavu.core.errors import DomainError

from . import services
from .models import Voucher, VoucherBatch
from .printing import batch_csv, render_batch_html


class VoucherBatchForm(forms.ModelForm):
    price = forms.DecimalField(max_digits=12, decimal_places=2, required=False, help_text="empty: the plan's price")
    device_limit = forms.IntegerField(required=False, help_text="empty: the plan's devices")

    class Meta:
        model = VoucherBatch
        fields = ["plan", "quantity", "price", "code_length", "sold_by", "reseller", "note", "mac_lock", "device_limit"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["plan"].queryset = Plan.objects.filter(
            kind=Plan.Kind.HOTSPOT, hotspot_starts=Plan.HotspotStart.FIRST_LOGIN, is_active=True
        )

    def clean(self):
        data = super().clean()
        if not self.errors:
            try:
                services.validate_batch(**{k: data.get(k) for k in self.Meta.fields if k != "mac_lock"})
            except ValidationError as exc:
                raise ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages) from None
            except DomainError as exc:
                raise ValidationError(exc.message) from None
        return data

    def _post_clean(self):  # the service builds the batch; no model validation of a half-made instance
        pass


@admin.register(VoucherBatch)
class VoucherBatchAdmin(admin.ModelAdmin):
    form = VoucherBatchForm
    list_display = ("id", "plan", "quantity", "price", "sold_by", "mac_lock", "device_limit", "created_at", "links")
    list_filter = ("plan", "mac_lock")
    search_fields = ("sold_by", "note")
    actions = ["revoke_batches"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="print")
    def links(self, obj):
        return format_html(
            '<a href="{}" target="_blank">print</a> · <a href="{}">CSV</a>',
            reverse("admin:hotspot_voucherbatch_print", args=[obj.pk]),
            reverse("admin:hotspot_voucherbatch_export", args=[obj.pk]),
        )

    def get_urls(self):
        own = [
            path("<int:pk>/print/", self.admin_site.admin_view(self.print_view), name="hotspot_voucherbatch_print"),
            path("<int:pk>/export/", self.admin_site.admin_view(self.export_view), name="hotspot_voucherbatch_export"),
        ]
        return own + super().get_urls()

    def print_view(self, request, pk):
        return HttpResponse(render_batch_html(get_object_or_404(VoucherBatch, pk=pk)))

    def export_view(self, request, pk):
        batch = get_object_or_404(VoucherBatch, pk=pk)
        response = HttpResponse(batch_csv(batch), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="vouchers-batch-{batch.pk}.csv"'
        return response

    def save_model(self, request, obj, form, change):
        data = {k: form.cleaned_data.get(k) for k in VoucherBatchForm.Meta.fields}
        with audit.acting_as(f"user:{request.user.get_username()}", user=request.user):
            batch = services.issue_batch(**data)
        copy_field_values(obj, batch)

    def save_related(self, request, form, formsets, change):
        pass

    @admin.action(description="Revoke every voucher of the selected batches")
    def revoke_batches(self, request, queryset):
        with audit.acting_as(f"user:{request.user.get_username()}", user=request.user):
            for batch in queryset.order_by("pk"):
                try:
                    count = services.revoke_batch(batch, reason="revoked in the admin")
                    self.message_user(request, f"Batch {batch.pk}: {count} voucher(s) revoked.")
                except DomainError as exc:
                    self.message_user(request, exc.message, messages.WARNING)


@admin.register(Voucher)
class VoucherAdmin(admin.ModelAdmin):
    list_display = ("code", "batch", "status", "first_used_at", "locked_mac", "revoked_at")
    list_filter = ("status",)
    search_fields = ("code",)
    list_select_related = ("batch",)
    readonly_fields = ("code", "batch", "status", "subscription", "first_used_at", "locked_mac", "revoked_at")
    actions = ["revoke_vouchers"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return obj is None

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected vouchers")
    def revoke_vouchers(self, request, queryset):
        with audit.acting_as(f"user:{request.user.get_username()}", user=request.user):
            for voucher in queryset.order_by("pk"):
                try:
                    services.revoke_voucher(voucher, reason="revoked in the admin")
                except DomainError as exc:
                    self.message_user(request, exc.message, messages.WARNING)
        self.message_user(request, "Done.")

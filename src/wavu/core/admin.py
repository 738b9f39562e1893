"""Admin for core records: tax rates (added through the service, never edited) and the audit trail (read-only)."""

from django.contrib import admin
from django.core.exceptions import ValidationError

from .models import AuditEvent, Sequence, TaxRate
from .services import add_tax_rate


class ReadOnlyMixin:
    """Posted records (financial records, audit events): viewable, never added, changed or deleted here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    pass


class ReadOnlyInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


@admin.register(TaxRate)
class TaxRateAdmin(admin.ModelAdmin):
    list_display = ("tax_class", "kind", "rate", "valid_from", "source")
    list_filter = ("tax_class", "kind")
    ordering = ("tax_class", "kind", "-valid_from")

    def get_readonly_fields(self, request, obj=None):
        # A rate in force may already be on issued invoices: add a new row instead of editing.
        return ("tax_class", "kind", "rate", "valid_from", "source") if obj else ()

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            saved = add_tax_rate(
                tax_class=obj.tax_class, kind=obj.kind, rate=obj.rate, valid_from=obj.valid_from, source=obj.source
            )
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), level="error")
            return
        obj.pk = saved.pk

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor_label", "source_ip", "action", "verb", "object_type", "object_repr")
    list_filter = ("action", "object_type", "verb")
    search_fields = ("object_repr", "object_id", "actor_label", "reason")
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]


@admin.register(Sequence)
class SequenceAdmin(admin.ModelAdmin):
    list_display = ("name", "next_value")
    readonly_fields = ("name", "next_value")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

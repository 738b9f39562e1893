"""Django admin for customers. Saving goes through `customers.services`, so every edit is
validated (phones and PINs normalised), audited, and accounts are closed rather than deleted."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from wavu.core.errors import DomainError

from . import selectors, services
from .models import Customer


class CustomerAdminForm(forms.ModelForm):
    # Wider than the stored columns: people type "+254 712 345 678" and "a123 456 789b".
    phone = forms.CharField(max_length=32, help_text="any usual form: 0712 345 678, +254712345678")
    alt_phone = forms.CharField(max_length=32, required=False)
    kra_pin = forms.CharField(max_length=20, required=False, label="KRA PIN")

    class Meta:
        model = Customer
        fields = list(services.EDITABLE_FIELDS)

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        if self.instance.pk:
            given = {f: data[f] for f in self.changed_data if f in services.EDITABLE_FIELDS and f in data}
            instance = self.instance.__class__.objects.get(pk=self.instance.pk)
        else:
            given = {f: data[f] for f in services.EDITABLE_FIELDS if f in data}
            instance = None
        try:
            cleaned = services.clean_customer_data(given, instance=instance)
        except ValidationError as exc:
            self.add_error(None, exc)
            return data
        data.update(cleaned)
        self.service_changes = cleaned
        return data


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    form = CustomerAdminForm
    list_display = ("account_number", "name", "phone", "kind", "status", "county", "town", "created_at")
    list_filter = ("status", "kind", "county", "language")
    search_fields = ("name", "phone", "account_number", "kra_pin")
    readonly_fields = ("account_number", "created_at", "updated_at")
    ordering = ("name", "id")
    actions = ["close_selected"]
    fieldsets = (
        (None, {"fields": ("account_number", "kind", "name", "contact_person", "status")}),
        ("Contact", {"fields": ("phone", "alt_phone", "email", "language")}),
        ("Identity and tax", {"fields": ("kra_pin", "national_id")}),
        ("Location", {"fields": ("county", "town", "address", "latitude", "longitude")}),
        (None, {"fields": ("notes", "created_at", "updated_at")}),
    )

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return selectors.search_customers(search_term, queryset), False

    def has_delete_permission(self, request, obj=None):
        return False  # accounts are closed, never deleted: their number is never reused

    def save_model(self, request, obj, form, change):
        changes = getattr(form, "service_changes", {})
        if change:
            services.update_customer(obj, reason="admin", **changes)
        else:
            created = services.create_customer(**changes)
            for field in Customer._meta.concrete_fields:
                setattr(obj, field.attname, getattr(created, field.attname))
            obj._state.adding = False

    @admin.action(description="Close the selected accounts")
    def close_selected(self, request, queryset):
        closed = 0
        for customer in queryset.order_by("pk"):
            try:
                services.close_customer(customer, reason="admin")
                closed += 1
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        if closed:
            self.message_user(request, f"Closed {closed} account(s).", messages.SUCCESS)

"""Django admin for plans and add-ons. Saving goes through `catalog.services` (validated and
audited). Prices are shown read-only; a new price is added as a new version ("Add a new price")
and existing versions are never edited or deleted."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from wavu.core.errors import DomainError

from . import services
from .models import AddOn, AddOnPrice, Plan, PlanPrice


class _ServiceForm(forms.ModelForm):
    """Runs the service's validation in `clean` so errors show on the form, not as a 500."""

    service_fields: tuple[str, ...] = ()

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        if self.instance.pk:
            given = {f: data[f] for f in self.changed_data if f in self.service_fields and f in data}
            instance = type(self.instance).objects.get(pk=self.instance.pk)
        else:
            given = {f: data[f] for f in self.service_fields if f in data}
            instance = None
        try:
            self.service_changes = self._check(given, instance=instance)
        except ValidationError as exc:
            self.add_error(None, exc)
        return data


class PlanAdminForm(_ServiceForm):
    service_fields = services.PLAN_FIELDS

    class Meta:
        model = Plan
        fields = list(services.PLAN_FIELDS)

    _check = staticmethod(services.clean_plan_data)


class AddOnAdminForm(_ServiceForm):
    service_fields = services.ADDON_FIELDS

    class Meta:
        model = AddOn
        fields = list(services.ADDON_FIELDS)

    _check = staticmethod(services.clean_addon_data)


class _PriceHistoryInline(admin.TabularInline):
    extra = 0
    can_delete = False
    fields = ("amount", "currency", "valid_from", "created_at")
    readonly_fields = fields
    verbose_name_plural = "Price versions (never edited; add a new one below)"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class _NewPriceForm(forms.ModelForm):
    class Meta:
        fields = ("amount", "valid_from")

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        if amount is not None and amount < 0:
            raise ValidationError("A price cannot be negative.")
        return amount


class _NewPriceInline(admin.TabularInline):
    """Empty rows for adding a price version; saved through the service (see save_formset)."""

    extra = 1
    can_delete = False
    fields = ("amount", "valid_from")
    verbose_name = "new price"
    verbose_name_plural = "Add a new price"

    def get_queryset(self, request):
        return super().get_queryset(request).none()

    def has_change_permission(self, request, obj=None):
        return False


class PlanPriceHistoryInline(_PriceHistoryInline):
    model = PlanPrice


class NewPlanPriceForm(_NewPriceForm):
    class Meta(_NewPriceForm.Meta):
        model = PlanPrice


class NewPlanPriceInline(_NewPriceInline):
    model = PlanPrice
    form = NewPlanPriceForm


class AddOnPriceHistoryInline(_PriceHistoryInline):
    model = AddOnPrice


class NewAddOnPriceForm(_NewPriceForm):
    class Meta(_NewPriceForm.Meta):
        model = AddOnPrice


class NewAddOnPriceInline(_NewPriceInline):
    model = AddOnPrice
    form = NewAddOnPriceForm


class _CatalogAdmin(admin.ModelAdmin):
    readonly_fields = ("created_at", "updated_at")
    search_fields = ("name", "code")
    create = staticmethod(lambda **fields: None)
    update = staticmethod(lambda obj, **changes: None)
    set_price = staticmethod(lambda obj, amount, **kwargs: None)

    def has_delete_permission(self, request, obj=None):
        return False  # retire with "is active" off; invoices and subscriptions point at it

    def save_model(self, request, obj, form, change):
        changes = getattr(form, "service_changes", {})
        if change:
            self.update(obj, reason="admin", **changes)
        else:
            created = self.create(**changes)
            for field in type(obj)._meta.concrete_fields:
                setattr(obj, field.attname, getattr(created, field.attname))
            obj._state.adding = False

    def save_formset(self, request, form, formset, change):
        if formset.model not in (PlanPrice, AddOnPrice):
            return super().save_formset(request, form, formset, change)
        for price_form in formset.forms:
            data = getattr(price_form, "cleaned_data", None) or {}
            if not price_form.has_changed() or data.get("amount") is None:
                continue
            try:
                self.set_price(form.instance, data["amount"], valid_from=data.get("valid_from"), reason="admin")
            except (ValidationError, DomainError) as exc:
                message = exc.message if isinstance(exc, DomainError) else "; ".join(exc.messages)
                self.message_user(request, f"Price not changed: {message}", level="error")
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []


@admin.register(Plan)
class PlanAdmin(_CatalogAdmin):
    form = PlanAdminForm
    list_display = ("name", "code", "kind", "validity_count", "validity_unit", "download_kbps", "upload_kbps")
    list_display += ("technology", "sold_on_portal", "is_active")
    list_filter = ("kind", "technology", "is_active", "sold_on_portal", "tax_class", "validity_unit")
    inlines = [PlanPriceHistoryInline, NewPlanPriceInline]
    create = staticmethod(services.create_plan)
    update = staticmethod(services.update_plan)
    set_price = staticmethod(services.set_plan_price)


@admin.register(AddOn)
class AddOnAdmin(_CatalogAdmin):
    form = AddOnAdminForm
    list_display = ("name", "code", "category", "billing", "tax_class", "is_active")
    list_filter = ("category", "billing", "tax_class", "is_active")
    inlines = [AddOnPriceHistoryInline, NewAddOnPriceInline]
    create = staticmethod(services.create_addon)
    update = staticmethod(services.update_addon)
    set_price = staticmethod(services.set_addon_price)

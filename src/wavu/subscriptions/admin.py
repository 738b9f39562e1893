"""Django admin for subscriptions. Creating, editing and every status change go through
`subscriptions.services` (validated, locked, audited, lifecycle events written); the status itself
is read-only and changes with the actions of the list page. A plan change goes through
`billing.plan_changes.change_plan` (an upgrade now, prorated; a downgrade at the period end). The
columns the lifecycle owns (period, next bill, pending plan, pause, suspension cause) are
read-only. Lifecycle events are read-only."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from wavu.billing import plan_changes
from wavu.core import clock
from wavu.core.errors import DomainError

from . import services
from .models import LifecycleEvent, Subscription, SubscriptionAddOn

CREDENTIAL_FIELDS = ("username", "static_ip", "mac_address")


class SubscriptionAddForm(forms.ModelForm):
    username = forms.CharField(max_length=64, required=False, help_text="leave empty: made from the account number")
    static_ip = forms.CharField(max_length=45, required=False, label="Static IP")
    mac_address = forms.CharField(max_length=32, required=False, label="MAC address")

    class Meta:
        model = Subscription
        fields = ("customer", "plan", "username", "static_ip", "mac_address", "billing_anchor_day")
        fields += ("scheduled_start", "notes")

    def _post_clean(self):
        # Checks belong to the service (below), not to the model's own validation of an unsaved row.
        pass

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            services.validate_new_subscription(
                data["customer"],
                data["plan"],
                username=data.get("username") or None,
                static_ip=data.get("static_ip") or None,
                mac_address=data.get("mac_address") or "",
                billing_anchor_day=data.get("billing_anchor_day"),
                start=data.get("scheduled_start"),
            )
        except ValidationError as exc:
            self.add_error(None, exc)
        except DomainError as exc:
            self.add_error(None, exc.message)
        return data


class SubscriptionChangeForm(forms.ModelForm):
    static_ip = forms.CharField(max_length=45, required=False, label="Static IP")
    mac_address = forms.CharField(max_length=32, required=False, label="MAC address")

    class Meta:
        model = Subscription
        fields = ("plan", "username", "static_ip", "mac_address", "billing_anchor_day", "auto_renew", "notes")

    def _post_clean(self):
        pass

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        given = {f: data.get(f) or "" for f in CREDENTIAL_FIELDS if f in self.changed_data}
        try:
            data.update(services.clean_credentials(subscription=self.instance, **given))
            plan = data.get("plan") or self.instance.plan
            if "plan" in self.changed_data:
                plan_changes.quote_plan_change(self.instance, plan)
            if "billing_anchor_day" in self.changed_data:
                services.clean_billing_anchor_day(data.get("billing_anchor_day"), plan)
        except ValidationError as exc:
            self.add_error(None, exc)
        except DomainError as exc:
            self.add_error(None, exc.message)
        return data


class LifecycleEventInline(admin.TabularInline):
    model = LifecycleEvent
    extra = 0
    can_delete = False
    fields = ("at", "kind", "from_status", "to_status", "reason", "actor_label", "data")
    readonly_fields = fields
    ordering = ("-at", "-id")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class SubscriptionAddOnInline(admin.TabularInline):
    model = SubscriptionAddOn
    extra = 0
    can_delete = False
    fields = ("addon", "quantity", "started_at", "ended_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def _lifecycle_action(name: str, description: str):
    operation = getattr(services, name)

    def run(modeladmin, request, queryset):
        done = 0
        for subscription in queryset.order_by("pk"):
            try:
                operation(subscription, reason="admin")
                done += 1
            except (DomainError, ValidationError) as exc:
                message = exc.message if isinstance(exc, DomainError) else "; ".join(exc.messages)
                modeladmin.message_user(request, f"{subscription.username}: {message}", messages.ERROR)
        if done:
            modeladmin.message_user(request, f"{description}: {done} service(s).", messages.SUCCESS)

    run.__name__ = f"{name}_selected"
    return admin.action(description=f"{description} the selected services")(run)


def _describe_plan_change(plan, result) -> str:
    when = clock.local(result.effective_at).strftime("%Y-%m-%d %H:%M")
    if result.scheduled:
        return f"The {result.kind} to {plan} is scheduled for {when} (the end of the period)."
    documents = [f"credit note {result.credit_note.number} ({result.credit})"] if result.credit_note else []
    if result.invoice:
        documents.append(f"invoice {result.invoice.number} ({result.charge})")
    return f"Moved to {plan} now" + (f": {', '.join(documents)}." if documents else ".")


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("username", "customer", "plan", "status", "current_period_end", "static_ip", "created_at")
    list_filter = ("status", "plan__kind", "plan")
    search_fields = ("username", "customer__name", "customer__account_number", "customer__phone", "static_ip")
    list_select_related = ("customer", "plan")
    raw_id_fields = ("customer",)
    inlines = [SubscriptionAddOnInline, LifecycleEventInline]
    actions = [
        _lifecycle_action("activate", "Activate (new period)"),
        _lifecycle_action("suspend", "Suspend"),
        _lifecycle_action("resume", "Resume"),
        _lifecycle_action("pause", "Pause"),
        _lifecycle_action("expire", "Expire"),
        _lifecycle_action("cancel", "Cancel"),
        _lifecycle_action("cancel_scheduled_plan_change", "Drop the scheduled plan change of"),
    ]
    readonly_fields = (
        "customer",
        "status",
        "password",
        "activated_at",
        "current_period_start",
        "current_period_end",
        "next_bill_at",
        "pending_plan",
        "pending_plan_at",
        "suspension_cause",
        "paused_at",
        "pause_until",
        "cancelled_at",
        "scheduled_start",
        "created_at",
        "updated_at",
    )

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = SubscriptionChangeForm if obj is not None else SubscriptionAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ("status",)

    def has_delete_permission(self, request, obj=None):
        return False  # cancel instead: invoices, usage and RADIUS history point at the service

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            created = services.create_subscription(
                data["customer"],
                data["plan"],
                username=data.get("username") or None,
                static_ip=data.get("static_ip") or None,
                mac_address=data.get("mac_address") or "",
                billing_anchor_day=data.get("billing_anchor_day"),
                start=data.get("scheduled_start"),
                notes=data.get("notes") or "",
                reason="admin",
            )
            for field in Subscription._meta.concrete_fields:
                setattr(obj, field.attname, getattr(created, field.attname))
            obj._state.adding = False
            return
        current = Subscription.objects.get(pk=obj.pk)
        credentials = {f: data.get(f) for f in CREDENTIAL_FIELDS if f in form.changed_data}
        if credentials:
            services.change_credentials(current, reason="admin", **credentials)
        if "plan" in form.changed_data:
            result = plan_changes.change_plan(current, data["plan"], reason="admin")
            self.message_user(request, _describe_plan_change(data["plan"], result), messages.INFO)
        details = {f: data.get(f) for f in ("notes", "billing_anchor_day", "auto_renew") if f in form.changed_data}
        if details:
            services.update_subscription(current, reason="admin", **details)
        for field in Subscription._meta.concrete_fields:
            setattr(obj, field.attname, getattr(current, field.attname))


@admin.register(LifecycleEvent)
class LifecycleEventAdmin(admin.ModelAdmin):
    list_display = ("at", "subscription", "kind", "from_status", "to_status", "actor_label", "reason")
    list_filter = ("kind", "to_status")
    search_fields = ("subscription__username", "reason", "actor_label")
    list_select_related = ("subscription",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

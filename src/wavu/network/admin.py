"""Admin for the network: the NAS registry (saved through `network.services`, secret write-only), and
FreeRADIUS's tables and the reconciliation reports, read-only.

The per-user RADIUS rows are the projection of each service: an edit here would be drift that the
next reconciliation undoes, so they are shown, never edited. Accounting and authentication rows are
FreeRADIUS's record of what happened.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from wavu.core.admin import ReadOnlyAdmin

from . import services, writer
from .models import (
    CoaAttempt,
    Nas,
    PeriodUsage,
    QuotaEvent,
    RadAcct,
    RadCheck,
    RadGroupCheck,
    RadGroupReply,
    RadPostAuth,
    RadReply,
    RadUserGroup,
    Reconciliation,
    UsageBucket,
)


class NasForm(forms.ModelForm):
    """The registry's fields by their Wavu names; the secret is an empty password input (empty keeps it)."""

    address = forms.CharField(help_text="the router's IP address, or a network such as 10.0.0.0/24")
    coa_port = forms.IntegerField(initial=services.DEFAULT_COA_PORT, help_text="CoA / Disconnect port (MikroTik: 3799)")
    new_secret = forms.CharField(
        label="Shared secret",
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="16–128 characters; leave empty to keep the current one",
    )
    site = forms.CharField(required=False)
    enabled = forms.BooleanField(required=False, initial=True)

    class Meta:
        model = Nas
        fields = ["shortname", "type", "server", "community", "description"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("server", "community", "description"):
            self.fields[name].required = False
            self.fields[name].widget = forms.TextInput()
        self.fields["shortname"].widget = forms.TextInput()
        nas = self.instance
        if nas.pk:
            self.initial.update(address=nas.nasname, coa_port=nas.ports)
            profile = getattr(nas, "profile", None)
            if profile is not None:
                self.initial.update(site=profile.site, enabled=profile.enabled)
        else:
            self.fields["new_secret"].required = True

    def service_fields(self) -> dict:
        data = self.cleaned_data
        given = {name: data.get(name) for name in ("address", "shortname", "type", "coa_port", "site", "enabled")}
        for name in ("server", "community", "description"):
            given[name] = data.get(name) or ""
        if data.get("new_secret"):
            given["secret"] = data["new_secret"]
        return given

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            services.clean_nas_data(self.service_fields(), instance=self.instance if self.instance.pk else None)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                target = {"secret": "new_secret"}.get(field, field)
                self.add_error(target if target in self.fields else None, errors)
        return data


@admin.register(Nas)
class NasAdmin(admin.ModelAdmin):
    form = NasForm
    list_display = ("shortname", "nasname", "type", "ports", "site", "enabled")
    search_fields = ("shortname", "nasname", "description")
    list_filter = ("type",)

    @admin.display(description="site")
    def site(self, obj):
        return getattr(getattr(obj, "profile", None), "site", "")

    @admin.display(description="enabled", boolean=True)
    def enabled(self, obj):
        return getattr(getattr(obj, "profile", None), "enabled", True)

    def save_model(self, request, obj, form, change):
        fields = form.service_fields()
        if change:
            saved = services.update_nas(Nas.objects.get(pk=obj.pk), reason="admin", **fields)
        else:
            saved = services.create_nas(reason="admin", **fields)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.delete_nas(obj, reason="admin")

    def delete_queryset(self, request, queryset):
        for nas in queryset:
            services.delete_nas(nas, reason="admin")


class _RowAdmin(ReadOnlyAdmin):
    list_per_page = 50
    show_full_result_count = False


@admin.register(RadCheck)
class RadCheckAdmin(_RowAdmin):
    list_display = ("username", "attribute", "op", "shown_value")
    search_fields = ("=username",)

    @admin.display(description="value")
    def shown_value(self, obj):
        return "********" if obj.attribute.lower().endswith("password") else obj.value

    def get_fields(self, request, obj=None):
        return ("username", "attribute", "op", "shown_value")

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)


@admin.register(RadReply)
class RadReplyAdmin(_RowAdmin):
    list_display = ("username", "attribute", "op", "value")
    search_fields = ("=username",)


@admin.register(RadUserGroup)
class RadUserGroupAdmin(_RowAdmin):
    list_display = ("username", "groupname", "priority")
    search_fields = ("=username", "=groupname")


@admin.register(RadGroupCheck)
class RadGroupCheckAdmin(_RowAdmin):
    list_display = ("groupname", "attribute", "op", "value")


@admin.register(RadGroupReply)
class RadGroupReplyAdmin(_RowAdmin):
    list_display = ("groupname", "attribute", "op", "value")


@admin.register(RadAcct)
class RadAcctAdmin(_RowAdmin):
    list_display = ("username", "nasipaddress", "framedipaddress", "acctstarttime", "acctstoptime",
                    "acctinputoctets", "acctoutputoctets")  # fmt: skip
    search_fields = ("=username", "=acctsessionid")
    ordering = ("-radacctid",)


@admin.register(RadPostAuth)
class RadPostAuthAdmin(_RowAdmin):
    list_display = ("username", "reply", "authdate", "callingstationid")
    search_fields = ("=username",)
    ordering = ("-id",)
    exclude = ("password",)


@admin.register(Reconciliation)
class ReconciliationAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "finished_at", "services_checked", "users_repaired", "orphans_removed",
                    "rows_added", "rows_removed")  # fmt: skip
    actions = ["reconcile_now"]

    @admin.action(description="Reconcile RADIUS now (repair drift and report it)")
    def reconcile_now(self, request, queryset):
        record = writer.reconcile()
        level = messages.WARNING if record.drift_found else messages.SUCCESS
        self.message_user(
            request,
            f"{record.services_checked} service(s) checked: {record.users_repaired} repaired, "
            f"{record.orphans_removed} orphan user name(s) removed.",
            level=level,
        )


# --- usage, quotas and CoA: records, read-only -------------------------------------------------------


@admin.register(UsageBucket)
class UsageBucketAdmin(ReadOnlyAdmin):
    list_display = ("subscription", "hour", "bytes_in", "bytes_out", "seconds")
    search_fields = ("=subscription__username",)
    raw_id_fields = ("subscription",)
    date_hierarchy = "hour"
    ordering = ("-hour",)


@admin.register(PeriodUsage)
class PeriodUsageAdmin(ReadOnlyAdmin):
    list_display = ("subscription", "period_start", "bytes_in", "bytes_out", "seconds", "updated_at")
    search_fields = ("=subscription__username",)
    raw_id_fields = ("subscription",)
    ordering = ("-period_start",)


@admin.register(QuotaEvent)
class QuotaEventAdmin(ReadOnlyAdmin):
    list_display = ("subscription", "threshold", "action", "used_bytes", "quota_bytes", "used_seconds",
                    "quota_seconds", "created_at", "notified_at")  # fmt: skip
    list_filter = ("threshold", "action")
    search_fields = ("=subscription__username",)
    raw_id_fields = ("subscription",)


@admin.register(CoaAttempt)
class CoaAttemptAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "username", "nas_address", "kind", "result", "error_cause", "attempt")
    list_filter = ("kind", "result")
    search_fields = ("=username", "=nas_address")
    raw_id_fields = ("subscription",)

"""Admin for M-Pesa: payment channels (saved through `mpesa.channels`), access tokens and the inbound
callback store and STK push requests (all read-only).

A channel's secrets are write-only password inputs: the form never renders a stored value; leaving one
empty keeps it, ticking "clear" removes it. The callback URLs to register with Daraja are shown
read-only; actions register the C2B URLs with Daraja and rotate the hook token. Access tokens show when
they expire, never the token. Stored callbacks are evidence: nothing is added, changed or deleted here.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from wavu.core import audit
from wavu.core.admin import ReadOnlyAdmin

from . import channels, daraja
from .models import AccessToken, InboundCallback, PaymentChannel, StkRequest

_PLAIN_FIELDS = tuple(f for f in channels.CHANNEL_FIELDS if f not in channels.SECRET_FIELDS)


def _message(exc) -> str:
    return getattr(exc, "message", None) or "; ".join(getattr(exc, "messages", [str(exc)]))


class PaymentChannelForm(forms.ModelForm):
    """Plain fields from the model; secrets as empty password inputs; the service validates in clean()."""

    consumer_key = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))
    consumer_secret = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))
    passkey = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), help_text="Lipa na M-Pesa Online passkey"
    )
    security_credential = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="the initiator's password encrypted with Safaricom's certificate (base64)",
    )
    base_url = forms.CharField(required=False, help_text="empty: the environment's address")
    clear_secrets = forms.MultipleChoiceField(
        required=False,
        choices=[(f, f.replace("_", " ")) for f in channels.SECRET_FIELDS],
        widget=forms.CheckboxSelectMultiple,
        help_text="Remove these stored secrets. An empty secret input above keeps the stored value.",
    )

    class Meta:
        model = PaymentChannel
        fields = list(_PLAIN_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in channels.SECRET_FIELDS:
            self.initial[name] = ""
            if self.instance.pk and getattr(self.instance, name):
                self.fields[name].help_text = (
                    (self.fields[name].help_text or "") + " (set; leave empty to keep)"
                ).strip()

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        given = {f: data.get(f) for f in _PLAIN_FIELDS if f in data}
        for name in channels.SECRET_FIELDS:
            if data.get(name):
                given[name] = data[name]
            elif name in (data.get("clear_secrets") or []):
                given[name] = ""
        if self.instance.pk:
            current = PaymentChannel.objects.get(pk=self.instance.pk)
            given = {f: v for f, v in given.items() if f in channels.SECRET_FIELDS or getattr(current, f) != v}
        else:
            current = None
        try:
            channels.clean_channel_data(given, instance=current)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, errors)
        self.service_changes = given
        return data

    def _post_clean(self):
        # The model instance is not built from the form: the service writes (and validates) the row.
        pass


@admin.register(PaymentChannel)
class PaymentChannelAdmin(admin.ModelAdmin):
    form = PaymentChannelForm
    list_display = ("name", "kind", "shortcode", "till_number", "environment", "validation", "is_active")
    list_filter = ("kind", "environment", "is_active")
    search_fields = ("name", "shortcode", "till_number")
    readonly_fields = ("secrets_status", "callback_urls_display", "c2b_registration", "created_at", "updated_at")
    actions = ("register_c2b_urls", "rotate_hook_token")
    fieldsets = (
        (None, {"fields": ("name", "kind", "shortcode", "till_number", "is_active")}),
        ("Daraja", {"fields": ("environment", "base_url", "initiator_name")}),
        (
            "Secrets (write-only)",
            {"fields": ("secrets_status", "consumer_key", "consumer_secret", "passkey", "security_credential")},
        ),
        ("Clear secrets", {"classes": ("collapse",), "fields": ("clear_secrets",)}),
        ("Callbacks", {"fields": ("callback_urls_display", "c2b_registration", "validation")}),
        ("Source addresses", {"fields": ("allowlist_mode", "allowlist")}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    def has_delete_permission(self, request, obj=None):
        return False  # payments and callbacks point at it; retire it with "is active" off

    @admin.display(description="secrets")
    def secrets_status(self, obj):
        if not obj.pk:
            return "-"
        return ", ".join(
            f"{name.replace('_', ' ')}: {'set' if is_set else 'not set'}"
            for name, is_set in channels.secrets_set(obj).items()
        )

    @admin.display(description="callback URLs to register")
    def callback_urls_display(self, obj):
        if not obj.pk:
            return "shown once the channel is saved"
        urls = channels.callback_urls(obj)
        problems = {key for key, url in urls.items() if channels.forbidden_words(url)}
        return format_html(
            "<table>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td><code>{}</code>{}</td></tr>",
                (
                    (key.replace("_", " "), url, " ⚠ contains a word Safaricom refuses" if key in problems else "")
                    for key, url in urls.items()
                ),
            ),
        )

    @admin.display(description="last C2B URL registration")
    def c2b_registration(self, obj):
        last = channels.last_c2b_registration(obj) if obj.pk else None
        if not last:
            return "never"
        state = "registered" if last.get("registered") else "failed"
        return f"{state} at {last['at']:%Y-%m-%d %H:%M} by {last['by']}: {last.get('message', '')}"

    def save_model(self, request, obj, form, change):
        changes = getattr(form, "service_changes", {})
        with audit.acting_as(user=request.user, source_ip=request.META.get("REMOTE_ADDR")):
            if change:
                saved = channels.update_channel(PaymentChannel.objects.get(pk=obj.pk), reason="admin", **changes)
            else:
                saved = channels.create_channel(**changes)
        for field in PaymentChannel._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        pass

    @admin.action(description="Register the C2B URLs with Daraja")
    def register_c2b_urls(self, request, queryset):
        for channel in queryset:
            try:
                with audit.acting_as(user=request.user, source_ip=request.META.get("REMOTE_ADDR")):
                    result = channels.register_c2b_urls(channel)
            except (ValidationError, daraja.DarajaError) as exc:
                self.message_user(request, f"{channel}: not registered: {_message(exc)}", level=messages.ERROR)
            else:
                self.message_user(request, f"{channel}: C2B URLs registered ({result.response_description}).")

    @admin.action(description="Rotate the hook token (old callback URLs stop working)")
    def rotate_hook_token(self, request, queryset):
        for channel in queryset:
            with audit.acting_as(user=request.user, source_ip=request.META.get("REMOTE_ADDR")):
                channels.rotate_hook_token(channel, reason="admin")
        self.message_user(request, "Hook token rotated. Register the C2B URLs again.", level=messages.WARNING)


@admin.register(AccessToken)
class AccessTokenAdmin(ReadOnlyAdmin):
    list_display = ("channel", "expires_at", "fetched_at")
    fields = ("channel", "expires_at", "fetched_at")
    readonly_fields = fields


@admin.register(InboundCallback)
class InboundCallbackAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "kind", "status", "channel", "reference", "source_ip", "source_allowed", "attempts")
    list_filter = ("kind", "status", "channel", "source_allowed")
    search_fields = ("reference", "outcome", "last_error")
    date_hierarchy = "received_at"
    fields = (
        "received_at",
        "channel",
        "kind",
        "status",
        "outcome",
        "reference",
        "payment",
        "source_ip",
        "source_allowed",
        "attempts",
        "last_error",
        "processed_at",
        "headers_display",
        "body_display",
    )
    readonly_fields = fields

    @admin.display(description="headers")
    def headers_display(self, obj):
        return format_html("<pre>{}</pre>", "\n".join(f"{k}: {v}" for k, v in (obj.headers or {}).items()))

    @admin.display(description="body")
    def body_display(self, obj):
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.body)


@admin.register(StkRequest)
class StkRequestAdmin(ReadOnlyAdmin):
    """STK push requests and how they ended (settled by the callback, the janitor's query or expiry)."""

    list_display = ("created_at", "purpose", "customer", "amount", "status", "result_code", "receipt", "settled_by")
    list_filter = ("status", "purpose", "channel", "settled_by")
    search_fields = ("checkout_request_id", "receipt", "account_reference", "customer__account_number")
    date_hierarchy = "created_at"
    fields = (
        "created_at",
        "channel",
        "purpose",
        "customer",
        "invoice",
        "subscription",
        "amount",
        "account_reference",
        "description",
        "merchant_request_id",
        "checkout_request_id",
        "status",
        "result_code",
        "result_desc",
        "customer_message",
        "receipt",
        "payment",
        "settled_by",
        "settled_at",
        "next_check_at",
        "checks",
    )
    readonly_fields = fields

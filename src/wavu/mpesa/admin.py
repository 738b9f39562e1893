"""Admin for M-Pesa: payment channels (saved through `mpesa.channels`), access tokens and the inbound
callback store and STK push requests (all read-only), and refund requests (reversals and B2C refunds).

A channel's secrets are write-only password inputs: the form never renders a stored value; leaving one
empty keeps it, ticking "clear" removes it. A secret stored under an encryption key Wavu no longer has
is shown as unreadable, with a warning on the list and the form: typing a new value replaces it. The
callback URLs to register with Daraja are shown read-only; actions register the C2B URLs with Daraja
and rotate the hook token. Access tokens show when they expire, never the token. Stored callbacks are
evidence: nothing is added, changed or deleted here; the "needs action" filter lists those a person
must look at, and an action marks them dealt with (a note).

Refund requests are read-only once made. "Add" asks for one (a reversal of a payment, or a B2C refund of
a customer's credit, with a reason) through `mpesa.refunds`, which calls Daraja: that page is saved
without the admin's surrounding transaction, so the request row is committed before Daraja is called.
Actions resolve timed-out requests as completed or failed after staff checked the M-Pesa portal.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from wavu.core import audit
from wavu.core.admin import ReadOnlyAdmin
from wavu.core.errors import DomainError

from . import channels, daraja, reconciliation, refunds, selectors, services
from .models import AccessToken, InboundCallback, PaymentChannel, RefundRequest, StkRequest

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
        status = channels.secrets_status(self.instance) if self.instance.pk else {}
        for name in channels.SECRET_FIELDS:
            self.initial[name] = ""
            if status.get(name) == channels.UNREADABLE:
                note = " (unreadable with the current encryption key: enter it again)"
            elif status.get(name) == channels.SET:
                note = " (set; leave empty to keep)"
            else:
                continue
            self.fields[name].help_text = ((self.fields[name].help_text or "") + note).strip()

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
        return ", ".join(f"{name.replace('_', ' ')}: {state}" for name, state in channels.secrets_status(obj).items())

    def _warn_unreadable(self, request, channel_list) -> None:
        for channel in channel_list:
            unreadable = channels.unreadable_secrets(channel)
            if unreadable:
                names = ", ".join(name.replace("_", " ") for name in unreadable)
                self.message_user(
                    request,
                    f"{channel}: the stored {names} cannot be decrypted with the current encryption key "
                    "(SECRET_KEY or WAVU_ENCRYPTION_KEY changed). Enter them again in the channel; until then "
                    "Daraja calls that need them (STK push, C2B registration, status queries, refunds) are "
                    "refused. Payments M-Pesa sends to the callback URLs are still recorded.",
                    level=messages.WARNING,
                )

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":
            self._warn_unreadable(request, PaymentChannel.objects.all())
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET":
            channel = self.get_object(request, unquote(object_id))
            self._warn_unreadable(request, [channel] if channel is not None else [])
        return super().change_view(request, object_id, form_url, extra_context)

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


class StatusQueryFilter(admin.SimpleListFilter):
    """Transaction Status: the queries that timed out and nobody has answered since (ask them again,
    `wavu mpesa-import-statement … --query RECEIPT`), and results not processed yet (the retry job
    takes them; after CALLBACK_MAX_ATTEMPTS failures they wait here for a person)."""

    title = "Transaction Status"
    parameter_name = "status_query"

    def lookups(self, request, model_admin):
        return (("ask_again", "timed out: ask again"), ("unprocessed", "results not processed yet"))

    def queryset(self, request, queryset):
        if self.value() == "ask_again":
            return queryset.filter(pk__in=[query.callback_id for query in reconciliation.timed_out_status_queries()])
        if self.value() == "unprocessed":
            return queryset.filter(
                kind=InboundCallback.Kind.STATUS_RESULT,
                status__in=(InboundCallback.Status.RECEIVED, InboundCallback.Status.FAILED),
            )
        return queryset


class NeedsActionFilter(admin.SimpleListFilter):
    """Callbacks a person must look at (`selectors.callbacks_needing_action`: refused, mismatched, or
    failed after their last retry, not yet marked dealt with), and those marked dealt with."""

    title = "needs action"
    parameter_name = "needs_action"

    def lookups(self, request, model_admin):
        return (("yes", "needs action"), ("dealt_with", "dealt with"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(selectors.needs_action_condition())
        if self.value() == "dealt_with":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


class ResolveCallbacksForm(forms.Form):
    note = forms.CharField(
        max_length=250,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="what was done: e.g. recorded by hand as payment 812; found by the statement import; not ours",
    )


_INVISIBLE = {code: f"\\x{code:02x}" for code in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}


def _visible(value, limit: int = 20_000) -> str:
    """Any stored text as something a page can show: control characters as \\xNN escapes, and at most
    `limit` characters (the rest is announced, not shown)."""
    text = value if isinstance(value, str) else repr(value)
    shown = text[:limit].translate(_INVISIBLE).encode("utf-8", "backslashreplace").decode("utf-8")
    return shown + (f"\n… {len(text) - limit} more characters" if len(text) > limit else "")


@admin.register(InboundCallback)
class InboundCallbackAdmin(ReadOnlyAdmin):
    """Stored hook requests, read-only (evidence). The "needs action" filter lists what a person must look at
    (the same rule as /healthz's count); actions process failed ones again (after a fix) and mark them
    dealt with, with a note (audited)."""

    list_display = (
        "received_at",
        "kind",
        "status",
        "needs_action",
        "channel",
        "reference",
        "source_ip",
        "source_allowed",
        "attempts",
    )
    list_filter = (NeedsActionFilter, "kind", "status", "channel", "source_allowed", StatusQueryFilter)
    list_select_related = ("channel",)  # the channel column: one join, not a query per row
    search_fields = ("reference", "outcome", "last_error")
    date_hierarchy = "received_at"
    actions = ("process_again", "mark_dealt_with")
    fields = (
        "received_at",
        "channel",
        "kind",
        "status",
        "needs_action",
        "outcome",
        "reference",
        "payment",
        "source_ip",
        "source_allowed",
        "attempts",
        "last_error",
        "processed_at",
        "resolved_at",
        "resolution",
        "headers_display",
        "body_display",
    )
    readonly_fields = fields

    @admin.display(description="needs action", boolean=True)
    def needs_action(self, obj):
        return selectors.needs_action(obj)

    @admin.display(description="headers")
    def headers_display(self, obj):
        headers = obj.headers
        if isinstance(headers, dict):
            text = "\n".join(f"{_visible(k)}: {_visible(v)}" for k, v in headers.items())
        else:
            text = _visible(headers)
        return format_html("<pre>{}</pre>", text)

    @admin.display(description="body")
    def body_display(self, obj):
        return format_html("<pre style='white-space: pre-wrap; overflow-wrap: anywhere'>{}</pre>", _visible(obj.body))

    @admin.action(description="Process again now (failed ones, e.g. after a fix; each receipt pays once)")
    def process_again(self, request, queryset):
        with audit.acting_as(user=request.user, source_ip=request.META.get("REMOTE_ADDR")):
            outcomes = services.process_again(queryset.values_list("pk", flat=True))
        if not outcomes:
            self.message_user(
                request, "Only failed callbacks not marked dealt with are processed again.", messages.WARNING
            )
        for callback in outcomes:
            level = messages.SUCCESS if callback.status in ("processed", "duplicate") else messages.WARNING
            self.message_user(request, f"Callback {callback.pk}: {callback.status}. {callback.outcome}", level)

    @admin.action(description="Mark as dealt with (asks what was done)")
    def mark_dealt_with(self, request, queryset):
        if "apply" in request.POST:
            form = ResolveCallbacksForm(request.POST)
            if form.is_valid():
                with audit.acting_as(user=request.user, source_ip=request.META.get("REMOTE_ADDR")):
                    done = services.resolve_callbacks(queryset.values_list("pk", flat=True), **form.cleaned_data)
                skipped = queryset.count() - len(done)
                self.message_user(request, f"{len(done)} callback(s) marked dealt with.")
                if skipped:
                    self.message_user(
                        request,
                        f"{skipped} callback(s) did not need action and were left as they are.",
                        messages.WARNING,
                    )
                return None
        else:
            form = ResolveCallbacksForm()
        return TemplateResponse(
            request,
            "admin/mpesa/resolve_callbacks.html",
            {
                **self.admin_site.each_context(request),
                "title": "Mark callbacks as dealt with",
                "items": queryset,
                "form": form,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


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


class RefundRequestForm(forms.ModelForm):
    """Ask for a reversal (kind + payment) or a B2C refund (kind + customer, amount, phone); the checks
    are `refunds.prepare_*` (nothing is written by clean())."""

    amount = forms.CharField(required=False, help_text="B2C: whole shillings; empty = all the credit, rounded down")
    phone = forms.CharField(required=False, help_text="B2C: empty = the customer's phone")

    class Meta:
        model = RefundRequest
        fields = ("kind", "payment", "customer", "channel", "reason")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "channel" in self.fields:  # the add form; a saved request is shown read-only
            self.fields["channel"].required = False
            self.fields["channel"].help_text = "empty: the payment's paybill/till (reversal) or the first B2C channel"

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            if data["kind"] == RefundRequest.Kind.REVERSAL:
                if not data.get("payment"):
                    raise ValidationError({"payment": ["Choose the M-Pesa payment to reverse."]})
                refunds.prepare_reversal(data["payment"], reason=data.get("reason"), channel=data.get("channel"))
            else:
                if not data.get("customer"):
                    raise ValidationError({"customer": ["Choose the customer whose credit to refund."]})
                refunds.prepare_b2c_refund(
                    data["customer"],
                    reason=data.get("reason"),
                    amount=data.get("amount") or None,
                    phone=data.get("phone") or None,
                    channel=data.get("channel"),
                )
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                self.add_error(name if name in self.fields else None, errors)
        except DomainError as exc:
            self.add_error(None, exc.message)
        return data

    def _post_clean(self):
        # The row is written by the service, not from the form.
        pass


class ResolveForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.TextInput(attrs={"size": 80}))
    receipt = forms.CharField(max_length=20, required=False, help_text="the receipt the M-Pesa portal shows, if any")


@admin.register(RefundRequest)
class RefundRequestAdmin(admin.ModelAdmin):
    """Reversals and B2C refunds: read-only with their outcome; "add" asks M-Pesa (see the module doc)."""

    form = RefundRequestForm
    list_display = ("created_at", "kind", "customer", "payment", "amount", "phone", "status", "result_code", "receipt")
    list_filter = ("kind", "status", "channel", "settled_by")
    search_fields = (
        "original_receipt",
        "receipt",
        "conversation_id",
        "originator_conversation_id",
        "customer__account_number",
        "payment__reference",
    )
    date_hierarchy = "created_at"
    raw_id_fields = ("payment", "customer")
    actions = ("resolve_completed", "resolve_failed")
    shown = (
        "created_at",
        "kind",
        "status",
        "outcome",
        "channel",
        "payment",
        "customer",
        "amount",
        "phone",
        "original_receipt",
        "reason",
        "requested_by",
        "originator_conversation_id",
        "conversation_id",
        "result_code",
        "result_desc",
        "receipt",
        "refunds_display",
        "result_parameters",
        "settled_at",
        "settled_by",
    )

    def get_fields(self, request, obj=None):
        return self.shown if obj else ("kind", "payment", "customer", "amount", "phone", "channel", "reason")

    def get_readonly_fields(self, request, obj=None):
        return self.shown if obj else ()

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="refunds (credit taken)")
    def refunds_display(self, obj):
        return ", ".join(f"{r.reference} {r.amount}" for r in obj.refunds.order_by("pk")) or "-"

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if object_id is None and request.method == "POST":
            # No surrounding transaction: the service commits the request before it calls Daraja.
            return self._changeform_view(request, object_id, form_url, extra_context)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        with audit.acting_as(user=request.user, source_ip=request.META.get("REMOTE_ADDR")):
            try:
                if data["kind"] == RefundRequest.Kind.REVERSAL:
                    saved = refunds.request_reversal(
                        data["payment"], reason=data["reason"], channel=data.get("channel")
                    )
                else:
                    saved = refunds.request_b2c_refund(
                        data["customer"],
                        reason=data["reason"],
                        amount=data.get("amount") or None,
                        phone=data.get("phone") or None,
                        channel=data.get("channel"),
                    )
            except (DomainError, ValidationError) as exc:  # changed since the form was checked
                self.message_user(request, f"Not requested: {_message(exc)}", level=messages.ERROR)
                return
        for field in RefundRequest._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False
        level = messages.ERROR if saved.status == RefundRequest.Status.FAILED else messages.INFO
        self.message_user(request, f"Refund request {saved.pk}: {saved.status}. {saved.outcome}", level=level)

    def save_related(self, request, form, formsets, change):
        pass

    def log_addition(self, request, obj, message):
        if obj.pk is not None:
            super().log_addition(request, obj, message)

    def response_add(self, request, obj, post_url_continue=None):
        if obj.pk is None:  # refused at save time; the message says why
            return HttpResponseRedirect(reverse("admin:mpesa_refundrequest_changelist"))
        return super().response_add(request, obj, post_url_continue)

    def _resolve(self, request, queryset, outcome: str, action: str):
        if "apply" in request.POST:
            form = ResolveForm(request.POST)
            if form.is_valid():
                for item in queryset.order_by("pk"):
                    try:
                        with audit.acting_as(user=request.user, source_ip=request.META.get("REMOTE_ADDR")):
                            refunds.resolve_request(item, outcome=outcome, **form.cleaned_data)
                    except (DomainError, ValidationError) as exc:
                        self.message_user(request, f"Request {item.pk}: {_message(exc)}", level=messages.ERROR)
                    else:
                        self.message_user(request, f"Request {item.pk}: {outcome}. {item.outcome}")
                return None
        else:
            form = ResolveForm()
        return TemplateResponse(
            request,
            "admin/mpesa/resolve_refund_requests.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Resolve refund requests as {outcome}",
                "outcome": outcome,
                "items": queryset,
                "form": form,
                "action": action,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description="Resolve as completed: the M-Pesa portal shows the money left (asks for a reason)")
    def resolve_completed(self, request, queryset):
        return self._resolve(request, queryset, RefundRequest.Status.COMPLETED, "resolve_completed")

    @admin.action(description="Resolve as failed: the money did not leave (asks for a reason)")
    def resolve_failed(self, request, queryset):
        return self._resolve(request, queryset, RefundRequest.Status.FAILED, "resolve_failed")

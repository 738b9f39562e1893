"""REST API v1 for billing: invoices and credit notes.

`invoices`: list and filter (customer, status, subscription, series, issue date range; search by
number, customer name or account number); create a draft with its lines (and issue it at once
with `"issue": true`); actions `lines` (add a line to a draft), `issue`, `pdf`, `void`; DELETE
discards a draft. `credit-notes`: list and filter; create against an invoice for an amount, for
chosen lines, or in full; `pdf`. `billing-runs`: read-only, each day's postpaid run with the
services it flagged. `dunning-notices`: read-only, the reminder and suspension steps taken for
overdue invoices. `payment-promises`: list, retrieve, and create (a staff grant through
`billing.dunning.grant_promise_to_pay`; refusals come back as 400/409 with a stable code).

Serializers validate shapes only; every rule lives in `billing.services`. A request that fails
half-way (say the third line is invalid) changes nothing: each write runs in one transaction.
"""

from __future__ import annotations

from decimal import Decimal

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from wavu.core import clock
from wavu.core.api import AuditedViewMixin, IdFilter
from wavu.core.tax import TaxClass
from wavu.customers.models import Customer
from wavu.subscriptions.models import Subscription, SubscriptionAddOn

from . import dunning, services
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

# --- fields and renderers ---------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.STR)
class AmountField(serializers.Field):
    """An amount as a decimal string ("2999.00") or a whole number; a JSON float is refused (inexact).

    Sign, range and decimal places are checked by the service that owns the rule."""

    default_error_messages = {
        "float": 'send amounts as a decimal string, e.g. "2999.00", not a floating-point number',
        "type": 'send amounts as a decimal string, e.g. "2999.00"',
    }

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self.fail("type")
        if isinstance(data, float):
            self.fail("float")
        return data

    def to_representation(self, value):
        return str(value)


class PDFRenderer(renderers.BaseRenderer):
    """Lets clients ask for `Accept: application/pdf`; the PDF actions return the bytes themselves."""

    media_type = "application/pdf"
    format = "pdf"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        return renderers.JSONRenderer().render(data)  # an error body


def _pdf_response(data: bytes, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{filename}.pdf"'
    return response


def _prefixed(exc: DjangoValidationError, prefix: str) -> DjangoValidationError:
    """Point a service's field errors at the part of the request they came from (lines.2.unit_price)."""
    if hasattr(exc, "error_dict"):
        return DjangoValidationError({f"{prefix}.{field}": msgs for field, msgs in exc.message_dict.items()})
    return DjangoValidationError({prefix: exc.messages})


# --- output serializers -----------------------------------------------------------------------


class InvoiceLineSerializer(serializers.ModelSerializer):
    credited = serializers.SerializerMethodField(help_text="gross already credited on this line")

    class Meta:
        model = InvoiceLine
        fields = [
            "id",
            "position",
            "kind",
            "description",
            "period_start",
            "period_end",
            "quantity",
            "unit_price",
            "net",
            "excise",
            "vat",
            "gross",
            "tax_class",
            "tax_band",
            "vat_rate",
            "excise_rate",
            "subscription",
            "plan",
            "addon",
            "credited",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_credited(self, line) -> str:
        return str(sum((cl.gross for cl in line.credit_lines.all()), Decimal("0.00")))


class CreditNoteLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = CreditNoteLine
        fields = ["id", "invoice_line", "description", "net", "excise", "vat", "gross"]
        read_only_fields = fields


class CreditNoteSerializer(serializers.ModelSerializer):
    invoice_number = serializers.CharField(source="invoice.number", read_only=True)
    customer_account_number = serializers.CharField(source="customer.account_number", read_only=True)
    lines = CreditNoteLineSerializer(many=True, read_only=True)

    class Meta:
        model = CreditNote
        fields = [
            "id",
            "number",
            "series",
            "invoice",
            "invoice_number",
            "customer",
            "customer_account_number",
            "currency",
            "issue_date",
            "issued_at",
            "reason",
            "net_total",
            "excise_total",
            "vat_total",
            "total",
            "lines",
        ]
        read_only_fields = fields


class CreditNoteBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = CreditNote
        fields = ["id", "number", "issue_date", "total", "reason"]
        read_only_fields = fields


class InvoiceSerializer(serializers.ModelSerializer):
    customer_name = serializers.CharField(source="customer.name", read_only=True)
    customer_account_number = serializers.CharField(source="customer.account_number", read_only=True)
    outstanding = serializers.DecimalField(max_digits=14, decimal_places=2, read_only=True)
    lines = InvoiceLineSerializer(many=True, read_only=True)
    credit_notes = CreditNoteBriefSerializer(many=True, read_only=True)

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "series",
            "status",
            "customer",
            "customer_name",
            "customer_account_number",
            "subscription",
            "currency",
            "issue_date",
            "issued_at",
            "due_date",
            "period_start",
            "period_end",
            "buyer_name",
            "buyer_pin",
            "buyer_address",
            "buyer_account_number",
            "net_total",
            "excise_total",
            "vat_total",
            "total",
            "amount_paid",
            "amount_credited",
            "outstanding",
            "notes",
            "created_at",
            "lines",
            "credit_notes",
        ]
        read_only_fields = fields


# --- input serializers ------------------------------------------------------------------------


class LineInputSerializer(serializers.Serializer):
    """One line to add. `subscription`: a plan period; `addon`: a subscribed add-on (recurring ones need
    the period); `one_off` / `adjustment`: a charge typed by staff (description, unit price, tax class)."""

    kind = serializers.ChoiceField(choices=["subscription", "addon", "one_off", "adjustment"])
    subscription = serializers.PrimaryKeyRelatedField(queryset=Subscription.objects.all(), required=False)
    subscription_addon = serializers.PrimaryKeyRelatedField(queryset=SubscriptionAddOn.objects.all(), required=False)
    period_start = serializers.DateField(required=False, help_text="first day of the period")
    period_end = serializers.DateField(required=False, help_text="last day of the period (inclusive)")
    description = serializers.CharField(max_length=200, required=False)
    unit_price = AmountField(required=False, help_text="tax-inclusive")
    quantity = serializers.DecimalField(max_digits=10, decimal_places=3, required=False, default="1")
    tax_class = serializers.ChoiceField(choices=TaxClass.choices, required=False)

    REQUIRED = {
        "subscription": ("subscription", "period_start", "period_end"),
        "addon": ("subscription_addon",),
        "one_off": ("description", "unit_price", "tax_class"),
        "adjustment": ("description", "unit_price", "tax_class"),
    }

    def validate(self, attrs):
        missing = {f: ["required for this kind of line"] for f in self.REQUIRED[attrs["kind"]] if f not in attrs}
        if missing:
            raise serializers.ValidationError(missing)
        return attrs


def add_requested_line(invoice: Invoice, data: dict) -> InvoiceLine:
    kind = data["kind"]
    if kind == "subscription":
        return services.add_subscription_period_line(
            invoice, data["subscription"], data["period_start"], data["period_end"]
        )
    if kind == "addon":
        return services.add_addon_line(
            invoice, data["subscription_addon"], data.get("period_start"), data.get("period_end")
        )
    return services.add_one_off_line(
        invoice,
        description=data["description"],
        unit_price=data["unit_price"],
        quantity=data["quantity"],
        tax_class=data["tax_class"],
        kind=InvoiceLine.Kind.ADJUSTMENT if kind == "adjustment" else InvoiceLine.Kind.ONE_OFF,
    )


class InvoiceCreateSerializer(serializers.Serializer):
    customer = serializers.PrimaryKeyRelatedField(queryset=Customer.objects.all())
    subscription = serializers.PrimaryKeyRelatedField(
        queryset=Subscription.objects.all(), required=False, allow_null=True, default=None
    )
    period_start = serializers.DateField(required=False, allow_null=True, default=None)
    period_end = serializers.DateField(required=False, allow_null=True, default=None, help_text="inclusive")
    notes = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    lines = LineInputSerializer(many=True, required=False, default=list)
    issue = serializers.BooleanField(required=False, default=False, help_text="issue the invoice at once")
    issue_date = serializers.DateField(required=False, allow_null=True, default=None)


class IssueSerializer(serializers.Serializer):
    issue_date = serializers.DateField(required=False, allow_null=True, default=None, help_text="default: today")


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=300)


class CreditLineInputSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="invoice line id")
    amount = AmountField(required=False, allow_null=True, default=None, help_text="empty: the rest of the line")


class CreditNoteCreateSerializer(serializers.Serializer):
    invoice = serializers.PrimaryKeyRelatedField(queryset=Invoice.objects.all())
    reason = serializers.CharField(max_length=300)
    amount = AmountField(required=False, allow_null=True, default=None, help_text="empty and no lines: in full")
    lines = CreditLineInputSerializer(many=True, required=False, allow_null=True, default=None)

    def validate(self, attrs):
        if attrs.get("amount") is not None and attrs.get("lines") is not None:
            raise serializers.ValidationError({"amount": ["give an amount or lines, not both"]})
        if attrs.get("lines") is not None and not attrs["lines"]:
            raise serializers.ValidationError({"lines": ["name at least one line, or leave lines out"]})
        return attrs


# --- filters ----------------------------------------------------------------------------------


class InvoiceFilter(django_filters.FilterSet):
    issued_from = django_filters.DateFilter(field_name="issue_date", lookup_expr="gte")
    issued_to = django_filters.DateFilter(field_name="issue_date", lookup_expr="lte")
    due_before = django_filters.DateFilter(field_name="due_date", lookup_expr="lt")
    status = django_filters.MultipleChoiceFilter(choices=Invoice.Status.choices)

    class Meta:
        model = Invoice
        fields = ["customer", "status", "subscription", "series", "currency"]


class CreditNoteFilter(django_filters.FilterSet):
    issued_from = django_filters.DateFilter(field_name="issue_date", lookup_expr="gte")
    issued_to = django_filters.DateFilter(field_name="issue_date", lookup_expr="lte")

    class Meta:
        model = CreditNote
        fields = ["invoice", "customer"]


# --- viewsets ---------------------------------------------------------------------------------


class InvoiceViewSet(
    AuditedViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Invoices: drafts are built and issued here; issued invoices are read-only (credit them instead)."""

    queryset = Invoice.objects.select_related("customer").prefetch_related("lines__credit_lines", "credit_notes")
    serializer_class = InvoiceSerializer
    filterset_class = InvoiceFilter
    search_fields = ["number", "customer__name", "customer__account_number", "buyer_name"]
    ordering_fields = ["issue_date", "due_date", "number", "total", "created_at", "id"]
    ordering = ["-issue_date", "-id"]

    def _show(self, invoice, http_status=status.HTTP_200_OK):
        invoice = self.get_queryset().get(pk=invoice.pk)
        return Response(InvoiceSerializer(invoice, context=self.get_serializer_context()).data, status=http_status)

    @extend_schema(request=InvoiceCreateSerializer, responses={201: InvoiceSerializer})
    def create(self, request, *args, **kwargs):
        """Create a draft with its lines; with `"issue": true` it is issued in the same transaction."""
        form = InvoiceCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        with transaction.atomic():
            invoice = services.create_draft_invoice(
                data["customer"],
                subscription=data["subscription"],
                period_start=data["period_start"],
                period_end=data["period_end"],
                notes=data["notes"],
            )
            for index, line in enumerate(data["lines"]):
                try:
                    add_requested_line(invoice, line)
                except DjangoValidationError as exc:
                    raise _prefixed(exc, f"lines.{index}") from exc
            if data["issue"]:
                invoice = services.issue_invoice(invoice, issue_date=data["issue_date"])
        return self._show(invoice, status.HTTP_201_CREATED)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="issued invoices cannot be deleted")})
    def destroy(self, request, *args, **kwargs):
        """Discard a draft. An issued invoice is never deleted: void it with a credit note."""
        services.discard_draft_invoice(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=LineInputSerializer, responses={201: InvoiceSerializer})
    @action(detail=True, methods=["post"])
    def lines(self, request, pk=None):
        """Add one line to a draft."""
        form = LineInputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        invoice = self.get_object()
        add_requested_line(invoice, form.validated_data)
        return self._show(invoice, status.HTTP_201_CREATED)

    @extend_schema(request=IssueSerializer, responses=InvoiceSerializer)
    @action(detail=True, methods=["post"])
    def issue(self, request, pk=None):
        """Issue a draft: it gets its number, its totals are frozen and it is booked."""
        form = IssueSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        invoice = services.issue_invoice(self.get_object(), issue_date=form.validated_data["issue_date"])
        return self._show(invoice)

    @extend_schema(request=ReasonSerializer, responses={201: CreditNoteSerializer})
    @action(detail=True, methods=["post"])
    def void(self, request, pk=None):
        """Void an issued invoice with a credit note for everything left on it."""
        form = ReasonSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        note = services.void_invoice(self.get_object(), form.validated_data["reason"])
        return Response(CreditNoteSerializer(note).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], renderer_classes=[renderers.JSONRenderer, PDFRenderer])
    def pdf(self, request, pk=None):
        """The invoice as a PDF (a draft prints as "not a tax invoice")."""
        invoice = self.get_object()
        return _pdf_response(render_invoice_pdf(invoice), invoice.number or f"draft-{invoice.pk}")


class CreditNoteViewSet(
    AuditedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Credit notes: each credits one issued invoice (at most 12 months old) and is never changed."""

    queryset = CreditNote.objects.select_related("invoice", "customer").prefetch_related("lines")
    serializer_class = CreditNoteSerializer
    filterset_class = CreditNoteFilter
    search_fields = ["number", "invoice__number", "customer__name", "customer__account_number"]
    ordering_fields = ["issue_date", "number", "total", "id"]
    ordering = ["-issue_date", "-id"]

    @extend_schema(request=CreditNoteCreateSerializer, responses={201: CreditNoteSerializer})
    def create(self, request, *args, **kwargs):
        """Credit an invoice by `amount`, by `lines` ([{"line": id, "amount": "…"}]), or in full (neither)."""
        form = CreditNoteCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        lines = None
        if data["lines"] is not None:
            lines = [{"line": item["line"], "amount": item["amount"]} for item in data["lines"]]
        note = services.issue_credit_note(data["invoice"], reason=data["reason"], amount=data["amount"], lines=lines)
        note = self.get_queryset().get(pk=note.pk)
        return Response(CreditNoteSerializer(note).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], renderer_classes=[renderers.JSONRenderer, PDFRenderer])
    def pdf(self, request, pk=None):
        """The credit note as a PDF."""
        note = self.get_object()
        return _pdf_response(render_credit_note_pdf(note), note.number)


# --- billing runs, dunning notices, promises to pay ---------------------------------------------


class BillingRunFlagSerializer(serializers.ModelSerializer):
    subscription_username = serializers.CharField(source="subscription.username", read_only=True)

    class Meta:
        model = BillingRunFlag
        fields = ["id", "subscription", "subscription_username", "code", "reason", "created_at"]
        read_only_fields = fields


class BillingRunSerializer(serializers.ModelSerializer):
    flags = BillingRunFlagSerializer(many=True, read_only=True)

    class Meta:
        model = BillingRun
        fields = [
            "id",
            "run_date",
            "status",
            "started_at",
            "finished_at",
            "attempts",
            "billed_count",
            "skipped_count",
            "flagged_count",
            "total_amount",
            "started_by",
            "last_error",
            "flags",
        ]
        read_only_fields = fields


class DunningNoticeSerializer(serializers.ModelSerializer):
    invoice_number = serializers.CharField(source="invoice.number", read_only=True)
    customer = serializers.IntegerField(source="invoice.customer_id", read_only=True)
    subscription = serializers.IntegerField(source="invoice.subscription_id", read_only=True, allow_null=True)

    class Meta:
        model = DunningNotice
        fields = ["id", "invoice", "invoice_number", "customer", "subscription", "stage", "offset_days", "created_at"]
        read_only_fields = fields


class PaymentPromiseSerializer(serializers.ModelSerializer):
    subscription_username = serializers.CharField(source="subscription.username", read_only=True)
    customer = serializers.IntegerField(source="subscription.customer_id", read_only=True)
    active = serializers.SerializerMethodField(help_text="the promise still holds suspension off today")

    class Meta:
        model = PaymentPromise
        fields = [
            "id",
            "subscription",
            "subscription_username",
            "customer",
            "period_start",
            "until",
            "active",
            "reason",
            "granted_by",
            "created_at",
        ]
        read_only_fields = fields

    def get_active(self, promise) -> bool:
        return promise.until >= clock.today()


class PaymentPromiseCreateSerializer(serializers.Serializer):
    subscription = serializers.PrimaryKeyRelatedField(queryset=Subscription.objects.all())
    until = serializers.DateField(help_text="the last day suspension is held off (at most PROMISE_TO_PAY_MAX_DAYS)")
    reason = serializers.CharField(max_length=300, help_text="why the customer gets more time")


class BillingRunFilter(django_filters.FilterSet):
    run_from = django_filters.DateFilter(field_name="run_date", lookup_expr="gte")
    run_to = django_filters.DateFilter(field_name="run_date", lookup_expr="lte")
    status = django_filters.MultipleChoiceFilter(choices=BillingRun.Status.choices)

    class Meta:
        model = BillingRun
        fields = ["status", "run_date"]


class DunningNoticeFilter(django_filters.FilterSet):
    customer = IdFilter(field_name="invoice__customer")
    subscription = IdFilter(field_name="invoice__subscription")
    created_from = django_filters.DateFilter(field_name="created_at", lookup_expr="date__gte")
    created_to = django_filters.DateFilter(field_name="created_at", lookup_expr="date__lte")

    class Meta:
        model = DunningNotice
        fields = ["invoice", "stage"]


class PaymentPromiseFilter(django_filters.FilterSet):
    customer = IdFilter(field_name="subscription__customer")
    active = django_filters.BooleanFilter(method="filter_active", help_text="holds suspension off today")
    granted_from = django_filters.DateFilter(field_name="created_at", lookup_expr="date__gte")
    granted_to = django_filters.DateFilter(field_name="created_at", lookup_expr="date__lte")

    class Meta:
        model = PaymentPromise
        fields = ["subscription"]

    def filter_active(self, queryset, name, value):
        today = clock.today()
        return queryset.filter(until__gte=today) if value else queryset.filter(until__lt=today)


class BillingRunRequestSerializer(serializers.Serializer):
    run_date = serializers.DateField(required=False, allow_null=True, help_text="the day to bill; default today")


class BillingRunQueuedSerializer(serializers.Serializer):
    run_date = serializers.DateField()
    job = serializers.CharField(help_text="the background job's id (admin: Task results)")


class BillingRunViewSet(AuditedViewMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Postpaid billing runs, one per day, with the services each could not bill and why. The worker
    runs today's every hour; POST asks for a run of a day now (running a day again resumes it)."""

    queryset = BillingRun.objects.prefetch_related("flags__subscription")
    serializer_class = BillingRunSerializer
    filterset_class = BillingRunFilter
    ordering_fields = ["run_date", "started_at", "id"]
    ordering = ["-run_date"]

    @extend_schema(request=BillingRunRequestSerializer, responses={202: BillingRunQueuedSerializer})
    def create(self, request, *args, **kwargs):
        """Queue a billing run for `run_date` (default today) on the worker; answers 202 with the job id.
        A day in the future is refused (400 `billing_run_in_future`)."""
        from .runs import check_run_date
        from .tasks import billing_run

        form = BillingRunRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        run_date = check_run_date(form.validated_data.get("run_date"))
        job = billing_run.enqueue(run_date.isoformat())
        body = BillingRunQueuedSerializer({"run_date": run_date, "job": str(job.id)}).data
        return Response(body, status=status.HTTP_202_ACCEPTED)


class DunningNoticeViewSet(AuditedViewMixin, viewsets.ReadOnlyModelViewSet):
    """The dunning steps taken for overdue invoices: reminders (offset from the due date) and suspensions."""

    queryset = DunningNotice.objects.select_related("invoice")
    serializer_class = DunningNoticeSerializer
    filterset_class = DunningNoticeFilter
    search_fields = ["invoice__number", "invoice__customer__account_number"]
    ordering_fields = ["created_at", "offset_days", "id"]
    ordering = ["-created_at", "-id"]


class PaymentPromiseViewSet(
    AuditedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Promises to pay: staff hold suspension off for a service's overdue debt, once per billing period."""

    queryset = PaymentPromise.objects.select_related("subscription")
    serializer_class = PaymentPromiseSerializer
    filterset_class = PaymentPromiseFilter
    search_fields = ["subscription__username", "subscription__customer__account_number", "reason"]
    ordering_fields = ["created_at", "until", "id"]
    ordering = ["-created_at", "-id"]

    @extend_schema(
        request=PaymentPromiseCreateSerializer,
        responses={
            201: PaymentPromiseSerializer,
            400: OpenApiResponse(description="no reason, or `until` in the past or too far ahead"),
            409: OpenApiResponse(description="no overdue debt, or a promise was already granted this period"),
        },
    )
    def create(self, request, *args, **kwargs):
        """Grant a promise to pay: a service suspended for overdue debt is resumed at once."""
        form = PaymentPromiseCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        promise = dunning.grant_promise_to_pay(data["subscription"], until=data["until"], reason=data["reason"])
        promise = self.get_queryset().get(pk=promise.pk)
        return Response(PaymentPromiseSerializer(promise).data, status=status.HTTP_201_CREATED)


def register(router) -> None:
    """Add this app's routes to the v1 router."""
    router.register("invoices", InvoiceViewSet, basename="invoice")
    router.register("credit-notes", CreditNoteViewSet, basename="credit-note")
    router.register("billing-runs", BillingRunViewSet, basename="billing-run")
    router.register("dunning-notices", DunningNoticeViewSet, basename="dunning-notice")
    router.register("payment-promises", PaymentPromiseViewSet, basename="payment-promise")

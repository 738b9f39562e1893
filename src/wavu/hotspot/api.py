"""REST API v1 for hotspot vouchers (staff only, like the rest of the API).

`voucher-batches`: list (filter `plan`, `reseller`), retrieve, create (POST: issue a batch — plan,
quantity, optional price, code_length, sold_by, reseller, note, mac_lock, device_limit), actions
`revoke` (POST, every voucher of the batch), `print` (GET, text/html: the cards to print) and
`export` (GET, text/csv). `vouchers`: list (filter `batch`, `status`; `?search=` on the code),
retrieve, action `revoke` (POST). Every rule lives in `hotspot.services`: invalid input → 400 with
field errors and nothing written; revoking what is already revoked → 409.
"""

from __future__ import annotations

from django.db.models import Count, Q
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from wavu.billing.api import AmountField
from wavu.catalog.models import Plan
from wavu.core.api import AuditedViewMixin
from wavu.customers.models import Customer

from . import services
from .models import CODE_LENGTH_DEFAULT, Voucher, VoucherBatch
from .printing import batch_csv, render_batch_html


class _TextRenderer(renderers.BaseRenderer):
    """Lets clients ask for the page or file by Accept; the actions return the text themselves."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, str):
            return data.encode(self.charset)
        return renderers.JSONRenderer().render(data)  # an error body


class HTMLRenderer(_TextRenderer):
    media_type = "text/html"
    format = "html"


class CSVRenderer(_TextRenderer):
    media_type = "text/csv"
    format = "csv"


class VoucherBatchSerializer(serializers.ModelSerializer):
    plan_code = serializers.CharField(source="plan.code", read_only=True)
    price = serializers.DecimalField(max_digits=12, decimal_places=2, coerce_to_string=True, read_only=True)
    counts = serializers.SerializerMethodField(help_text="vouchers by status")
    invoice_number = serializers.CharField(source="invoice.number", read_only=True, allow_null=True, default=None)

    class Meta:
        model = VoucherBatch
        fields = [
            "id",
            "plan",
            "plan_code",
            "quantity",
            "price",
            "currency",
            "code_length",
            "sold_by",
            "reseller",
            "invoice",
            "invoice_number",
            "note",
            "mac_lock",
            "device_limit",
            "created_by_label",
            "created_at",
            "revoked_at",
            "counts",
        ]
        read_only_fields = fields

    def get_counts(self, obj) -> dict[str, int]:
        return {choice: getattr(obj, f"count_{choice}", 0) for choice in Voucher.Status.values}


class VoucherBatchCreateSerializer(serializers.Serializer):
    """Shapes only; the rules (plan kind, ranges, price) are the service's."""

    plan = serializers.PrimaryKeyRelatedField(queryset=Plan.objects.all(), help_text="a hotspot plan (first login)")
    quantity = serializers.IntegerField(help_text=f"1–{services.MAX_QUANTITY}")
    price = AmountField(required=False, help_text='per voucher, e.g. "50.00"; default the plan\'s price')
    code_length = serializers.IntegerField(required=False, default=CODE_LENGTH_DEFAULT, help_text="6–16")
    sold_by = serializers.CharField(required=False, allow_blank=True, default="", help_text="reseller or agent")
    reseller = serializers.PrimaryKeyRelatedField(
        queryset=Customer.objects.all(), required=False, allow_null=True, help_text="account invoiced for the batch"
    )
    note = serializers.CharField(required=False, allow_blank=True, default="")
    mac_lock = serializers.BooleanField(required=False, default=False)
    device_limit = serializers.IntegerField(required=False, help_text="default the plan's devices")

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({f: ["This field cannot be set."] for f in unknown})
        return super().to_internal_value(data)


class RevokeReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=300)


class RevokedSerializer(serializers.Serializer):
    revoked = serializers.IntegerField(help_text="vouchers revoked by this call")
    batch = VoucherBatchSerializer()


class VoucherSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="subscription.username", read_only=True)
    service_status = serializers.CharField(source="subscription.status", read_only=True)
    expires_at = serializers.DateTimeField(
        source="subscription.current_period_end", read_only=True, allow_null=True, help_text="empty until first use"
    )

    class Meta:
        model = Voucher
        fields = [
            "id",
            "code",
            "batch",
            "status",
            "subscription",
            "username",
            "service_status",
            "first_used_at",
            "expires_at",
            "locked_mac",
            "revoked_at",
        ]
        read_only_fields = fields


class VoucherBatchViewSet(
    AuditedViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Printed batches of hotspot vouchers: issue, revoke, print, export."""

    queryset = VoucherBatch.objects.select_related("plan", "invoice").annotate(
        **{f"count_{choice}": Count("vouchers", filter=Q(vouchers__status=choice)) for choice in Voucher.Status.values}
    )
    serializer_class = VoucherBatchSerializer
    filterset_fields = ["plan", "reseller"]
    ordering_fields = ["created_at", "id"]
    ordering = ["-created_at", "-id"]

    @extend_schema(request=VoucherBatchCreateSerializer, responses={201: VoucherBatchSerializer})
    def create(self, request, *args, **kwargs):
        form = VoucherBatchCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        batch = services.issue_batch(**form.validated_data)
        return Response(
            VoucherBatchSerializer(self.get_queryset().get(pk=batch.pk)).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        request=RevokeReasonSerializer,
        responses={200: RevokedSerializer, 409: OpenApiResponse(description="nothing left to revoke")},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke every voucher of the batch not revoked yet: their services are cancelled (RADIUS rejects)."""
        form = RevokeReasonSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        batch = self.get_object()
        count = services.revoke_batch(batch, reason=form.validated_data["reason"])
        return Response({"revoked": count, "batch": VoucherBatchSerializer(self.get_queryset().get(pk=batch.pk)).data})

    @extend_schema(responses={(200, "text/html"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], renderer_classes=[HTMLRenderer, renderers.JSONRenderer])
    def print(self, request, pk=None):
        """The batch's cards as an HTML page to print (revoked vouchers left out)."""
        return HttpResponse(render_batch_html(self.get_object()), content_type="text/html; charset=utf-8")

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=True, methods=["get"], renderer_classes=[CSVRenderer, renderers.JSONRenderer])
    def export(self, request, pk=None):
        """The batch's codes as CSV (code, status, plan, validity, price, currency, batch, sold_by)."""
        batch = self.get_object()
        response = HttpResponse(batch_csv(batch), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="vouchers-batch-{batch.pk}.csv"'
        return response


class VoucherViewSet(AuditedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Hotspot vouchers, one per code: status, first use, device lock; revoke one."""

    queryset = Voucher.objects.select_related("subscription")
    serializer_class = VoucherSerializer
    filterset_fields = ["batch", "status"]
    search_fields = ["code"]
    ordering_fields = ["id", "first_used_at"]
    ordering = ["id"]

    @extend_schema(
        request=RevokeReasonSerializer,
        responses={200: VoucherSerializer, 409: OpenApiResponse(description="already revoked")},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke the voucher: its service is cancelled, so RADIUS rejects the code."""
        form = RevokeReasonSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        voucher = services.revoke_voucher(self.get_object(), reason=form.validated_data["reason"])
        return Response(VoucherSerializer(self.get_queryset().get(pk=voucher.pk)).data)


def register(router) -> None:
    router.register("voucher-batches", VoucherBatchViewSet, basename="voucher-batch")
    router.register("vouchers", VoucherViewSet, basename="voucher")

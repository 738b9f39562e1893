"""REST API v1 for payments.

`payments`: list and filter every payment (customer, method, status, received_at range; search by
reference or payer); create = manual entry of cash, bank transfers and cheques (M-Pesa and Airtel
arrive through their callbacks); actions `reverse`, `match` and `refund`. Entering a receipt that
is already recorded answers 200 with the existing payment (201 only when it is new); the same
reference with a different amount answers 409 `duplicate_reference_mismatch`.
Serializers only validate shapes; every rule lives in `payments.services`.
"""

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from wavu.core.api import AuditedViewMixin, DateTimeField, IsoDateTimeFilter
from wavu.customers.models import Customer

from . import services
from .models import MANUAL_METHODS, Allocation, Method, Payment, Refund

MONEY = {"max_digits": 14, "decimal_places": 2}


@extend_schema_field(OpenApiTypes.STR)
class AmountField(serializers.Field):
    """An amount as a decimal string ("2500.50") or a whole number; a JSON float is refused (floats are inexact).

    Range and decimal places are checked by the service, which owns the rule."""

    default_error_messages = {
        "float": 'send amounts as a decimal string, e.g. "2500.50", not a floating-point number',
        "type": 'send amounts as a decimal string, e.g. "2500.50"',
    }

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("type")
        if isinstance(data, float):
            self.fail("float")
        if not isinstance(data, str | int):
            self.fail("type")
        return data

    def to_representation(self, value):
        return str(value)


class AllocationSerializer(serializers.ModelSerializer):
    invoice_number = serializers.CharField(source="invoice.number", read_only=True)

    class Meta:
        model = Allocation
        fields = ["id", "invoice", "invoice_number", "amount", "created_at", "reverses"]


class RefundSerializer(serializers.ModelSerializer):
    class Meta:
        model = Refund
        fields = ["id", "payment", "customer", "amount", "currency", "method", "reference", "refunded_at", "reason"]


class PaymentSerializer(serializers.ModelSerializer):
    customer_account_number = serializers.CharField(
        source="customer.account_number", read_only=True, default=None, allow_null=True
    )
    unallocated = serializers.DecimalField(**MONEY, read_only=True, help_text="money not applied nor refunded")
    allocations = AllocationSerializer(many=True, read_only=True)
    refunds = RefundSerializer(many=True, read_only=True)

    class Meta:
        model = Payment
        fields = [
            "id",
            "method",
            "source",
            "reference",
            "customer",
            "customer_account_number",
            "amount",
            "currency",
            "received_at",
            "recorded_at",
            "payer_name",
            "payer_phone",
            "account_reference",
            "status",
            "amount_allocated",
            "amount_refunded",
            "unallocated",
            "notes",
            "recorded_by",
            "reversed_at",
            "reversal_reason",
            "allocations",
            "refunds",
        ]
        read_only_fields = fields


class ManualPaymentSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=[(m.value, m.label) for m in MANUAL_METHODS])
    reference = serializers.CharField(max_length=60, help_text="receipt, transfer or cheque number")
    amount = AmountField()
    customer = serializers.PrimaryKeyRelatedField(
        queryset=Customer.objects.all(), required=False, allow_null=True, help_text="leave empty to park in suspense"
    )
    received_at = DateTimeField(required=False, allow_null=True)
    payer_name = serializers.CharField(max_length=160, required=False, allow_blank=True, default="")
    payer_phone = serializers.CharField(max_length=80, required=False, allow_blank=True, default="")
    account_reference = serializers.CharField(max_length=60, required=False, allow_blank=True, default="")
    notes = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class PaymentReversalSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=300)


class MatchSerializer(serializers.Serializer):
    customer = serializers.PrimaryKeyRelatedField(queryset=Customer.objects.all())
    reason = serializers.CharField(max_length=300)


class RefundRequestSerializer(serializers.Serializer):
    amount = AmountField()
    method = serializers.ChoiceField(choices=Method.choices)
    reference = serializers.CharField(max_length=60, help_text="the refund's own receipt or transfer number")
    reason = serializers.CharField(max_length=300)


class PaymentFilter(django_filters.FilterSet):
    received_after = IsoDateTimeFilter(field_name="received_at", lookup_expr="gte")
    received_before = IsoDateTimeFilter(field_name="received_at", lookup_expr="lt")
    received_from = django_filters.DateFilter(field_name="received_at", lookup_expr="date__gte")
    received_to = django_filters.DateFilter(field_name="received_at", lookup_expr="date__lte")

    class Meta:
        model = Payment
        fields = ["customer", "method", "source", "status", "currency"]


class PaymentViewSet(
    AuditedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Payments from every channel. Staff enter cash, bank transfers and cheques here."""

    queryset = Payment.objects.select_related("customer").prefetch_related("allocations__invoice", "refunds")
    serializer_class = PaymentSerializer
    filterset_class = PaymentFilter
    search_fields = ["reference", "payer_name", "payer_phone", "account_reference", "customer__account_number"]
    ordering_fields = ["received_at", "recorded_at", "amount", "id"]
    ordering = ["-received_at", "-id"]

    def _show(self, payment, http_status=status.HTTP_200_OK):
        payment = self.get_queryset().get(pk=payment.pk)
        return Response(PaymentSerializer(payment, context=self.get_serializer_context()).data, status=http_status)

    @extend_schema(
        request=ManualPaymentSerializer,
        responses={
            201: PaymentSerializer,
            200: OpenApiResponse(PaymentSerializer, description="already recorded: the existing payment"),
            409: OpenApiResponse(description="the reference is recorded with a different amount or customer"),
        },
    )
    def create(self, request, *args, **kwargs):
        form = ManualPaymentSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        payment, created = services.record_manual_payment(**data)
        return self._show(payment, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=PaymentReversalSerializer, responses=PaymentSerializer)
    @action(detail=True, methods=["post"])
    def reverse(self, request, pk=None):
        """Undo a mistaken payment: its invoices re-open and its books are reversed. Once only."""
        form = PaymentReversalSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        payment = services.reverse_payment(self.get_object(), reason=form.validated_data["reason"])
        return self._show(payment)

    @extend_schema(request=MatchSerializer, responses=PaymentSerializer)
    @action(detail=True, methods=["post"])
    def match(self, request, pk=None):
        """Give a suspense payment to its customer; it then pays their open invoices."""
        form = MatchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        payment = services.match_payment(
            self.get_object(), form.validated_data["customer"], reason=form.validated_data["reason"]
        )
        return self._show(payment)

    @extend_schema(request=RefundRequestSerializer, responses={201: RefundSerializer})
    @action(detail=True, methods=["post"])
    def refund(self, request, pk=None):
        """Pay back unapplied money of this payment to its customer."""
        form = RefundRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        refund = services.refund_payment(self.get_object(), **form.validated_data)
        return Response(RefundSerializer(refund).data, status=status.HTTP_201_CREATED)


def register(router) -> None:
    """Add this app's routes to the v1 router."""
    router.register("payments", PaymentViewSet, basename="payment")

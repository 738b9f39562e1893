"""REST API v1 for the catalog.

`plans` and `addons`: list (filters, `?search=` on name and code), retrieve, create, PATCH, and the
`set-price` action that adds a new price version (prices are never edited). Each representation
carries the price in force now (`current_price`) and the price history. No delete: retire a plan
or add-on with `is_active: false`. Every rule lives in `catalog.services`.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from wavu.core.api import AuditedViewMixin, DateTimeField

from . import selectors, services
from .models import AddOn, Plan


@extend_schema_field(OpenApiTypes.STR)
class AmountField(serializers.Field):
    """A price as a decimal string ("2499.00") or a whole number; JSON floats are refused (inexact)."""

    default_error_messages = {
        "float": 'send prices as a decimal string, e.g. "2499.00", not a floating-point number',
        "type": 'send prices as a decimal string, e.g. "2499.00"',
    }

    def to_internal_value(self, data):
        if isinstance(data, float):
            self.fail("float")
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("type")
        return data

    def to_representation(self, value):
        return str(value)


class PriceSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, read_only=True)
    currency = serializers.CharField(read_only=True)
    valid_from = DateTimeField(read_only=True)


class SetPriceSerializer(serializers.Serializer):
    amount = AmountField(help_text="tax-inclusive price")
    valid_from = DateTimeField(
        required=False, allow_null=True, help_text="when the price starts (default now); a date means local midnight"
    )
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class _CatalogSerializer(serializers.ModelSerializer):
    current_price = serializers.DecimalField(max_digits=12, decimal_places=2, read_only=True, allow_null=True)
    current_price_currency = serializers.CharField(read_only=True, allow_null=True)
    prices = PriceSerializer(many=True, read_only=True)


class PlanSerializer(_CatalogSerializer):
    class Meta:
        model = Plan
        fields = ["id", *services.PLAN_FIELDS, "current_price", "current_price_currency", "prices"]
        fields += ["created_at", "updated_at"]
        read_only_fields = fields


class PlanWriteSerializer(serializers.ModelSerializer):
    """Shapes only; the rules (burst, quota, fair usage, kinds) are checked by the service."""

    price = AmountField(required=False, write_only=True, help_text="first price (create only)")
    price_valid_from = DateTimeField(required=False, allow_null=True, write_only=True)

    class Meta:
        model = Plan
        fields = [*services.PLAN_FIELDS, "price", "price_valid_from"]
        extra_kwargs = {"code": {"validators": []}}


class AddOnSerializer(_CatalogSerializer):
    class Meta:
        model = AddOn
        fields = ["id", *services.ADDON_FIELDS, "current_price", "current_price_currency", "prices"]
        fields += ["created_at", "updated_at"]
        read_only_fields = fields


class AddOnWriteSerializer(serializers.ModelSerializer):
    price = AmountField(required=False, write_only=True, help_text="first price (create only)")
    price_valid_from = DateTimeField(required=False, allow_null=True, write_only=True)

    class Meta:
        model = AddOn
        fields = [*services.ADDON_FIELDS, "price", "price_valid_from"]
        extra_kwargs = {"code": {"validators": []}, "tax_class": {"required": False}}


class _CatalogViewSet(
    AuditedViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    http_method_names = ["get", "post", "patch", "head", "options"]
    search_fields = ["name", "code"]
    ordering_fields = ["name", "code", "current_price", "id"]
    write_serializer_class: type[serializers.Serializer]

    def _show(self, obj, http_status=status.HTTP_200_OK):
        obj = self.get_queryset().get(pk=obj.pk)
        return Response(self.get_serializer_class()(obj).data, status=http_status)

    def _create(self, request, create):
        form = self.write_serializer_class(data=request.data)
        form.is_valid(raise_exception=True)
        obj = create(**form.validated_data)
        return self._show(obj, status.HTTP_201_CREATED)

    def _update(self, request, update):
        obj = self.get_object()
        form = self.write_serializer_class(obj, data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        if "price" in data or "price_valid_from" in data:
            raise serializers.ValidationError({"price": ["Prices change with the set-price action."]})
        update(obj, **data)
        return self._show(obj)

    def _set_price(self, request, set_price):
        obj = self.get_object()
        form = SetPriceSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        row = set_price(obj, data["amount"], valid_from=data.get("valid_from"), reason=data["reason"])
        return Response(PriceSerializer(row).data, status=status.HTTP_201_CREATED)


class PlanViewSet(_CatalogViewSet):
    """Plans: hotspot packages, prepaid and postpaid recurring plans, with their price history."""

    queryset = Plan.objects.all()
    serializer_class = PlanSerializer
    write_serializer_class = PlanWriteSerializer
    filterset_fields = ["kind", "technology", "is_active", "sold_on_portal", "tax_class"]
    ordering = ["kind", "name"]

    def get_queryset(self):
        return selectors.with_current_price(Plan.objects.prefetch_related("prices"))

    @extend_schema(request=PlanWriteSerializer, responses={201: PlanSerializer})
    def create(self, request, *args, **kwargs):
        return self._create(request, services.create_plan)

    @extend_schema(request=PlanWriteSerializer, responses=PlanSerializer)
    def partial_update(self, request, *args, **kwargs):
        return self._update(request, services.update_plan)

    @extend_schema(request=SetPriceSerializer, responses={201: PriceSerializer})
    @action(detail=True, methods=["post"], url_path="set-price")
    def set_price(self, request, pk=None):
        """Add a new price version; the old price still applies to earlier dates."""
        return self._set_price(request, services.set_plan_price)


class AddOnViewSet(_CatalogViewSet):
    """Add-ons: static IPs and equipment rental (every period), installation (once), data bundles."""

    queryset = AddOn.objects.all()
    serializer_class = AddOnSerializer
    write_serializer_class = AddOnWriteSerializer
    filterset_fields = ["category", "billing", "is_active", "tax_class"]
    ordering = ["name"]

    def get_queryset(self):
        return selectors.addons_with_current_price(AddOn.objects.prefetch_related("prices"))

    @extend_schema(request=AddOnWriteSerializer, responses={201: AddOnSerializer})
    def create(self, request, *args, **kwargs):
        return self._create(request, services.create_addon)

    @extend_schema(request=AddOnWriteSerializer, responses=AddOnSerializer)
    def partial_update(self, request, *args, **kwargs):
        return self._update(request, services.update_addon)

    @extend_schema(request=SetPriceSerializer, responses={201: PriceSerializer})
    @action(detail=True, methods=["post"], url_path="set-price")
    def set_price(self, request, pk=None):
        """Add a new price version of the add-on."""
        return self._set_price(request, services.set_addon_price)


def register(router) -> None:
    """Add this app's routes to the v1 router."""
    router.register("plans", PlanViewSet, basename="plan")
    router.register("addons", AddOnViewSet, basename="addon")

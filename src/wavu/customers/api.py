"""REST API v1 for customers.

`customers`: list (filter by status, kind, county; `?search=` finds a name, a phone typed in any
form, an account number, a KRA PIN, a national ID or an e-mail), retrieve, create, PATCH; no
delete (accounts are closed, never deleted): `POST /customers/{id}/close/`. Serializers only check
shapes; normalisation and every rule live in `customers.services`.
"""

import django_filters
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import filters, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from wavu.core.api import AuditedViewMixin

from . import selectors, services
from .counties import canonical_county
from .models import Customer

READ_FIELDS = ["id", "account_number", *services.EDITABLE_FIELDS, "created_at", "updated_at"]


class CustomerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Customer
        fields = READ_FIELDS
        read_only_fields = READ_FIELDS


class CustomerWriteSerializer(serializers.Serializer):
    """What staff type. Lengths are generous: phones and PINs are normalised by the service."""

    kind = serializers.ChoiceField(choices=Customer.Kind.choices, required=False)
    name = serializers.CharField(max_length=200)
    contact_person = serializers.CharField(max_length=200, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=32, help_text="any usual form: 0712 345 678, +254712345678, 712345678")
    alt_phone = serializers.CharField(max_length=32, required=False, allow_blank=True)
    email = serializers.CharField(max_length=254, required=False, allow_blank=True)
    kra_pin = serializers.CharField(max_length=20, required=False, allow_blank=True, help_text="e.g. A123456789B")
    national_id = serializers.CharField(max_length=20, required=False, allow_blank=True)
    county = serializers.CharField(max_length=60, required=False, allow_blank=True)
    town = serializers.CharField(max_length=100, required=False, allow_blank=True)
    address = serializers.CharField(max_length=250, required=False, allow_blank=True)
    latitude = serializers.DecimalField(max_digits=9, decimal_places=6, required=False, allow_null=True)
    longitude = serializers.DecimalField(max_digits=10, decimal_places=6, required=False, allow_null=True)
    language = serializers.ChoiceField(choices=Customer.Language.choices, required=False)
    status = serializers.ChoiceField(
        choices=[Customer.Status.ACTIVE, Customer.Status.INACTIVE], required=False, help_text="close with /close/"
    )
    notes = serializers.CharField(required=False, allow_blank=True)


class CloseSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class CustomerFilter(django_filters.FilterSet):
    county = django_filters.CharFilter(method="filter_county", help_text="any spelling, e.g. nairobi")

    class Meta:
        model = Customer
        fields = ["status", "kind", "county"]

    def filter_county(self, queryset, name, value):
        return queryset.filter(county=canonical_county(value) or value)


class CustomerSearchFilter(filters.SearchFilter):
    """`?search=` through `selectors.search_customers`, so a phone typed 0712… finds 254712…."""

    def filter_queryset(self, request, queryset, view):
        text = request.query_params.get(self.search_param, "")
        return selectors.search_customers(text, queryset) if text.strip() else queryset


class CustomerViewSet(
    AuditedViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Subscriber accounts. Accounts are closed, never deleted; account numbers are never reused."""

    queryset = Customer.objects.all()
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilter
    filter_backends = [
        django_filters.rest_framework.DjangoFilterBackend,
        CustomerSearchFilter,
        filters.OrderingFilter,
    ]
    search_fields = ["name", "phone", "account_number", "kra_pin"]
    ordering_fields = ["name", "account_number", "created_at", "id"]
    ordering = ["name", "id"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def _show(self, customer, http_status=status.HTTP_200_OK):
        return Response(CustomerSerializer(customer).data, status=http_status)

    @extend_schema(request=CustomerWriteSerializer, responses={201: CustomerSerializer})
    def create(self, request, *args, **kwargs):
        """Open an account; the account number is allocated by Wavu."""
        form = CustomerWriteSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        customer = services.create_customer(**form.validated_data)
        return self._show(customer, status.HTTP_201_CREATED)

    @extend_schema(request=CustomerWriteSerializer, responses=CustomerSerializer)
    def partial_update(self, request, *args, **kwargs):
        """Correct an account's details (only the fields sent change)."""
        customer = self.get_object()
        form = CustomerWriteSerializer(data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        services.update_customer(customer, **form.validated_data)
        return self._show(customer)

    @extend_schema(
        parameters=[OpenApiParameter("reference", str, required=True, description="an account number as typed")],
        responses={
            200: CustomerSerializer,
            404: OpenApiResponse(description="no customer has that account number, or its check digit is wrong"),
        },
    )
    @action(detail=False, methods=["get"])
    def lookup(self, request):
        """The customer an account reference names, only if its check digit is valid (404 otherwise)."""
        customer = selectors.find_by_account_reference(request.query_params.get("reference", ""))
        if customer is None:
            raise Http404
        return self._show(customer)

    @extend_schema(request=CloseSerializer, responses=CustomerSerializer)
    @action(detail=True, methods=["post"])
    def close(self, request, pk=None):
        """Close the account (refused while it has services that are not cancelled)."""
        form = CloseSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        customer = services.close_customer(self.get_object(), reason=form.validated_data["reason"])
        return self._show(customer)


def register(router) -> None:
    """Add this app's routes to the v1 router."""
    router.register("customers", CustomerViewSet, basename="customer")

"""REST API v1 for subscriptions (services).

`subscriptions`: list (filter by customer, status, plan; `?search=` on username, customer name
and account number), retrieve, create (status pending; username and password generated unless
given), and the lifecycle actions `activate`, `suspend`, `resume`, `pause`, `cancel`,
`change-plan`, plus `change-credentials`. No PATCH or delete: every change is an action that goes
through `subscriptions.services`, is checked against the allowed status changes and is audited.
The RADIUS password is shown only in the detail of one service (and the create answer), never in
lists. A move the lifecycle does not allow answers 409 `invalid_transition` and changes nothing.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from wavu.catalog.models import AddOn, Plan
from wavu.core.api import AuditedViewMixin
from wavu.customers.models import Customer

from . import selectors, services
from .models import LifecycleEvent, Subscription, SubscriptionAddOn


class SubscriptionAddOnSerializer(serializers.ModelSerializer):
    code = serializers.CharField(source="addon.code", read_only=True)
    name = serializers.CharField(source="addon.name", read_only=True)

    class Meta:
        model = SubscriptionAddOn
        fields = ["id", "addon", "code", "name", "quantity", "started_at", "ended_at"]
        read_only_fields = fields


class LifecycleEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = LifecycleEvent
        fields = ["id", "at", "kind", "from_status", "to_status", "reason", "actor_label", "data"]
        read_only_fields = fields


class SubscriptionSerializer(serializers.ModelSerializer):
    customer_account_number = serializers.CharField(source="customer.account_number", read_only=True)
    customer_name = serializers.CharField(source="customer.name", read_only=True)
    plan_code = serializers.CharField(source="plan.code", read_only=True)
    addons = SubscriptionAddOnSerializer(many=True, read_only=True)
    allowed_transitions = serializers.SerializerMethodField()

    class Meta:
        model = Subscription
        fields = [
            "id",
            "customer",
            "customer_account_number",
            "customer_name",
            "plan",
            "plan_code",
            "status",
            "allowed_transitions",
            "username",
            "static_ip",
            "mac_address",
            "billing_anchor_day",
            "scheduled_start",
            "activated_at",
            "current_period_start",
            "current_period_end",
            "paused_at",
            "cancelled_at",
            "notes",
            "addons",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_allowed_transitions(self, obj) -> list[str]:
        return selectors.allowed_next_statuses(obj)


class SubscriptionDetailSerializer(SubscriptionSerializer):
    """One service, for staff: includes the RADIUS password and the lifecycle events."""

    events = LifecycleEventSerializer(many=True, read_only=True)

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "password", "events"]
        read_only_fields = fields


class AddOnItemSerializer(serializers.Serializer):
    addon = serializers.PrimaryKeyRelatedField(queryset=AddOn.objects.all())
    quantity = serializers.IntegerField(min_value=1, max_value=1000, default=1)


class SubscriptionCreateSerializer(serializers.Serializer):
    customer = serializers.PrimaryKeyRelatedField(queryset=Customer.objects.all())
    plan = serializers.PrimaryKeyRelatedField(queryset=Plan.objects.all())
    addons = AddOnItemSerializer(many=True, required=False)
    username = serializers.CharField(
        max_length=64, required=False, allow_null=True, help_text="default: from the account number"
    )
    static_ip = serializers.CharField(max_length=45, required=False, allow_null=True, allow_blank=True)
    mac_address = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")
    billing_anchor_day = serializers.IntegerField(required=False, allow_null=True, help_text="postpaid: 1–31")
    start = serializers.DateTimeField(required=False, allow_null=True, help_text="planned start, e.g. installation")
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class LifecycleReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class ActivateSerializer(LifecycleReasonSerializer):
    at = serializers.DateTimeField(required=False, allow_null=True, help_text="default now")


class ChangePlanSerializer(LifecycleReasonSerializer):
    plan = serializers.PrimaryKeyRelatedField(queryset=Plan.objects.all())


class ChangeCredentialsSerializer(LifecycleReasonSerializer):
    username = serializers.CharField(max_length=64, required=False)
    regenerate_password = serializers.BooleanField(required=False, default=False)
    static_ip = serializers.CharField(max_length=45, required=False, allow_null=True, allow_blank=True)
    mac_address = serializers.CharField(max_length=32, required=False, allow_blank=True)


class SubscriptionViewSet(
    AuditedViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Services customers take: lifecycle actions and network credentials."""

    queryset = Subscription.objects.select_related("customer", "plan").prefetch_related("addons__addon")
    serializer_class = SubscriptionSerializer
    filterset_fields = ["customer", "status", "plan"]
    search_fields = ["username", "customer__name", "customer__account_number"]
    ordering_fields = ["created_at", "current_period_end", "username", "id"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self):
        qs = super().get_queryset()
        if self.action != "list":
            qs = qs.prefetch_related("events")
        return qs

    def get_serializer_class(self):
        return SubscriptionSerializer if self.action == "list" else SubscriptionDetailSerializer

    def _show(self, subscription, http_status=status.HTTP_200_OK):
        subscription = self.get_queryset().get(pk=subscription.pk)
        return Response(SubscriptionDetailSerializer(subscription).data, status=http_status)

    def _form(self, serializer_class):
        form = serializer_class(data=self.request.data)
        form.is_valid(raise_exception=True)
        return dict(form.validated_data)

    @extend_schema(request=SubscriptionCreateSerializer, responses={201: SubscriptionDetailSerializer})
    def create(self, request, *args, **kwargs):
        """Open a service (pending). Activate it when it goes live."""
        data = self._form(SubscriptionCreateSerializer)
        addons = [(item["addon"], item["quantity"]) for item in data.pop("addons", [])]
        subscription = services.create_subscription(data.pop("customer"), data.pop("plan"), addons=addons, **data)
        return self._show(subscription, status.HTTP_201_CREATED)

    @extend_schema(request=ActivateSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        """Start a new period now (or at `at`): first activation or renewal."""
        data = self._form(ActivateSerializer)
        return self._show(services.activate(self.get_object(), at=data.get("at"), reason=data["reason"]))

    @extend_schema(request=LifecycleReasonSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"])
    def suspend(self, request, pk=None):
        """Suspend an active service; its period is kept."""
        data = self._form(LifecycleReasonSerializer)
        return self._show(services.suspend(self.get_object(), reason=data["reason"]))

    @extend_schema(request=LifecycleReasonSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Bring a suspended or paused service back."""
        data = self._form(LifecycleReasonSerializer)
        return self._show(services.resume(self.get_object(), reason=data["reason"]))

    @extend_schema(request=LifecycleReasonSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        """Pause an active service at the customer's request."""
        data = self._form(LifecycleReasonSerializer)
        return self._show(services.pause(self.get_object(), reason=data["reason"]))

    @extend_schema(request=LifecycleReasonSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """End the service for good (releases its static IP)."""
        data = self._form(LifecycleReasonSerializer)
        return self._show(services.cancel(self.get_object(), reason=data["reason"]))

    @extend_schema(request=ChangePlanSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"], url_path="change-plan")
    def change_plan(self, request, pk=None):
        """Move the service to another plan."""
        data = self._form(ChangePlanSerializer)
        return self._show(services.change_plan(self.get_object(), data["plan"], reason=data["reason"]))

    @extend_schema(request=ChangeCredentialsSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"], url_path="change-credentials")
    def change_credentials(self, request, pk=None):
        """Change the username, static IP or MAC address, or issue a new password."""
        data = self._form(ChangeCredentialsSerializer)
        subscription = services.change_credentials(self.get_object(), **data)
        return self._show(subscription)


def register(router) -> None:
    """Add this app's routes to the v1 router."""
    router.register("subscriptions", SubscriptionViewSet, basename="subscription")

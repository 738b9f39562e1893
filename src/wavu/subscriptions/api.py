"""REST API v1 for subscriptions (services).

`subscriptions`: list (filter by customer, status, plan; `?search=` on username, customer name
and account number), retrieve, create (status pending; username and password generated unless
given), and the lifecycle actions `activate`, `suspend`, `resume`, `pause` (optional `until`),
`cancel`, `change-plan` (`when`: auto / now / period_end, prorated by
`billing.plan_changes.change_plan`), `cancel-plan-change`, plus `change-credentials` and
`update-details` (notes, billing day, auto_renew). No PATCH or delete: every change is an action
that goes through the services, is checked against the allowed status changes and is audited.
The RADIUS password is shown only in the detail of one service (and the create answer), never in
lists. A move the lifecycle does not allow answers 409 `invalid_transition` and changes nothing.

`lifecycle-events`: the read-only stream of every subscription's lifecycle events (status changes,
plan changes, pauses, reminders…) that RADIUS and SMS follow: ordered by id, paged by an id
cursor (`after`), filtered by `kind`, `subscription`, `customer` and `since`.
"""

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from wavu.billing import plan_changes, prepaid
from wavu.catalog.models import AddOn, Plan
from wavu.core.api import AuditedViewMixin, DateTimeField
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


class LifecycleEventStreamSerializer(serializers.ModelSerializer):
    """One event of the stream, in a stable shape: consumers (RADIUS, SMS) key on these names."""

    customer = serializers.IntegerField(source="subscription.customer_id", read_only=True)
    username = serializers.CharField(source="subscription.username", read_only=True)
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = LifecycleEvent
        fields = [
            "id",
            "at",
            "subscription",
            "customer",
            "username",
            "kind",
            "from_status",
            "to_status",
            "reason",
            "actor",
            "data",
        ]
        read_only_fields = fields


@extend_schema_serializer(many=False)  # the list action answers one page object, not a list
class LifecycleEventPageSerializer(serializers.Serializer):
    results = LifecycleEventStreamSerializer(many=True)
    next_after = serializers.IntegerField(help_text="pass as `after` to read on (the last id returned)")
    has_more = serializers.BooleanField()
    next = serializers.CharField(allow_null=True, help_text="the URL of the next page, or null")


class SubscriptionSerializer(serializers.ModelSerializer):
    customer_account_number = serializers.CharField(source="customer.account_number", read_only=True)
    customer_name = serializers.CharField(source="customer.name", read_only=True)
    plan_code = serializers.CharField(source="plan.code", read_only=True)
    pending_plan_code = serializers.CharField(source="pending_plan.code", read_only=True, allow_null=True)
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
            "next_bill_at",
            "pending_plan",
            "pending_plan_code",
            "pending_plan_at",
            "auto_renew",
            "suspension_cause",
            "paused_at",
            "pause_until",
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
    start = DateTimeField(required=False, allow_null=True, help_text="planned start, e.g. installation")
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class LifecycleReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class ActivateSerializer(LifecycleReasonSerializer):
    at = DateTimeField(required=False, allow_null=True, help_text="default now")


class PauseSerializer(LifecycleReasonSerializer):
    until = DateTimeField(
        required=False, allow_null=True, help_text="when it resumes by itself; default and at most PAUSE_MAX_DAYS"
    )


class ChangePlanSerializer(LifecycleReasonSerializer):
    plan = serializers.PrimaryKeyRelatedField(queryset=Plan.objects.all())
    when = serializers.ChoiceField(
        choices=[
            ("auto", "an upgrade now, a downgrade at the end of the period"),
            ("now", "now, prorated, either way"),
            ("period_end", "at the end of the current period"),
        ],
        default="auto",
    )


class PlanChangeResultSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[plan_changes.UPGRADE, plan_changes.DOWNGRADE])
    effective_at = serializers.DateTimeField()
    scheduled = serializers.BooleanField()
    credit = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="the credit note's amount")
    charge = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="the proration invoice's amount")
    credit_note = serializers.CharField(allow_null=True, help_text="the credit note's number")
    invoice = serializers.CharField(allow_null=True, help_text="the proration invoice's number")


class ChangePlanResponseSerializer(serializers.Serializer):
    """The service after the change, and what the change did."""

    subscription = SubscriptionDetailSerializer()
    plan_change = PlanChangeResultSerializer()


class PurchaseSerializer(LifecycleReasonSerializer):
    require_credit = serializers.BooleanField(
        default=True, help_text="false: staff grant the period on account (the invoice stays open)"
    )


class PurchaseResultSerializer(serializers.Serializer):
    invoice = serializers.CharField(help_text="the invoice's number")
    total = serializers.DecimalField(max_digits=14, decimal_places=2)
    period_start = serializers.DateTimeField(allow_null=True, help_text="empty: a package that starts at first login")
    period_end = serializers.DateTimeField(allow_null=True)
    event = serializers.CharField(help_text="activated or renewed")
    created = serializers.BooleanField(help_text="false: this period was already bought (nothing written)")


class PurchaseResponseSerializer(serializers.Serializer):
    """The service after the purchase, and what was bought."""

    subscription = SubscriptionDetailSerializer()
    purchase = PurchaseResultSerializer()


class UpdateDetailsSerializer(LifecycleReasonSerializer):
    notes = serializers.CharField(required=False, allow_blank=True)
    billing_anchor_day = serializers.IntegerField(required=False, allow_null=True, help_text="postpaid: 1–31")
    auto_renew = serializers.BooleanField(required=False, help_text="prepaid: renew from account credit at expiry")


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

    queryset = Subscription.objects.select_related("customer", "plan", "pending_plan").prefetch_related("addons__addon")
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

    @extend_schema(request=PauseSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        """Pause an active service at the customer's request (vacation hold) until `until`."""
        data = self._form(PauseSerializer)
        return self._show(services.pause(self.get_object(), until=data.get("until"), reason=data["reason"]))

    @extend_schema(request=LifecycleReasonSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """End the service for good (releases its static IP)."""
        data = self._form(LifecycleReasonSerializer)
        return self._show(services.cancel(self.get_object(), reason=data["reason"]))

    @extend_schema(request=ChangePlanSerializer, responses=ChangePlanResponseSerializer)
    @action(detail=True, methods=["post"], url_path="change-plan")
    def change_plan(self, request, pk=None):
        """Move the service to another plan: an upgrade now with a credit note for the unused old
        plan and an invoice for the rest of the period on the new one; a downgrade at the end of the
        period (or now, with `when=now`)."""
        data = self._form(ChangePlanSerializer)
        result = plan_changes.change_plan(self.get_object(), data["plan"], when=data["when"], reason=data["reason"])
        subscription = self.get_queryset().get(pk=pk)
        body = {
            "subscription": SubscriptionDetailSerializer(subscription).data,
            "plan_change": PlanChangeResultSerializer(
                {
                    "kind": result.kind,
                    "effective_at": result.effective_at,
                    "scheduled": result.scheduled,
                    "credit": result.credit,
                    "charge": result.charge,
                    "credit_note": result.credit_note.number if result.credit_note else None,
                    "invoice": result.invoice.number if result.invoice else None,
                }
            ).data,
        }
        return Response(body)

    @extend_schema(request=PurchaseSerializer, responses={201: PurchaseResponseSerializer})
    @action(detail=True, methods=["post"])
    def purchase(self, request, pk=None):
        """Buy one period of a prepaid or hotspot service from the customer's credit: it starts at the
        later of now and the current expiry. 409 `insufficient_credit` (with the shortfall) writes nothing."""
        data = self._form(PurchaseSerializer)
        result = prepaid.purchase_period(
            self.get_object(), reason=data["reason"], require_credit=data["require_credit"]
        )
        body = {
            "subscription": SubscriptionDetailSerializer(self.get_queryset().get(pk=pk)).data,
            "purchase": PurchaseResultSerializer(
                {
                    "invoice": result.invoice.number,
                    "total": result.invoice.total,
                    "period_start": result.period_start,
                    "period_end": result.period_end,
                    "event": result.event,
                    "created": result.created,
                }
            ).data,
        }
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    @extend_schema(request=LifecycleReasonSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"], url_path="cancel-plan-change")
    def cancel_plan_change(self, request, pk=None):
        """Drop a plan change scheduled for the end of the period (nothing happens without one)."""
        data = self._form(LifecycleReasonSerializer)
        subscription = self.get_object()
        services.cancel_scheduled_plan_change(subscription, reason=data["reason"])
        return self._show(subscription)

    @extend_schema(request=UpdateDetailsSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"], url_path="update-details")
    def update_details(self, request, pk=None):
        """Change the notes, the billing day (postpaid) or auto_renew (prepaid); only what is sent."""
        data = self._form(UpdateDetailsSerializer)
        reason = data.pop("reason")
        return self._show(services.update_subscription(self.get_object(), reason=reason, **data))

    @extend_schema(request=ChangeCredentialsSerializer, responses=SubscriptionDetailSerializer)
    @action(detail=True, methods=["post"], url_path="change-credentials")
    def change_credentials(self, request, pk=None):
        """Change the username, static IP or MAC address, or issue a new password."""
        data = self._form(ChangeCredentialsSerializer)
        subscription = services.change_credentials(self.get_object(), **data)
        return self._show(subscription)


_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,29}$")


class EventQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, default=0, help_text="return events with a larger id")
    subscription = serializers.IntegerField(min_value=1, required=False)
    customer = serializers.IntegerField(min_value=1, required=False)
    since = DateTimeField(required=False, help_text="events at or after this time")
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)


def _kinds(request) -> list[str] | None:
    kinds = [k.strip() for value in request.query_params.getlist("kind") for k in value.split(",") if k.strip()]
    bad = [k for k in kinds if not _KIND_RE.match(k)]
    if bad:
        raise serializers.ValidationError({"kind": [f"{bad[0]!r} is not an event kind, e.g. suspended"]})
    return kinds or None


class LifecycleEventViewSet(AuditedViewMixin, viewsets.ReadOnlyModelViewSet):
    """The lifecycle events of every service, oldest first, as a stream to follow.

    Read on from where you stopped with `?after=<the last id you processed>` (the answer's
    `next_after`) until `has_more` is false. Ids grow in insertion order; an event written by a
    transaction that commits late can appear with an id below one already read, so a consumer that
    must see every event re-reads a small window (e.g. `after` = last id − 1000) and skips the ids
    it has processed."""

    queryset = LifecycleEvent.objects.select_related("subscription").order_by("id")
    serializer_class = LifecycleEventStreamSerializer
    filter_backends: list = []
    pagination_class = None

    @extend_schema(
        parameters=[
            EventQuerySerializer,
            OpenApiParameter(
                "kind",
                OpenApiTypes.STR,
                many=True,
                description="only these kinds: repeat it or give a comma-separated list (suspended,resumed)",
            ),
        ],
        responses=LifecycleEventPageSerializer,
    )
    def list(self, request, *args, **kwargs):
        """Events with an id above `after`, oldest first, at most `limit` (100; up to 500)."""
        query = EventQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        limit = params["limit"]
        rows = list(
            selectors.events_after(
                params["after"],
                kinds=_kinds(request),
                subscription=params.get("subscription"),
                customer=params.get("customer"),
                since=params.get("since"),
                limit=limit + 1,
            )
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_after = rows[-1].pk if rows else params["after"]
        next_url = replace_query_param(request.build_absolute_uri(), "after", next_after) if has_more else None
        return Response(
            {
                "results": LifecycleEventStreamSerializer(rows, many=True).data,
                "next_after": next_after,
                "has_more": has_more,
                "next": next_url,
            }
        )


def register(router) -> None:
    """Add this app's routes to the v1 router."""
    router.register("subscriptions", SubscriptionViewSet, basename="subscription")
    router.register("lifecycle-events", LifecycleEventViewSet, basename="lifecycle-event")

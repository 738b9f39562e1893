"""REST API v1 for M-Pesa payment channels (staff only, like the rest of the API).

`payment-channels`: list (filters kind, environment, is_active; `?search=` on name and shortcode),
retrieve, create, PATCH. Secrets (consumer key and secret, passkey, security credential) are
write-only: a representation says only which are stored (`secrets_set`) and the state of each
(`secrets_status`: "set", "not set", or "unreadable" when it was stored under an encryption key Wavu
no longer has; PATCH a new value to replace it). It shows the callback URLs to
register with Daraja, the Daraja address the channel uses and the last C2B URL registration.
Actions: `register-c2b-urls` (POST, optional `response_type` "Completed"/"Cancelled") and
`rotate-hook-token` (POST). Every rule lives in `mpesa.channels`.

`payment-requests`: STK pushes (`mpesa.stk`). POST creates one for an invoice, a plan purchase (a
new service or a renewal) or a top-up and sends it (201, status pending or unknown; a push Daraja
refused is 502 `stk_push_failed` naming the request; another open request for the same purpose is
409 `stk_request_open`); GET lists (filters status, purpose, customer) and retrieves one — poll it
until `status` is final and show `customer_message`.

`refund-requests`: money sent back by M-Pesa (`mpesa.refunds`). POST creates a reversal of an M-Pesa
payment (`kind` "reversal" + `payment`) or a B2C refund of a customer's credit to a phone (`kind`
"b2c" + `customer`, optional `amount` and `phone`), always with a `reason` (201, status pending; a
request Daraja refused at once is 502 `refund_request_failed` naming it; a B2C amount over the credit
is 409 `refund_exceeds_credit`, nothing written); GET lists (filters kind, status, customer, payment)
and retrieves; `resolve` (POST `outcome` completed/failed + `reason`) settles a request M-Pesa timed
out, after staff checked the M-Pesa portal.
"""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from wavu.billing.models import Invoice
from wavu.core.api import AuditedViewMixin
from wavu.core.errors import DomainError
from wavu.customers.models import Customer
from wavu.payments.models import Payment
from wavu.subscriptions.models import Subscription

from . import channels, daraja, refunds, stk
from .models import PaymentChannel, RefundRequest, StkRequest

# "kind" names other choice sets too; a pattern (not an enum) avoids a schema naming collision until
# PaymentChannel.Kind is in SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] (then a plain ChoiceField will do).
_KIND_SCHEMA = {
    "type": "string",
    "pattern": "^(" + "|".join(PaymentChannel.Kind.values) + ")$",
    "description": "paybill, till (buy goods), or b2c (bulk disbursement: refunds to phones)",
}


@extend_schema_field(_KIND_SCHEMA)
class ChannelKindField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=PaymentChannel.Kind.choices, **kwargs)


def _callback_urls_serializer(name: str):
    return inline_serializer(name, {key: serializers.URLField() for key in channels.HOOKS})


class PaymentChannelSerializer(serializers.ModelSerializer):
    kind = ChannelKindField(read_only=True)
    secrets_set = serializers.SerializerMethodField()
    secrets_status = serializers.SerializerMethodField()
    callback_urls = serializers.SerializerMethodField()
    daraja_url = serializers.SerializerMethodField()
    last_c2b_registration = serializers.SerializerMethodField()

    class Meta:
        model = PaymentChannel
        fields = [
            "id",
            "name",
            "kind",
            "shortcode",
            "till_number",
            "environment",
            "base_url",
            "daraja_url",
            "initiator_name",
            "validation",
            "allowlist_mode",
            "allowlist",
            "is_active",
            "secrets_set",
            "secrets_status",
            "callback_urls",
            "last_c2b_registration",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        inline_serializer("PaymentChannelSecretsSet", {f: serializers.BooleanField() for f in channels.SECRET_FIELDS})
    )
    def get_secrets_set(self, obj) -> dict:
        return channels.secrets_set(obj)

    @extend_schema_field(
        inline_serializer(
            "PaymentChannelSecretsStatus",
            {
                f: serializers.ChoiceField(
                    choices=channels.SECRET_STATES,
                    help_text="unreadable: stored under an encryption key Wavu no longer has; enter it again",
                )
                for f in channels.SECRET_FIELDS
            },
        )
    )
    def get_secrets_status(self, obj) -> dict:
        return channels.secrets_status(obj)

    @extend_schema_field(_callback_urls_serializer("PaymentChannelCallbackUrls"))
    def get_callback_urls(self, obj) -> dict:
        return channels.callback_urls(obj)

    def get_daraja_url(self, obj) -> str:
        return daraja.base_url_for(obj)

    @extend_schema_field(
        inline_serializer(
            "PaymentChannelC2BRegistration",
            {
                "at": serializers.DateTimeField(),
                "by": serializers.CharField(),
                "registered": serializers.BooleanField(),
                "message": serializers.CharField(),
                "confirmation_url": serializers.CharField(),
                "validation_url": serializers.CharField(),
                "response_type": serializers.CharField(),
            },
            allow_null=True,
        )
    )
    def get_last_c2b_registration(self, obj) -> dict | None:
        return channels.last_c2b_registration(obj)


class PaymentChannelWriteSerializer(serializers.Serializer):
    """Shapes only; the rules (digits, till number, environment, allowlist) are the service's."""

    name = serializers.CharField(max_length=80, required=False)
    kind = ChannelKindField(required=False)
    shortcode = serializers.CharField(max_length=12, required=False, help_text="paybill number or till store number")
    till_number = serializers.CharField(max_length=12, required=False, allow_blank=True)
    environment = serializers.ChoiceField(choices=PaymentChannel.Environment.choices, required=False)
    base_url = serializers.CharField(max_length=200, required=False, allow_blank=True)
    consumer_key = serializers.CharField(required=False, allow_blank=True, write_only=True, trim_whitespace=True)
    consumer_secret = serializers.CharField(required=False, allow_blank=True, write_only=True, trim_whitespace=True)
    passkey = serializers.CharField(required=False, allow_blank=True, write_only=True, trim_whitespace=True)
    initiator_name = serializers.CharField(max_length=80, required=False, allow_blank=True)
    security_credential = serializers.CharField(required=False, allow_blank=True, write_only=True, trim_whitespace=True)
    validation = serializers.ChoiceField(choices=PaymentChannel.Validation.choices, required=False)
    allowlist_mode = serializers.ChoiceField(choices=PaymentChannel.Allowlist.choices, required=False)
    allowlist = serializers.CharField(required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({f: ["This field cannot be set."] for f in unknown})
        return super().to_internal_value(data)


class RegisterC2BSerializer(serializers.Serializer):
    response_type = serializers.ChoiceField(
        choices=[("Completed", "Completed"), ("Cancelled", "Cancelled")],
        default="Completed",
        help_text="what M-Pesa does when the validation URL cannot be reached",
    )


class C2BRegistrationSerializer(serializers.Serializer):
    registered = serializers.BooleanField()
    response_code = serializers.CharField()
    response_description = serializers.CharField()
    originator_conversation_id = serializers.CharField()
    confirmation_url = serializers.URLField()
    validation_url = serializers.URLField()


class PaymentChannelViewSet(
    AuditedViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """M-Pesa paybill and till channels with their Daraja settings (secrets write-only)."""

    queryset = PaymentChannel.objects.all()
    serializer_class = PaymentChannelSerializer
    filterset_fields = ["kind", "environment", "is_active"]
    search_fields = ["name", "shortcode", "till_number"]
    ordering_fields = ["name", "shortcode", "id"]
    ordering = ["name"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def _show(self, channel, http_status=status.HTTP_200_OK):
        channel = PaymentChannel.objects.get(pk=channel.pk)
        return Response(PaymentChannelSerializer(channel).data, status=http_status)

    @extend_schema(request=PaymentChannelWriteSerializer, responses={201: PaymentChannelSerializer})
    def create(self, request, *args, **kwargs):
        form = PaymentChannelWriteSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return self._show(channels.create_channel(**form.validated_data), status.HTTP_201_CREATED)

    @extend_schema(request=PaymentChannelWriteSerializer, responses={200: PaymentChannelSerializer})
    def partial_update(self, request, *args, **kwargs):
        channel = self.get_object()
        form = PaymentChannelWriteSerializer(data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        return self._show(channels.update_channel(channel, reason="api", **form.validated_data))

    @extend_schema(exclude=True)
    def update(self, request, *args, **kwargs):  # PUT is not offered (http_method_names); PATCH only
        return self.partial_update(request, *args, **kwargs)

    @extend_schema(
        request=RegisterC2BSerializer,
        responses={
            200: C2BRegistrationSerializer,
            409: OpenApiResponse(description="channel_not_configured: no consumer key and secret"),
            502: OpenApiResponse(description="Daraja refused the registration"),
            503: OpenApiResponse(description="daraja_unavailable: Daraja cannot be reached; try later"),
        },
    )
    @action(detail=True, methods=["post"], url_path="register-c2b-urls")
    def register_c2b_urls(self, request, pk=None):
        """Register the channel's C2B confirmation and validation URLs with Daraja (audited)."""
        channel = self.get_object()
        form = RegisterC2BSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        result = channels.register_c2b_urls(channel, response_type=form.validated_data["response_type"])
        urls = channels.callback_urls(channel)
        return Response(
            {
                "registered": True,
                "response_code": result.response_code,
                "response_description": result.response_description,
                "originator_conversation_id": result.originator_conversation_id,
                "confirmation_url": urls["c2b_confirmation"],
                "validation_url": urls["c2b_validation"],
            }
        )

    @extend_schema(request=None, responses={200: PaymentChannelSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-hook-token")
    def rotate_hook_token(self, request, pk=None):
        """A new hook token: the old callback URLs stop working; register the C2B URLs again."""
        return self._show(channels.rotate_hook_token(self.get_object(), reason="api"))


class StkRequestSerializer(serializers.ModelSerializer):
    class Meta:
        model = StkRequest
        fields = [
            "id",
            "channel",
            "purpose",
            "customer",
            "invoice",
            "subscription",
            "phone",
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
            "created_at",
            "settled_at",
            "next_check_at",
            "checks",
        ]
        read_only_fields = fields


class StkRequestCreateSerializer(serializers.Serializer):
    """Shapes only; the rules (phone, whole shillings, one open request per purpose) are `stk`'s."""

    purpose = serializers.ChoiceField(choices=StkRequest.Purpose.choices)
    customer = serializers.PrimaryKeyRelatedField(queryset=Customer.objects.all(), required=False)
    invoice = serializers.PrimaryKeyRelatedField(queryset=Invoice.objects.all(), required=False)
    subscription = serializers.PrimaryKeyRelatedField(queryset=Subscription.objects.all(), required=False)
    phone = serializers.CharField(max_length=20, required=False, help_text="default: the customer's phone")
    amount = serializers.CharField(
        max_length=20, required=False, help_text="whole shillings; default: what the invoice or period needs"
    )
    channel = serializers.PrimaryKeyRelatedField(queryset=PaymentChannel.objects.all(), required=False)

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({f: ["This field cannot be set."] for f in unknown})
        return super().to_internal_value(data)


class StkPushFailed(DomainError):
    code = "stk_push_failed"
    status = 502


class StkRequestViewSet(
    AuditedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """STK push requests: create (sends the push) and poll until the status is final."""

    queryset = StkRequest.objects.all()
    serializer_class = StkRequestSerializer
    filterset_fields = ["status", "purpose", "customer"]
    ordering_fields = ["created_at", "id"]
    ordering = ["-created_at", "-id"]

    @extend_schema(
        request=StkRequestCreateSerializer,
        responses={
            201: StkRequestSerializer,
            502: OpenApiResponse(description="stk_push_failed: the push was not sent"),
        },
    )
    def create(self, request, *args, **kwargs):
        form = StkRequestCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        created = stk.request_stk_push(data.pop("purpose"), **data)
        if created.status not in StkRequest.OPEN_STATUSES:
            raise StkPushFailed(created.customer_message, fields={"request": [str(created.pk)]})
        return Response(StkRequestSerializer(created).data, status=status.HTTP_201_CREATED)


def _pattern_field(choices, description: str):
    """A choice field documented as a string pattern: "kind" and "status" name other choice sets too,
    and a second enum under the same field name would collide in the schema."""

    @extend_schema_field(
        {"type": "string", "pattern": "^(" + "|".join(choices.values) + ")$", "description": description}
    )
    class PatternChoiceField(serializers.ChoiceField):
        def __init__(self, **kwargs):
            super().__init__(choices=choices.choices, **kwargs)

    return PatternChoiceField


RefundKindField = _pattern_field(
    RefundRequest.Kind, "reversal (a payment back to its payer) or b2c (credit to a phone)"
)
RefundStatusField = _pattern_field(RefundRequest.Status, "pending, completed, failed or timed_out")


class MpesaRefundRequestSerializer(serializers.ModelSerializer):
    kind = RefundKindField(read_only=True)
    status = RefundStatusField(read_only=True)

    class Meta:
        model = RefundRequest
        fields = [
            "id",
            "kind",
            "status",
            "channel",
            "payment",
            "customer",
            "amount",
            "phone",
            "original_receipt",
            "reason",
            "originator_conversation_id",
            "conversation_id",
            "result_code",
            "result_desc",
            "outcome",
            "receipt",
            "refunds",
            "requested_by",
            "created_at",
            "settled_at",
            "settled_by",
        ]
        read_only_fields = fields


class MpesaRefundRequestCreateSerializer(serializers.Serializer):
    """Shapes only; the rules (credit, whole shillings, one reversal per payment) are `refunds`'."""

    kind = RefundKindField()
    reason = serializers.CharField(max_length=300, help_text="why the money goes back (kept on the request)")
    payment = serializers.PrimaryKeyRelatedField(
        queryset=Payment.objects.all(), required=False, help_text="reversal: the M-Pesa payment to send back"
    )
    customer = serializers.PrimaryKeyRelatedField(
        queryset=Customer.objects.all(), required=False, help_text="b2c: whose credit to refund"
    )
    amount = serializers.CharField(
        max_length=20, required=False, help_text="b2c: whole shillings; default: all the credit, rounded down"
    )
    phone = serializers.CharField(max_length=20, required=False, help_text="b2c: default the customer's phone")
    channel = serializers.PrimaryKeyRelatedField(queryset=PaymentChannel.objects.all(), required=False)

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({f: ["This field cannot be set."] for f in unknown})
        return super().to_internal_value(data)

    def validate(self, attrs):
        if attrs["kind"] == RefundRequest.Kind.REVERSAL:
            if "payment" not in attrs:
                raise serializers.ValidationError({"payment": ["Name the M-Pesa payment to reverse."]})
            extra = sorted({"customer", "amount", "phone"} & set(attrs))
            if extra:
                raise serializers.ValidationError(
                    {f: ["A reversal sends the whole payment back to its payer."] for f in extra}
                )
        else:
            if "customer" not in attrs:
                raise serializers.ValidationError({"customer": ["Name the customer whose credit to refund."]})
            if "payment" in attrs:
                raise serializers.ValidationError({"payment": ["A B2C refund pays out credit, not one payment."]})
        return attrs


class MpesaRefundResolveSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(
        choices=[("completed", "completed"), ("failed", "failed")],
        help_text="what the M-Pesa portal shows: completed (the money left) or failed",
    )
    reason = serializers.CharField(max_length=300)
    receipt = serializers.CharField(max_length=20, required=False, allow_blank=True)


class RefundRequestFailed(DomainError):
    code = "refund_request_failed"
    status = 502


class MpesaRefundRequestViewSet(
    AuditedViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Reversals of M-Pesa payments and B2C refunds of credit: create (sends it), poll, resolve a timeout."""

    queryset = RefundRequest.objects.all()
    serializer_class = MpesaRefundRequestSerializer
    filterset_fields = ["kind", "status", "customer", "payment"]
    ordering_fields = ["created_at", "id"]
    ordering = ["-created_at", "-id"]

    @extend_schema(
        request=MpesaRefundRequestCreateSerializer,
        responses={
            201: MpesaRefundRequestSerializer,
            502: OpenApiResponse(description="refund_request_failed: Daraja refused the request"),
        },
    )
    def create(self, request, *args, **kwargs):
        form = MpesaRefundRequestCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        kind, reason, channel = data.pop("kind"), data.pop("reason"), data.pop("channel", None)
        if kind == RefundRequest.Kind.REVERSAL:
            created = refunds.request_reversal(data["payment"], reason=reason, channel=channel)
        else:
            created = refunds.request_b2c_refund(data.pop("customer"), reason=reason, channel=channel, **data)
        if created.status == RefundRequest.Status.FAILED:
            raise RefundRequestFailed(created.outcome, fields={"request": [str(created.pk)]})
        return Response(MpesaRefundRequestSerializer(created).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MpesaRefundResolveSerializer, responses={200: MpesaRefundRequestSerializer})
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        """Settle a pending or timed-out request after checking the M-Pesa portal (audited with the reason)."""
        form = MpesaRefundResolveSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        resolved = refunds.resolve_request(self.get_object(), **form.validated_data)
        return Response(MpesaRefundRequestSerializer(resolved).data)


def register(router):
    router.register("payment-channels", PaymentChannelViewSet, basename="payment-channel")
    router.register("payment-requests", StkRequestViewSet, basename="payment-request")
    router.register("refund-requests", MpesaRefundRequestViewSet, basename="refund-request")

"""REST API v1 for the network: the NAS registry (staff only, like the rest of the API).

`nas`: list (filter `type`; `?search=` on address, short name and description), retrieve, create
(POST), change (PATCH) and delete. The shared secret is write-only: an answer shows only
`masked_secret` (asterisks and its last 3 characters); a PATCH without `secret` keeps it. Every rule
lives in `network.services` (invalid or taken values → 400 with field errors, nothing written).
FreeRADIUS reads the registry when it starts: restart it after a change (docs/network.md).
"""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from wavu.core.api import AuditedViewMixin

from . import services
from .models import Nas, NasProfile


class NasSerializer(serializers.ModelSerializer):
    address = serializers.CharField(source="nasname", help_text="the router's IP address (or a CIDR network)")
    coa_port = serializers.IntegerField(source="ports", allow_null=True, help_text="CoA / Disconnect port")
    masked_secret = serializers.SerializerMethodField()
    site = serializers.SerializerMethodField()
    enabled = serializers.SerializerMethodField()

    class Meta:
        model = Nas
        fields = [
            "id",
            "address",
            "shortname",
            "type",
            "coa_port",
            "masked_secret",
            "server",
            "community",
            "description",
            "site",
            "enabled",
        ]
        read_only_fields = fields

    def get_masked_secret(self, obj) -> str:
        return services.masked_secret(obj.secret)

    def _profile(self, obj) -> NasProfile | None:
        try:
            return obj.profile
        except NasProfile.DoesNotExist:
            return None

    def get_site(self, obj) -> str:
        profile = self._profile(obj)
        return profile.site if profile else ""

    def get_enabled(self, obj) -> bool:
        profile = self._profile(obj)
        return profile.enabled if profile else True


class NasWriteSerializer(serializers.Serializer):
    """Shapes only; the rules (address, secret, uniqueness) are the service's."""

    address = serializers.CharField(max_length=64, required=False, help_text="IP address or CIDR network")
    shortname = serializers.CharField(max_length=64, required=False)
    type = serializers.ChoiceField(choices=Nas.Type.choices, required=False)
    coa_port = serializers.IntegerField(required=False, help_text="default 3799")
    secret = serializers.CharField(
        required=False, write_only=True, trim_whitespace=False, help_text="16–128 characters; write-only"
    )
    server = serializers.CharField(max_length=64, required=False, allow_blank=True)
    community = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(max_length=400, required=False, allow_blank=True)
    site = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({f: ["This field cannot be set."] for f in unknown})
        return super().to_internal_value(data)


class NasViewSet(
    AuditedViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Routers (NAS) that FreeRADIUS accepts RADIUS from and Wavu sends CoA to (secret write-only)."""

    queryset = Nas.objects.select_related("profile")
    serializer_class = NasSerializer
    filterset_fields = ["type"]
    search_fields = ["nasname", "shortname", "description"]
    ordering_fields = ["shortname", "nasname", "id"]
    ordering = ["shortname"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def _show(self, nas, http_status=status.HTTP_200_OK):
        return Response(NasSerializer(Nas.objects.select_related("profile").get(pk=nas.pk)).data, status=http_status)

    @extend_schema(request=NasWriteSerializer, responses={201: NasSerializer})
    def create(self, request, *args, **kwargs):
        form = NasWriteSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return self._show(services.create_nas(reason="api", **form.validated_data), status.HTTP_201_CREATED)

    @extend_schema(request=NasWriteSerializer, responses={200: NasSerializer})
    def partial_update(self, request, *args, **kwargs):
        nas = self.get_object()
        form = NasWriteSerializer(data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        return self._show(services.update_nas(nas, reason="api", **form.validated_data))

    @extend_schema(exclude=True)
    def update(self, request, *args, **kwargs):  # PUT is not offered (http_method_names); PATCH only
        return self.partial_update(request, *args, **kwargs)

    def perform_destroy(self, instance):
        services.delete_nas(instance, reason="api")


def register(router) -> None:
    router.register("nas", NasViewSet, basename="nas")

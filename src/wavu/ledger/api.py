"""REST API v1 for the ledger: read-only. Money moves only through the services of billing and payments.

Routes: `ledger/accounts` (chart of accounts with balances, looked up by code), `ledger/entries`
(journal entries with their postings), `ledger/trial-balance`.
"""

from decimal import Decimal

import django_filters
from django.db.models import Prefetch, Sum
from django.db.models.functions import Coalesce
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response

from wavu.core.api import AuditedViewMixin, IdFilter, IsoDateTimeFilter

from . import selectors
from .models import Account, JournalEntry, Posting

MONEY = {"max_digits": 16, "decimal_places": 2}


class AccountSerializer(serializers.ModelSerializer):
    balance = serializers.DecimalField(
        **MONEY, read_only=True, help_text="sum of the postings: debit positive, credit negative"
    )

    class Meta:
        model = Account
        fields = ["code", "name", "type", "is_customer_subledger", "balance"]


class PostingSerializer(serializers.ModelSerializer):
    account = serializers.CharField(source="account.code", read_only=True)
    account_name = serializers.CharField(source="account.name", read_only=True)

    class Meta:
        model = Posting
        fields = ["id", "account", "account_name", "customer", "amount"]


class JournalEntrySerializer(serializers.ModelSerializer):
    postings = PostingSerializer(many=True, read_only=True)

    class Meta:
        model = JournalEntry
        fields = [
            "id",
            "kind",
            "posted_at",
            "memo",
            "currency",
            "source_type",
            "source_id",
            "reverses",
            "actor_label",
            "postings",
        ]


class AccountViewSet(AuditedViewMixin, viewsets.ReadOnlyModelViewSet):
    """The chart of accounts with each account's balance (debit positive)."""

    serializer_class = AccountSerializer
    lookup_field = "code"
    filterset_fields = ["type", "is_customer_subledger"]
    search_fields = ["code", "name"]
    ordering_fields = ["code", "name", "balance"]
    ordering = ["code"]

    def get_queryset(self):
        return Account.objects.annotate(balance=Coalesce(Sum("postings__amount"), Decimal(0)))


class JournalEntryFilter(django_filters.FilterSet):
    posted_after = IsoDateTimeFilter(field_name="posted_at", lookup_expr="gte")
    posted_before = IsoDateTimeFilter(field_name="posted_at", lookup_expr="lt")
    posted_on_or_after = django_filters.DateFilter(field_name="posted_at", lookup_expr="date__gte")
    posted_on_or_before = django_filters.DateFilter(field_name="posted_at", lookup_expr="date__lte")
    customer = IdFilter(method="filter_customer", help_text="entries touching this customer")
    account = django_filters.CharFilter(method="filter_account", help_text="entries posting to this account code")

    class Meta:
        model = JournalEntry
        fields = ["kind", "source_type", "source_id", "currency"]

    def filter_customer(self, queryset, name, value):
        return queryset.filter(pk__in=Posting.objects.filter(customer_id=value).values("entry_id"))

    def filter_account(self, queryset, name, value):
        return queryset.filter(pk__in=Posting.objects.filter(account__code=value).values("entry_id"))


class JournalEntryViewSet(AuditedViewMixin, viewsets.ReadOnlyModelViewSet):
    """The append-only journal, each entry with its postings (debits positive, credits negative)."""

    serializer_class = JournalEntrySerializer
    filterset_class = JournalEntryFilter
    search_fields = ["memo", "source_id"]
    ordering_fields = ["posted_at", "id"]
    ordering = ["-posted_at", "-id"]

    def get_queryset(self):
        return JournalEntry.objects.prefetch_related(
            Prefetch("postings", queryset=Posting.objects.select_related("account").order_by("id"))
        )


_TrialBalanceRow = inline_serializer(
    "TrialBalanceRow",
    {
        "code": serializers.CharField(),
        "name": serializers.CharField(),
        "type": serializers.CharField(),
        "debit": serializers.DecimalField(**MONEY),
        "credit": serializers.DecimalField(**MONEY),
    },
)


@extend_schema_serializer(many=False)  # the list action answers one trial balance, not a list
class TrialBalanceSerializer(serializers.Serializer):
    rows = serializers.ListField(child=_TrialBalanceRow)
    debit = serializers.DecimalField(**MONEY)
    credit = serializers.DecimalField(**MONEY)
    balanced = serializers.BooleanField()


class TrialBalanceViewSet(AuditedViewMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Debits and credits per account and in total, summed from every posting."""

    serializer_class = TrialBalanceSerializer
    pagination_class = None
    filter_backends = []

    @extend_schema(responses=TrialBalanceSerializer)
    def list(self, request, *args, **kwargs):
        return Response(TrialBalanceSerializer(selectors.trial_balance()).data)


def register(router) -> None:
    """Add this app's routes to the v1 router."""
    router.register("ledger/accounts", AccountViewSet, basename="ledger-account")
    router.register("ledger/entries", JournalEntryViewSet, basename="ledger-entry")
    router.register("ledger/trial-balance", TrialBalanceViewSet, basename="ledger-trial-balance")

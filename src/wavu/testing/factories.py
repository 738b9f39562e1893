"""factory_boy factories shared by every app's tests. They write rows directly (test set-up);
tests exercise behaviour through the services."""

import datetime as dt
from decimal import Decimal

import factory
from django.utils import timezone

from wavu.catalog.models import AddOn, AddOnPrice, Plan, PlanPrice
from wavu.core.identifiers import make_account_number
from wavu.customers.models import Customer
from wavu.subscriptions.models import Subscription

EPOCH = timezone.make_aware(dt.datetime(2020, 1, 1))


def _now():
    return timezone.now()


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    account_number = factory.Sequence(lambda n: make_account_number(900000 + n))
    name = factory.Sequence(lambda n: f"Wanjiku Kamau {n}")
    phone = factory.Sequence(lambda n: f"2547{n % 100000000:08d}")
    created_at = factory.LazyFunction(_now)
    updated_at = factory.LazyFunction(_now)


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan
        skip_postgeneration_save = True

    code = factory.Sequence(lambda n: f"home-fibre-{n}")
    name = factory.Sequence(lambda n: f"Home Fibre {n}")
    kind = Plan.Kind.POSTPAID
    validity_unit = Plan.ValidityUnit.MONTH
    validity_count = 1
    download_kbps = 10_000
    upload_kbps = 5_000
    technology = Plan.Technology.FTTH
    created_at = factory.LazyFunction(_now)
    updated_at = factory.LazyFunction(_now)

    class Params:
        price = Decimal("2500.00")

    @factory.post_generation
    def with_price(obj, create, extracted, **kwargs):
        if create:
            PlanPrice.objects.create(
                plan=obj,
                amount=extracted if extracted is not None else Decimal("2500.00"),
                valid_from=EPOCH,
                created_at=EPOCH,
            )


class AddOnFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AddOn
        skip_postgeneration_save = True

    code = factory.Sequence(lambda n: f"static-ip-{n}")
    name = "Static IP"
    category = AddOn.Category.STATIC_IP
    billing = AddOn.Billing.RECURRING
    created_at = factory.LazyFunction(_now)
    updated_at = factory.LazyFunction(_now)

    @factory.post_generation
    def with_price(obj, create, extracted, **kwargs):
        if create:
            AddOnPrice.objects.create(
                addon=obj,
                amount=extracted if extracted is not None else Decimal("500.00"),
                valid_from=EPOCH,
                created_at=EPOCH,
            )


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subscription

    customer = factory.SubFactory(CustomerFactory)
    plan = factory.SubFactory(PlanFactory)
    status = "active"
    username = factory.Sequence(lambda n: f"user{n:05d}")
    password = "s3cret-pass"
    created_at = factory.LazyFunction(_now)
    updated_at = factory.LazyFunction(_now)

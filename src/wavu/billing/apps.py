from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "wavu.billing"
    label = "billing"
    verbose_name = "Billing"

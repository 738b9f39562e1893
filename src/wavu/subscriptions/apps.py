from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "wavu.subscriptions"
    label = "subscriptions"
    verbose_name = "Subscriptions"

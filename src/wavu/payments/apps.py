from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "wavu.payments"
    label = "payments"
    verbose_name = "Payments"

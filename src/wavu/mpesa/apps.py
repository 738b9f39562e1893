from django.apps import AppConfig


class MpesaConfig(AppConfig):
    name = "wavu.mpesa"
    label = "mpesa"
    verbose_name = "M-Pesa"

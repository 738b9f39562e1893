from django.apps import AppConfig


class MpesaSimulatorConfig(AppConfig):
    """Hosts `wavu mpesa-simulator`; no models. The simulator itself needs only the standard library."""

    name = "wavu.mpesa_simulator"
    label = "mpesa_simulator"
    verbose_name = "M-Pesa simulator"

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Hosts `wavu demo` and `wavu seed-demo`; no models."""

    name = "wavu.demo"
    label = "demo"
    verbose_name = "Demo"

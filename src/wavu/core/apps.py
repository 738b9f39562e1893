from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "wavu.core"
    label = "core"
    verbose_name = "Core (tax rates, audit trail, sequences)"

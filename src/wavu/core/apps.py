from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_migrate


class CoreConfig(AppConfig):
    name = "wavu.core"
    label = "core"
    verbose_name = "Core (tax rates, audit trail, sequences)"

    def ready(self):
        from .db import drop_row_protections, install_row_protections

        # Schema maintenance, not business logic: keep the immutability triggers in step with the
        # declarations after every migrate (see core/db.py). Connected once, for the core app only.
        pre_migrate.connect(drop_row_protections, sender=self, dispatch_uid="wavu_drop_row_protections")
        post_migrate.connect(install_row_protections, sender=self, dispatch_uid="wavu_install_row_protections")

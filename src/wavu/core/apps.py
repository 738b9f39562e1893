from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
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

        from . import audit

        # Auditing, not business logic: every session login, failed login and logout leaves an audit
        # event (core/audit.py, "sign-ins"). Token-authenticated API requests are not logins.
        user_logged_in.connect(audit.on_user_logged_in, dispatch_uid="wavu_audit_login")
        user_login_failed.connect(audit.on_user_login_failed, dispatch_uid="wavu_audit_login_failed")
        user_logged_out.connect(audit.on_user_logged_out, dispatch_uid="wavu_audit_logout")

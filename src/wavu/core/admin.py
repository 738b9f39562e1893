"""Admin for core records: tax rates (added through the service, never edited), the audit trail (read-only),
and background work: job records with a "retry now" action, scheduler slots and worker heartbeats (read-only)."""

from django.contrib import admin
from django.core.exceptions import ValidationError
from django_tasks_db.admin import DBTaskResultAdmin
from django_tasks_db.models import DBTaskResult

from . import audit
from .models import AuditEvent, ScheduledRun, Sequence, TaxRate, WorkerHeartbeat
from .services import add_tax_rate
from .tasks import attempt_of, gave_up
from .tasks import retry_now as retry_job


class ReadOnlyMixin:
    """Posted records (financial records, audit events): viewable, never added, changed or deleted here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    pass


class ReadOnlyInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


@admin.register(TaxRate)
class TaxRateAdmin(admin.ModelAdmin):
    list_display = ("tax_class", "kind", "rate", "valid_from", "source")
    list_filter = ("tax_class", "kind")
    ordering = ("tax_class", "kind", "-valid_from")

    def get_readonly_fields(self, request, obj=None):
        # A rate in force may already be on issued invoices: add a new row instead of editing.
        return ("tax_class", "kind", "rate", "valid_from", "source") if obj else ()

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            saved = add_tax_rate(
                tax_class=obj.tax_class, kind=obj.kind, rate=obj.rate, valid_from=obj.valid_from, source=obj.source
            )
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), level="error")
            return
        obj.pk = saved.pk

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor_label", "source_ip", "action", "verb", "object_type", "object_repr")
    list_filter = ("action", "object_type", "verb")
    search_fields = ("object_repr", "object_id", "actor_label", "reason")
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]


@admin.register(Sequence)
class SequenceAdmin(admin.ModelAdmin):
    list_display = ("name", "next_value")
    readonly_fields = ("name", "next_value")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- background jobs -------------------------------------------------------------------------------
# django_tasks_db registers a read-only admin for job records; Wavu's adds the attempt, the error and
# a "retry now" action, and lists the scheduler's slots and the workers' heartbeats.

admin.site.unregister(DBTaskResult)


@admin.register(DBTaskResult)
class JobRecordAdmin(DBTaskResultAdmin):
    list_display = (
        "enqueued_at",
        "task_name",
        "status",
        "attempt",
        "error",
        "run_after_display",
        "started_at",
        "finished_at",
        "queue_name",
    )
    list_filter = ("status", "queue_name", "task_path")
    search_fields = ("id", "task_path", "exception_class_path")
    actions = ("retry_now",)

    @admin.display(description="attempt")
    def attempt(self, obj):
        return attempt_of(obj)

    @admin.display(description="error")
    def error(self, obj):
        if not obj.exception_class_path:
            return ""
        return obj.exception_class_path.rsplit(".", 1)[-1] + (" (gave up)" if gave_up(obj) else "")

    @admin.display(description="run after")
    def run_after_display(self, obj):
        return self.display_run_after(obj)

    @admin.action(description="Retry now (a fresh copy of each selected failed job that gave up)")
    def retry_now(self, request, queryset):
        retried, skipped = 0, 0
        for result in queryset:
            try:
                with audit.acting_as(user=request.user, source_ip=request.META.get("REMOTE_ADDR")):
                    retry_job(result)
            except ValueError:
                skipped += 1
            else:
                retried += 1
        self.message_user(request, f"{retried} job(s) enqueued again.")
        if skipped:
            self.message_user(
                request,
                f"{skipped} skipped: only failed jobs that gave up can be retried (others retry by themselves).",
                level="warning",
            )


@admin.register(ScheduledRun)
class ScheduledRunAdmin(ReadOnlyAdmin):
    list_display = ("name", "slot", "fired_at", "task_result_id")
    list_filter = ("name",)
    date_hierarchy = "slot"
    readonly_fields = [f.name for f in ScheduledRun._meta.fields]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("worker_id", "hostname", "pid", "queues", "runs_scheduler", "started_at", "last_seen_at")
    readonly_fields = [f.name for f in WorkerHeartbeat._meta.fields]

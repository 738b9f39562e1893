"""Core records: tax rates (data, effective-dated), gap-free sequences, and the audit trail."""

from django.conf import settings
from django.db import models

from .db import RowProtection
from .tax import TaxClass, TaxKind


class TaxRate(models.Model):
    """One tax rate for one tax class, in force from `valid_from` until a later row replaces it."""

    tax_class = models.CharField(max_length=20, choices=TaxClass.choices)
    kind = models.CharField(max_length=10, choices=TaxKind.choices)
    rate = models.DecimalField(max_digits=6, decimal_places=4, help_text="fraction, e.g. 0.1600")
    valid_from = models.DateField()
    source = models.CharField(max_length=200, blank=True, help_text="the law or notice that set it")

    class Meta:
        ordering = ["tax_class", "kind", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["tax_class", "kind", "valid_from"], name="taxrate_unique_start"),
            models.CheckConstraint(condition=models.Q(rate__gte=0, rate__lt=1), name="taxrate_rate_range"),
        ]

    def __str__(self):
        return f"{self.get_tax_class_display()} {self.kind} {self.rate:.2%} from {self.valid_from}"


class Sequence(models.Model):
    """A named counter allocated under a row lock; used for gap-free document numbers.

    Allocation happens in the caller's transaction (see `core.sequences.next_value`), so a rolled
    back document releases its number and the series stays gap-free.
    """

    name = models.CharField(max_length=60, unique=True)
    next_value = models.BigIntegerField(default=1)

    def __str__(self):
        return f"{self.name} → {self.next_value}"


class AuditEvent(models.Model):
    """Who changed what, when, from where, before and after; staff logins, failed logins and logouts.
    Append-only (database triggers, `ROW_PROTECTIONS` below); kept with the books."""

    class Action(models.TextChoices):
        CREATE = "create", "created"
        UPDATE = "update", "updated"
        DELETE = "delete", "deleted"
        ACTION = "action", "action"

    at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    actor_label = models.CharField(max_length=120, help_text="user name, job name or 'system'")
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=10, choices=Action.choices)
    verb = models.CharField(max_length=60, blank=True, help_text="the business action, e.g. issue_invoice")
    object_type = models.CharField(max_length=60, db_index=True, help_text="app_label.model")
    object_id = models.CharField(max_length=40, db_index=True)
    object_repr = models.CharField(max_length=200)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id", "at"])]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.verb or self.action} {self.object_repr}"


# Database triggers (installed after every migrate, see core/db.py): the audit trail is append-only,
# like the books it explains. Nothing in Wavu updates or deletes an audit event.
_AUDIT_APPEND_ONLY = "immutable: the audit trail is append-only"
ROW_PROTECTIONS = [
    RowProtection("audit_event_no_update", "core_auditevent", "UPDATE", message=_AUDIT_APPEND_ONLY),
    RowProtection("audit_event_no_delete", "core_auditevent", "DELETE", message=_AUDIT_APPEND_ONLY),
]


class ScheduledRun(models.Model):
    """One firing of a periodic job for one slot (`core.scheduler`).

    The unique (name, slot) pair is the scheduler's lease: the row is inserted in the transaction
    that enqueues the job, so however many schedulers tick, and however often, a slot fires once.
    """

    name = models.CharField(max_length=80, help_text="the periodic job's name in wavu/schedule.py")
    slot = models.DateTimeField(help_text="start of the interval this firing covers")
    fired_at = models.DateTimeField()
    task_result_id = models.CharField(max_length=64, blank=True, help_text="the enqueued job record")

    class Meta:
        ordering = ["-slot", "name"]
        constraints = [models.UniqueConstraint(fields=["name", "slot"], name="scheduledrun_once_per_slot")]

    def __str__(self):
        return f"{self.name} @ {self.slot:%Y-%m-%d %H:%M}"


class WorkerHeartbeat(models.Model):
    """A running `wavu worker` process; refreshed every scheduler tick, deleted on a clean stop.

    /healthz reads it ("worker": ok / stale / none), and jobs left RUNNING by a worker whose
    heartbeat went stale are failed and retried (`core.tasks.recover_orphaned_jobs`).
    """

    worker_id = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.CharField(max_length=200)
    runs_scheduler = models.BooleanField(default=True)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self):
        return f"{self.worker_id} on {self.hostname} (pid {self.pid})"
